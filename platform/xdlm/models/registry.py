"""The backbone registry: ``@BACKBONES.register("name")`` next to each backbone class.

A registered entry is a class (or factory) called as ``entry(cfg: ModelConfig, vocab_size: int)``
with a config whose dimensions are already resolved (see ``ModelConfig.resolved``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from xdlm.registry import Registry

if TYPE_CHECKING:
    from xdlm.models.config import ModelConfig

BackboneFactory = Callable[["ModelConfig", int], nn.Module]

BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def ensure_registered() -> None:
    """Import the built-in backbone modules so their ``register`` lines have run."""
    import xdlm.models.causal  # noqa: F401
    import xdlm.models.dit  # noqa: F401
