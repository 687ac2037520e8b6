"""The backbone registry and what each backbone declares about itself.

Each backbone module registers its class next to its definition, with its objective:
``@BACKBONES.register("dit", objective="diffusion")``. This module imports none of them; importing
``xdlm.models`` (which any ``xdlm.models.*`` import does first) imports them all, so the registry is
full before anything can look a name up.

A registered entry is a class (or factory) called as ``entry(cfg: ModelConfig, vocab_size: int)``
with a config whose dimensions are already resolved (see ``ModelConfig.resolved``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from xdlm.registry import Registry

DIFFUSION = "diffusion"
AUTOREGRESSIVE = "autoregressive"
OBJECTIVES = (DIFFUSION, AUTOREGRESSIVE)


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone is trained for, declared at its registration line.

    Attributes:
        objective: ``"diffusion"`` (a denoiser trained on the NELBO) or ``"autoregressive"``
            (next-token prediction).
        trainable: False for a backbone with no trainable parameters (the exact ``oracle``):
            ``xdlm train`` refuses it.
        solves: data sources the backbone is exact for, by name; non-empty means it is built
            from that source's law (``build_model(..., context=DenoisingContext)``) and a job
            pairing it with another source is refused.  Empty: any source.
        fused_head: the diffusion loss runs through ``XDLM.linear_nelbo`` inside the backbone's
            output head (``model(z_t, t, head_loss=fn)`` returns ``fn(hidden, weight, bias)``),
            so the [B, L, V] logits are never held (large vocabularies) and ZeRO-3 gathers the
            head's weight as for any forward.
    """

    objective: str
    trainable: bool = True
    solves: tuple[str, ...] = ()
    fused_head: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective: unknown {self.objective!r}; allowed: {', '.join(OBJECTIVES)}"
            )

    @property
    def needs_context(self) -> bool:
        """True when ``build_model`` needs a ``DenoisingContext`` (the backbone is exact for a
        source, so it must know the source's law and the diffusion process)."""
        return bool(self.solves)

    @property
    def generates(self) -> bool:
        """True when the diffusion sampler can draw samples from this backbone (so generative
        evaluations such as sample perplexity apply)."""
        return self.objective == DIFFUSION


@dataclass(frozen=True)
class DenoisingContext:
    """What an exact denoiser needs beyond its config: the source's law and the process.

    Attributes:
        law: the exact law of the data (e.g. ``xdlm.synthetic.markov.MarkovChain``).
        k: the process's mixing ratio.
        mask_id: the [MASK] id.
        alpha: the schedule, t [B] (float64) -> alpha_t [B].
    """

    law: Any
    k: float
    mask_id: int
    alpha: Callable[[torch.Tensor], torch.Tensor]


# Typed loosely: naming ModelConfig here would make this module import the config, which imports
# this registry to check backbone names.
BackboneFactory = Callable[..., Any]

BACKBONES: Registry[BackboneFactory] = Registry("backbone", info=BackboneInfo)


def backbone_info(name: str) -> BackboneInfo:
    """The declaration of backbone ``name``; ``ValueError`` listing the backbones if unknown."""
    return BACKBONES.info(name)
