"""Typed model configuration: which backbone, how big, and the few knobs it has.

``ModelConfig`` is a plain dataclass so it can serve as an OmegaConf structured config (YAML only
overrides it). The three dimensions (``n_layers``, ``hidden``, ``n_heads``) are given explicitly
only for ``size == "custom"``; a named size fills them from ``SIZES``. ``validate()`` is the one
place that checks values, and every error names the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

from xdlm.models.hf_config import HFConfig
from xdlm.models.registry import BACKBONES, DIFFUSION, backbone_info


class SizeSpec(NamedTuple):
    """Depth, width and head count of one named size."""

    n_layers: int
    hidden: int
    n_heads: int


# The reference setups of the paper's code (the paper is cited in docs/math.md).
SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(n_layers=8, hidden=256, n_heads=8),
    "small": SizeSpec(n_layers=12, hidden=768, n_heads=12),
    "medium": SizeSpec(n_layers=24, hidden=1024, n_heads=16),
}
CUSTOM = "custom"
_DIM_FIELDS = ("n_layers", "hidden", "n_heads")


@dataclass
class ModelConfig:
    """Backbone configuration.

    Attributes:
        backbone: registered backbone name (``"dit"`` bidirectional, ``"causal_dit"`` autoregressive,
            ``"oracle"`` the exact denoiser of ``data.source: markov``: no parameters, not trained;
            the size fields do not apply to it).
        size: ``"tiny"``, ``"small"``, ``"medium"`` or ``"custom"``.
        n_layers, hidden, n_heads: required for ``size == "custom"``; for a named size leave them
            ``None`` (or equal to the table's values).
        dropout: residual-branch dropout probability in ``[0, 1)``.
        time_conditioning: feed the diffusion time ``t`` through the conditioning path; when off
            the conditioning vector is computed from a constant ``t = 0`` (so ``t`` is ignored).
        max_seq_len: longest sequence the rotary table covers; longer inputs raise ``ValueError``.
        cond_dim: width of the conditioning vector that drives the adaLN modulations.
        hf: the Hugging Face model of ``backbone: hf`` (``HFConfig``; ignored by other backbones,
            and the size fields do not apply to it).
    """

    backbone: str = "dit"
    size: str = "tiny"
    n_layers: int | None = None
    hidden: int | None = None
    n_heads: int | None = None
    dropout: float = 0.1
    time_conditioning: bool = False
    max_seq_len: int = 1024
    cond_dim: int = 128
    hf: HFConfig = field(default_factory=HFConfig)

    def validate(self) -> ModelConfig:
        """Check every field; raise ``ValueError`` naming the field and the allowed values.

        Returns ``self`` so it chains (``cfg.validate().resolved()``).
        """
        # The backbone modules fill BACKBONES when ``xdlm.models`` is imported, which Python does
        # before running this module, so every registered name is known here.
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone: unknown {self.backbone!r}; allowed: {', '.join(BACKBONES.available())}"
            )
        allowed_sizes = [*SIZES, CUSTOM]
        if self.size not in allowed_sizes:
            raise ValueError(f"size: unknown {self.size!r}; allowed: {', '.join(allowed_sizes)}")

        for name in _DIM_FIELDS:
            value = getattr(self, name)
            if self.size == CUSTOM:
                if value is None:
                    raise ValueError(f"{name}: required when size is 'custom' (a positive int)")
            elif value is not None and value != getattr(SIZES[self.size], name):
                expected = getattr(SIZES[self.size], name)
                raise ValueError(
                    f"{name}: size {self.size!r} fixes it to {expected} (got {value}); "
                    f"leave it unset or use size='custom'"
                )
            if value is not None and (not _is_int(value) or value <= 0):
                raise ValueError(f"{name}: must be a positive int, got {value!r}")

        dims = self.dims()
        if dims.hidden % dims.n_heads != 0:
            raise ValueError(
                f"hidden: must be divisible by n_heads ({dims.hidden} % {dims.n_heads} != 0)"
            )
        if (dims.hidden // dims.n_heads) % 2 != 0:
            # Rotary embeddings rotate pairs of channels, so each head needs an even width.
            raise ValueError(
                f"hidden: hidden / n_heads must be even for rotary embeddings "
                f"(got head width {dims.hidden // dims.n_heads})"
            )
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not (0.0 <= self.dropout < 1.0)
        ):
            raise ValueError(f"dropout: must be a float in [0, 1), got {self.dropout!r}")
        if not isinstance(self.time_conditioning, bool):
            raise ValueError(
                f"time_conditioning: must be True or False, got {self.time_conditioning!r}"
            )
        objective = backbone_info(self.backbone).objective
        if self.time_conditioning and objective != DIFFUSION:
            raise ValueError(
                f"time_conditioning: must be False for backbone {self.backbone!r} "
                f"(its objective, {objective}, has no diffusion time)"
            )
        if not _is_int(self.max_seq_len) or self.max_seq_len <= 0:
            raise ValueError(f"max_seq_len: must be a positive int, got {self.max_seq_len!r}")
        if not _is_int(self.cond_dim) or self.cond_dim <= 0:
            raise ValueError(f"cond_dim: must be a positive int, got {self.cond_dim!r}")
        if self.backbone == "hf":
            if self.time_conditioning:
                raise ValueError("time_conditioning: must be False for backbone 'hf' (a Hugging Face "
                                 "model takes no diffusion time; LLaDA is time-free)")
            self.hf.validate()
        return self

    def dims(self) -> SizeSpec:
        """The effective ``(n_layers, hidden, n_heads)``: the size table's, or the custom fields."""
        if self.size in SIZES:
            return SIZES[self.size]
        if self.size == CUSTOM and all(getattr(self, f) is not None for f in _DIM_FIELDS):
            return SizeSpec(self.n_layers, self.hidden, self.n_heads)  # type: ignore[arg-type]
        raise ValueError(
            f"size: cannot resolve dimensions for size {self.size!r} "
            f"(allowed: {', '.join([*SIZES, CUSTOM])}; 'custom' needs n_layers, hidden, n_heads)"
        )

    def resolved(self) -> ModelConfig:
        """A validated copy with ``n_layers``/``hidden``/``n_heads`` filled in."""
        self.validate()
        return dataclasses.replace(self, **self.dims()._asdict())

    @property
    def head_dim(self) -> int:
        dims = self.dims()
        return dims.hidden // dims.n_heads


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
