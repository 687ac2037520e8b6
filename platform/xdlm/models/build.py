"""``build_model``: a validated ``ModelConfig`` plus a vocabulary size -> a backbone module."""

from __future__ import annotations

from torch import nn

from xdlm.models.config import ModelConfig
from xdlm.models.registry import BACKBONES, DenoisingContext, backbone_info


def build_model(cfg: ModelConfig, vocab_size: int, context: DenoisingContext | None = None) -> nn.Module:
    """Validate ``cfg``, look its backbone up in ``BACKBONES`` and build it for ``vocab_size``.

    ``context``: the source's law and the process, for a backbone that is exact for a source
    (``BackboneInfo.solves``, the ``oracle``); ``xdlm.objective.build_denoiser`` fills it from a
    job.  Other backbones take no context.

    Raises ``ValueError`` for a bad config field (naming it), an unknown backbone (listing the
    registered ones) or a missing / unexpected context.
    """
    resolved = cfg.resolved()
    factory = BACKBONES.get(resolved.backbone)
    if not backbone_info(resolved.backbone).needs_context:
        if context is not None:
            raise ValueError(f"backbone: {resolved.backbone!r} is learned; it takes no DenoisingContext")
        return factory(resolved, vocab_size)
    if context is None:
        raise ValueError(f"backbone: {resolved.backbone!r} is computed from the source's law; build it "
                         "with xdlm.objective.build_denoiser(job, data, process)")
    return factory(resolved, vocab_size, context)
