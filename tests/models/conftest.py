"""Shared fixtures for the backbone tests: small custom sizes so the whole directory stays fast."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import nn

from xdlm.models import ModelConfig, build_model

VOCAB = 37


@pytest.fixture
def small_cfg() -> Callable[..., ModelConfig]:
    """Factory for a 2-layer, 32-wide, 4-head config; keyword arguments override fields."""

    def make(**overrides: object) -> ModelConfig:
        base = ModelConfig(
            backbone="dit",
            size="custom",
            n_layers=2,
            hidden=32,
            n_heads=4,
            cond_dim=16,
            dropout=0.0,
            max_seq_len=64,
        )
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture
def make_model(small_cfg: Callable[..., ModelConfig]) -> Callable[..., nn.Module]:
    """Build a small model (eval mode, seeded) with its zero-initialised layers perturbed.

    DiT's adaLN-Zero init makes every block the identity and the logits exactly 0, which would
    hide every property the tests check; a seeded perturbation gives a generic network.
    """

    def make(perturb: bool = True, vocab_size: int = VOCAB, **overrides: object) -> nn.Module:
        torch.manual_seed(0)
        model = build_model(small_cfg(**overrides), vocab_size).eval()
        if perturb:
            perturb_(model)
        return model

    return make


@torch.no_grad()
def perturb_(model: nn.Module, std: float = 0.1) -> None:
    for p in model.parameters():
        p.add_(std * torch.randn_like(p))


@pytest.fixture
def vocab() -> int:
    """The vocabulary size of ``make_model`` models and ``tokens``."""
    return VOCAB


@pytest.fixture
def tokens() -> torch.Tensor:
    """A ``[3, 12]`` batch of token ids below ``VOCAB``."""
    return torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def perturb() -> Callable[..., None]:
    """The in-place perturbation ``perturb_(model, std=0.1)`` used by ``make_model``."""
    return perturb_
