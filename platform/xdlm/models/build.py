"""``build_model``: a validated ``ModelConfig`` plus a vocabulary size -> a backbone module."""

from __future__ import annotations

from torch import nn

from xdlm.models.config import ModelConfig
from xdlm.models.registry import BACKBONES


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    """Validate ``cfg``, look its backbone up in ``BACKBONES`` and build it for ``vocab_size``.

    Raises ``ValueError`` for a bad config field (naming it) or an unknown backbone (listing the
    registered ones).
    """
    resolved = cfg.resolved()
    return BACKBONES.get(resolved.backbone)(resolved, vocab_size)
