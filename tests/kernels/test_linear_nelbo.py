"""``linear_nelbo`` (LM head + loss fused over token chunks) against the materialised reference:
values and gradients for hidden, weight and bias."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.conftest import assert_close_scaled, make_problem


def head(N, D, dtype, seed, bias=True):
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(N, D, generator=gen) / D**0.5).to(dtype)
    b = torch.randn(N, generator=gen).to(dtype) if bias else None
    return weight, b


def run(proc, hidden, weight, bias, x0, z, alpha, dalpha, backend, **kw):
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (hidden, weight, bias)]
    loss = proc.linear_nelbo(leaves[0], leaves[1], x0, z, alpha, dalpha, bias=leaves[2], backend=backend, **kw)
    weights = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype).view(loss.shape)
    (loss * weights).sum().backward()
    return [loss.detach()] + [t.grad if t is not None else None for t in leaves]


def compare(got, ref, rtol_value, rtol_grad):
    names = ["loss", "d hidden", "d weight", "d bias"]
    for name, a, b in zip(names, got, ref, strict=True):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype, name
        assert_close_scaled(a, b, rtol_value if name == "loss" else rtol_grad, name)


@pytest.mark.parametrize("k", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_matches_materialised_logits(k, bias):
    """T = 27 <= V = 97: the backward walks vocabulary blocks (10 ids: a ragged last block, the
    mask id inside one of them)."""
    N, m, D = 97, 31, 24
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, k, shape=(3, 9), seed=int(10 * k))
    hidden = torch.randn(3, 9, D, generator=torch.Generator().manual_seed(1))
    weight, b = head(N, D, torch.float32, 2, bias)
    ref = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "torch")
    got = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "chunked", chunk_tokens=5, chunk_vocab=10)
    compare(got, ref, 1e-5, 1e-5)


@pytest.mark.parametrize("k", [0.0, 0.5])
def test_token_chunk_schedule_when_tokens_outnumber_the_vocabulary(k):
    N, m, D = 19, 7, 12
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, k, shape=(4, 11), seed=21)
    hidden = torch.randn(4, 11, D, generator=torch.Generator().manual_seed(22))
    weight, b = head(N, D, torch.float32, 23)
    ref = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "torch")
    got = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "chunked", chunk_tokens=6)
    compare(got, ref, 1e-5, 1e-5)


def test_chunked_bfloat16_head():
    N, m, D = 130, 0, 32
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, 0.1, shape=(2, 10), seed=3)
    hidden = torch.randn(2, 10, D, generator=torch.Generator().manual_seed(4)).bfloat16()
    weight, b = head(N, D, torch.bfloat16, 5)
    ref = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "torch")
    got = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "auto", chunk_tokens=6, chunk_vocab=32)
    # same bf16 logits (same matmul per row); the weight/bias sums over chunks are taken in
    # float32 and rounded once, the reference rounds one bf16 matmul: 1-2 bf16 ulps apart
    compare(got, ref, 1e-5, 2e-2)


@pytest.mark.parametrize("T", [8, 300])
def test_float64_gradients_stay_float64(T):
    """A float64 head gets float64-accurate gradients on both backward schedules: T = 8 < V = 257
    walks vocabulary blocks, T = 300 > V token chunks.  Reference: ``nelbo`` on the
    ``F.linear(h, W, b)`` logits (the torch path).

    Fails on the old code: the vocabulary-block path summed each block's bias gradient
    db_j = sum_rows G_j in float32, a relative error ~1e-7 where float64 gives ~1e-16."""
    N, m, D, k = 257, 256, 16, 0.5
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, k, shape=(T,), seed=31)
    gen = torch.Generator().manual_seed(32)
    hidden = torch.randn(T, D, generator=gen, dtype=torch.float64)
    weight, b = head(N, D, torch.float64, 33)

    def grads(loss_of):
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, b)]
        loss_of(*leaves).sum().backward()
        return [t.grad for t in leaves]

    want = grads(lambda h, w, bias: proc.nelbo(F.linear(h, w, bias), x0, z, alpha, dalpha))
    got = grads(lambda h, w, bias: proc.linear_nelbo(
        h, w, x0, z, alpha, dalpha, bias=bias, backend="chunked", chunk_tokens=64, chunk_vocab=64))
    for name, a, r in zip(("d hidden", "d weight", "d bias"), got, want, strict=True):
        assert a.dtype == torch.float64, name
        assert_close_scaled(a, r, 1e-12, name)


def test_matches_nelbo_on_the_materialised_logits_and_an_nn_linear():
    N, m, D = 50, 49, 16
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, 0.5, shape=(4, 5), seed=6)
    lin = torch.nn.Linear(D, N, bias=True)
    hidden = torch.randn(4, 5, D)
    fused = proc.linear_nelbo(hidden, lin.weight, x0, z, alpha, dalpha, bias=lin.bias, backend="chunked")
    plain = proc.nelbo(lin(hidden), x0, z, alpha, dalpha)
    assert_close_scaled(fused.detach(), plain.detach(), 1e-5)


def test_only_some_inputs_need_gradients():
    N, m, D = 33, 3, 8
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, 0.1, shape=(2, 4), seed=8)
    hidden = torch.randn(2, 4, D, requires_grad=True)
    weight, b = head(N, D, torch.float32, 9)  # frozen head
    proc.linear_nelbo(hidden, weight, x0, z, alpha, dalpha, bias=b, backend="chunked").sum().backward()
    ref_h = hidden.detach().clone().requires_grad_(True)
    proc.linear_nelbo(ref_h, weight, x0, z, alpha, dalpha, bias=b, backend="torch").sum().backward()
    assert_close_scaled(hidden.grad, ref_h.grad, 1e-5)


def test_bad_head_shapes_and_dtypes_are_rejected():
    N, m, D = 20, 0, 8
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, 0.1, shape=(2, 3), seed=1)
    hidden = torch.randn(2, 3, D)
    with pytest.raises(ValueError, match=r"weight must be \[V, D\] = \[20, 8\]"):
        proc.linear_nelbo(hidden, torch.randn(D, N), x0, z, alpha, dalpha)
    with pytest.raises(ValueError, match=r"bias must be \[V\] = \[20\]"):
        proc.linear_nelbo(hidden, torch.randn(N, D), x0, z, alpha, dalpha, bias=torch.randn(N + 1))
    with pytest.raises(ValueError, match="must share a dtype"):
        proc.linear_nelbo(hidden, torch.randn(N, D).double(), x0, z, alpha, dalpha)
    with pytest.raises(ValueError, match="hidden has shape"):
        proc.linear_nelbo(torch.randn(3, 2, D), torch.randn(N, D), x0, z, alpha, dalpha)


@pytest.mark.triton
@pytest.mark.parametrize("k", [0.0, 0.5])
def test_triton_matches_materialised_logits(k, triton_cpu):
    N, m, D = 67, 66, 16
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, k, shape=(2, 7), seed=12)
    hidden = torch.randn(2, 7, D, generator=torch.Generator().manual_seed(13))
    weight, b = head(N, D, torch.float32, 14)
    ref = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "torch")
    got = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "triton", chunk_tokens=4, chunk_vocab=20)
    compare(got, ref, 1e-5, 1e-5)


@pytest.mark.triton
def test_triton_token_chunk_schedule(triton_cpu):
    N, m, D = 17, 0, 8
    proc, _, x0, z, alpha, dalpha = make_problem(N, m, 0.1, shape=(3, 8), seed=15)
    hidden = torch.randn(3, 8, D, generator=torch.Generator().manual_seed(16))
    weight, b = head(N, D, torch.float32, 17)
    ref = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "torch")
    got = run(proc, hidden, weight, b, x0, z, alpha, dalpha, "triton", chunk_tokens=5)
    compare(got, ref, 1e-5, 1e-5)
