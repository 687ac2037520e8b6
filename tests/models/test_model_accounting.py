"""Parameter counts (against a hand-derived formula) and the FLOPs-per-token estimate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xdlm.models import (
    ModelConfig,
    build_model,
    count_parameters,
    estimate_parameters,
    flops_per_token,
)


def hand_count_tiny(vocab: int) -> tuple[int, int]:
    """Tiny: 8 layers, D = 256, cond_dim C = 128, 256 sinusoidal time features."""
    d, c, n_layers = 256, 128, 8
    time_mlp = (256 * c + c) + (c * c + c)  # Linear(256, C) + Linear(C, C)
    attention = d * 3 * d + d * d  # qkv + out, no biases
    mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)  # fc_in + fc_out with biases
    adaln = c * 6 * d + 6 * d  # Linear(C, 6D)
    norms = 2 * d  # two weight-only layer norms
    final = d + (c * 2 * d + 2 * d)  # norm + Linear(C, 2D)
    non_embedding = time_mlp + n_layers * (attention + mlp + adaln + norms) + final
    embedding = vocab * d
    head = d * vocab + vocab
    return non_embedding + embedding + head, non_embedding


@pytest.mark.parametrize("vocab", [4096, 50257])
def test_tiny_matches_hand_formula(vocab):
    total, non_embedding = hand_count_tiny(vocab)
    counts = count_parameters(build_model(ModelConfig(size="tiny"), vocab))
    assert counts == {"total": total, "non_embedding": non_embedding}
    assert estimate_parameters(ModelConfig(size="tiny"), vocab) == counts


def test_tiny_numbers():
    # Spelled out, so a change in the architecture shows up as a diff here.
    assert hand_count_tiny(4096) == (10_107_904, 8_006_656)
    assert hand_count_tiny(50257) == (33_788_497, 8_006_656)


@pytest.mark.parametrize("size", ["small", "medium"])
@pytest.mark.parametrize("backbone", ["dit", "causal_dit"])
def test_estimate_matches_built_model_on_meta(size, backbone):
    cfg = ModelConfig(backbone=backbone, size=size)
    with torch.device("meta"):  # no memory, no init cost
        model = build_model(cfg, 50257)
    assert count_parameters(model) == estimate_parameters(cfg, 50257)


def test_estimate_matches_custom_with_time_conditioning():
    cfg = ModelConfig(
        size="custom", n_layers=3, hidden=24, n_heads=3, cond_dim=8, time_conditioning=True
    )
    assert count_parameters(build_model(cfg, 19)) == estimate_parameters(cfg, 19)


def test_count_parameters_unwraps_and_dedups():
    cfg = ModelConfig(size="custom", n_layers=1, hidden=16, n_heads=2)
    model = build_model(cfg, 23)
    expected = count_parameters(model)

    class Wrapper(nn.Module):  # the shape of DDP: the model under ``.module``
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    assert count_parameters(Wrapper(model)) == expected
    # Tying the head to the embedding would count the shared matrix once.
    model.output_head.weight = model.embedding.weight
    tied = count_parameters(model)
    assert tied["total"] == expected["total"] - 23 * 16
    assert tied["non_embedding"] == expected["non_embedding"]


def test_flops_per_token_formula():
    cfg = ModelConfig(size="tiny")
    n = estimate_parameters(cfg, 1)["non_embedding"]
    assert flops_per_token(cfg, 1024) == 6 * n + 12 * 8 * 256 * 1024
    custom = ModelConfig(size="custom", n_layers=2, hidden=32, n_heads=4, cond_dim=16)
    n = count_parameters(build_model(custom, 7))["non_embedding"]
    assert flops_per_token(custom, 64) == 6 * n + 12 * 2 * 32 * 64
    # Longer sequences cost more per token (attention), vocabulary does not enter.
    assert flops_per_token(cfg, 2048) > flops_per_token(cfg, 1024)
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(cfg, 0)
