"""Rotary embeddings: norm-preserving, relative, and a no-op at position 0."""

from __future__ import annotations

import pytest
import torch

from xdlm.models.rotary import RotaryEmbedding


def test_preserves_norm_and_position_zero():
    rot = RotaryEmbedding(head_dim=8, max_seq_len=32)
    x = torch.randn(2, 32, 3, 8)
    y = rot(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, 0], x[:, 0])


def test_scores_depend_only_on_relative_position():
    rot = RotaryEmbedding(head_dim=16, max_seq_len=64)
    q, k = torch.randn(16), torch.randn(16)

    def score(pq: int, pk: int) -> torch.Tensor:
        qs = torch.zeros(1, 64, 1, 16)
        ks = torch.zeros(1, 64, 1, 16)
        qs[0, pq, 0], ks[0, pk, 0] = q, k
        return (rot(qs)[0, pq, 0] * rot(ks)[0, pk, 0]).sum()

    torch.testing.assert_close(score(10, 3), score(40, 33), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(10, 3), score(10, 4))


def test_odd_head_dim_rejected():
    with pytest.raises(ValueError, match="head_dim"):
        RotaryEmbedding(head_dim=7, max_seq_len=8)


def test_keeps_input_dtype():
    rot = RotaryEmbedding(head_dim=8, max_seq_len=4)
    assert rot(torch.randn(1, 4, 2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
