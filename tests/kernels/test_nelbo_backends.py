"""Every NELBO backend against the eager ``torch`` reference: values and gradients (logits and
alpha), k in {0, 0.1, 0.5, 1}, vocabularies that are not powers of two, the mask id anywhere."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.conftest import assert_close_scaled, make_problem
from xdlm.diffusion.kernels import chunked
from xdlm.diffusion.kernels.autograd import backend_module
from xdlm.diffusion.nelbo import log_ratio

KS = [0.0, 0.1, 0.5, 1.0]
VOCABS = [(37, 0), (37, 17), (300, 299), (1000, 613)]


def run(proc, logits, x0, z, alpha, dalpha, backend, *, alpha_grad=False, **kw):
    """Loss, d(weighted loss)/d logits and (optionally) d/d alpha for one backend."""
    lg = logits.clone().requires_grad_(True)
    a = alpha.clone().requires_grad_(alpha_grad)
    loss = proc.nelbo(lg, x0, z, a, dalpha, backend=backend, **kw)
    weights = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype).view(loss.shape)
    (loss * weights).sum().backward()
    return loss.detach(), lg.grad, a.grad


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("N,mask_id", VOCABS)
def test_chunked_matches_torch_float32(k, N, mask_id):
    problem = make_problem(N, mask_id, k, shape=(3, 11), seed=N + int(10 * k))
    ref = run(*problem, "torch", alpha_grad=True)
    got = run(*problem, "chunked", alpha_grad=True, chunk_tokens=4)  # 33 rows: a ragged last chunk
    assert_close_scaled(got[0], ref[0], 1e-5, "loss")
    assert_close_scaled(got[1], ref[1], 1e-5, "d logits")
    assert_close_scaled(got[2], ref[2], 1e-5, "d alpha")
    assert torch.equal(got[1][..., mask_id], torch.zeros_like(got[1][..., mask_id]))


@pytest.mark.parametrize("k", KS)
def test_chunked_matches_torch_float64(k):
    proc, logits, x0, z, alpha, dalpha = make_problem(53, 20, k, seed=3)
    logits = logits.double()
    ref = run(proc, logits, x0, z, alpha, dalpha, "torch")
    got = run(proc, logits, x0, z, alpha, dalpha, "chunked", chunk_tokens=5)
    assert got[0].dtype == torch.float64
    assert_close_scaled(got[0], ref[0], 1e-12, "loss")
    assert_close_scaled(got[1], ref[1], 1e-12, "d logits")


@pytest.mark.parametrize("k", [0.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_matches_torch_16bit(k, dtype):
    problem = make_problem(301, 7, k, seed=5, dtype=dtype)
    ref = run(*problem, "torch")
    got = run(*problem, "chunked", chunk_tokens=8)
    assert got[0].dtype == torch.float32 and got[1].dtype == dtype
    assert_close_scaled(got[0], ref[0], 1e-5, "loss")  # read exactly, computed in float32
    assert_close_scaled(got[1], ref[1], 1e-2, "d logits")  # one 16-bit rounding apart


def test_auto_is_chunked_on_cpu_and_per_token_alphas_work():
    problem = make_problem(64, 63, 0.1, shape=(2, 9), seed=1, per_token=True)
    ref = run(*problem, "torch")
    got = run(*problem, "auto")
    assert_close_scaled(got[0], ref[0], 1e-5, "loss")
    assert_close_scaled(got[1], ref[1], 1e-5, "d logits")


def test_scalar_alpha_and_one_dimensional_tokens():
    proc, logits, x0, z, _, _ = make_problem(40, 3, 0.5, shape=(12,), seed=2)
    want = proc.nelbo(logits, x0, z, 0.4, -1.0)
    got = proc.nelbo(logits, x0, z, 0.4, -1.0, backend="chunked")
    assert_close_scaled(got, want, 1e-5)


def test_non_contiguous_logits_are_handled():
    proc, logits, x0, z, alpha, dalpha = make_problem(45, 9, 0.1, shape=(4, 6), seed=4)
    wide = torch.randn(45, 4, 6).permute(1, 2, 0)  # [4, 6, 45] with stride 1 along batch
    wide.copy_(logits)
    assert not wide.is_contiguous()
    ref = run(proc, logits, x0, z, alpha, dalpha, "torch")
    got = run(proc, wide, x0, z, alpha, dalpha, "chunked")
    assert_close_scaled(got[0], ref[0], 1e-5)
    assert_close_scaled(got[1], ref[1], 1e-5)
    sliced = torch.randn(4, 6, 60)[..., :45]  # rows with a stride larger than V: a view works
    sliced.copy_(logits)
    got = run(proc, sliced, x0, z, alpha, dalpha, "chunked", inplace_backward=False)
    assert_close_scaled(got[1], ref[1], 1e-5)


def test_inplace_backward_writes_the_gradient_into_the_logits():
    proc, logits, x0, z, alpha, dalpha = make_problem(77, 40, 0.5, seed=6)
    ref = run(proc, logits, x0, z, alpha, dalpha, "torch")
    base = logits.clone().requires_grad_(True)
    buffer = base * 1.0  # a non-leaf: the "logits" of a head nothing else reads
    loss = proc.nelbo(buffer, x0, z, alpha, dalpha, backend="chunked", inplace_backward=True)
    weights = torch.linspace(0.5, 2.0, loss.numel()).view(loss.shape)
    (loss * weights).sum().backward()
    assert_close_scaled(base.grad, ref[1], 1e-5)
    assert_close_scaled(buffer.detach(), ref[1], 1e-5)  # the logits' storage now holds d loss/d logits


def test_inplace_backward_misuse_is_caught_not_silent():
    """Logits that another node saved for its backward: autograd's version counter refuses."""
    proc, logits, x0, z, alpha, dalpha = make_problem(20, 2, 0.3, seed=7)
    lg = logits.clone().requires_grad_(True)
    hidden = lg * 2.0
    other = (hidden**2).sum()  # pow saves ``hidden``; created first, so its backward runs last
    loss = proc.nelbo(hidden, x0, z, alpha, dalpha, backend="chunked", inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss.sum() + other).backward()


# -- Triton under TRITON_INTERPRET=1 ------------------------------------------------------------


@pytest.mark.triton
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("N,mask_id", [(37, 0), (300, 123)])
def test_triton_matches_torch_float32(k, N, mask_id, triton_cpu):
    problem = make_problem(N, mask_id, k, shape=(3, 5), seed=N + int(10 * k))
    ref = run(*problem, "torch", alpha_grad=True)
    got = run(*problem, "triton", alpha_grad=True)
    assert_close_scaled(got[0], ref[0], 1e-5, "loss")
    assert_close_scaled(got[1], ref[1], 1e-5, "d logits")
    assert_close_scaled(got[2], ref[2], 1e-5, "d alpha")


@pytest.mark.triton
@pytest.mark.parametrize("k", [0.0, 0.1])
def test_triton_matches_torch_bfloat16_inplace(k, triton_cpu):
    proc, logits, x0, z, alpha, dalpha = make_problem(129, 64, k, shape=(2, 6), seed=9, dtype=torch.bfloat16)
    ref = run(proc, logits, x0, z, alpha, dalpha, "torch")
    base = logits.clone().requires_grad_(True)
    buffer = base * 1
    loss = proc.nelbo(buffer, x0, z, alpha, dalpha, backend="triton", inplace_backward=True)
    (loss * torch.linspace(0.5, 2.0, loss.numel()).view(loss.shape)).sum().backward()
    assert_close_scaled(loss.detach(), ref[0], 1e-5, "loss")
    # the interpreter truncates float32 -> bfloat16 (a GPU rounds): up to 2 bf16 ulps apart
    assert_close_scaled(base.grad, ref[1], 2e-2, "d logits")


@pytest.mark.triton
@pytest.mark.parametrize("block_v", [16, 64, 512])  # many tiles, a ragged last tile, one tile
@pytest.mark.parametrize("k", [0.0, 0.5])
def test_triton_kernels_match_their_pytorch_twin(block_v, k, triton_cpu):
    """The raw row statistics and the gradient, kernel against ``chunked``, tile sizes forced."""
    from xdlm.diffusion.kernels import triton_nelbo  # imports triton: only in triton tests

    N, m, T = 300, 150, 24
    proc, logits, x0, z, alpha, _ = make_problem(N, m, k, shape=(T,), seed=11)
    x, z = x0.long(), z.long()
    shift = log_ratio(alpha.expand(T).float(), N, k)
    twin = chunked.forward(logits, x, z, shift, m, torch.float32, 7)
    got = triton_nelbo.forward(logits, x, z, shift, m, block_t=8, block_v=block_v)
    for name, a, b in zip(twin._fields, got, twin, strict=True):
        if b is None:
            assert a is None, name
        else:
            assert_close_scaled(a, b, 2e-6, name)
    g = [torch.randn(T, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    g_s = g[2] if k > 0 else None
    want = chunked.backward(logits, x, z, shift, twin, g[0], g[1], g_s, m, torch.float32, torch.empty_like(logits), 7)
    out = triton_nelbo.backward(logits, x, z, shift, got, g[0], g[1], g_s, m, torch.float32,
                                torch.empty_like(logits), block_t=8, block_v=block_v)
    assert_close_scaled(out, want, 1e-5, "gradient")


@pytest.mark.parametrize("backend", ["chunked", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("v0,width", [(0, 64), (100, 64), (250, 50), (140, 37)])  # the mask id 150 inside or not
def test_gradient_of_a_column_block_is_the_slice_of_the_full_gradient(backend, v0, width, request):
    """What the fused LM head's vocabulary-block backward relies on."""
    if backend == "triton":
        request.getfixturevalue("triton_cpu")
    impl = backend_module(backend)
    N, m, T = 300, 150, 12
    proc, logits, x0, z, alpha, _ = make_problem(N, m, 0.5, shape=(T,), seed=13)
    x0[:4] = torch.arange(v0, v0 + 4)  # some targets inside the block
    z[4:6] = v0 + 1
    shift = log_ratio(alpha.expand(T).float(), N, 0.5)
    stats = chunked.forward(logits, x0, z, shift, m, torch.float32, T)
    g = [torch.randn(T, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    full = chunked.backward(logits, x0, z, shift, stats, *g, m, torch.float32, torch.empty_like(logits), 5)
    block = logits[:, v0 : v0 + width].contiguous()
    got = impl.backward(block, x0, z, shift, stats, *g, m, torch.float32, block, T, v0)
    assert_close_scaled(got, full[:, v0 : v0 + width], 1e-6, "block gradient")
