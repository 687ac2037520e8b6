"""``sample_step``: the streaming backends draw from the exact posterior (chi-square against the
dense float64 law), reproduce the dense greedy argmax and nucleus exactly, and the ``torch``
backend is bit-for-bit the dense computation the sampler always did."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as sps

from xdlm.diffusion import XDLM, sampling, schedules
from xdlm.diffusion.categorical import gumbel_max, top_p_filter
from xdlm.diffusion.kernels import chunked_sample
from xdlm.diffusion.posterior import posterior


def dense_clean_probs(logits, mask_id, top_p=None):
    x = logits.double().clone()
    x[..., mask_id] = -math.inf
    p = torch.softmax(x, -1)
    return top_p_filter(p, top_p) if top_p is not None else p


def exact_law(proc, logits_row, z, alpha_s, alpha_t, top_p):
    """q(z_s | z_t = z, x = p~) in float64: [N]."""
    p = dense_clean_probs(logits_row, proc.mask_id, top_p)
    a_s, a_t = torch.tensor(alpha_s, dtype=torch.float64), torch.tensor(alpha_t, dtype=torch.float64)
    return posterior(p, torch.tensor(z), a_s, a_t, proc.vocab_size, proc.mask_id, proc.k)


def assert_follows(draws, law, what):
    """Chi-square goodness of fit (bins with expected count < 5 merged); impossible ids never drawn."""
    n = draws.numel()
    counts = torch.bincount(draws, minlength=law.numel()).double()
    assert counts[law == 0].sum() == 0, f"{what}: drew an impossible id"
    expected = law * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    if exp[-1] < 5:  # fold a tiny remainder into the largest bin
        i = int(exp[:-1].argmax())
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    if obs.numel() < 2:
        assert counts.argmax() == law.argmax(), what
        return
    result = sps.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item())
    assert result.pvalue > 1e-4, f"{what}: chi-square p = {result.pvalue:.2e}\n{obs}\n{exp}"


def posterior_case(k, n_per_group, seed=0):
    """Rows sharing one logits vector, in three groups: z = [MASK], z = the likeliest id,
    z = an unlikely id.  Returns proc, logits [3 n, N], z [3 n], (z values)."""
    N, m = 13, 4
    proc = XDLM(N, m, k)
    gen = torch.Generator().manual_seed(seed)
    row = 2.0 * torch.randn(N, generator=gen)
    row[m] = 30.0  # ignored
    order = torch.argsort(torch.where(torch.arange(N) == m, -math.inf, row), descending=True)
    z_values = [m, int(order[0]), int(order[-2])]
    z = torch.tensor(z_values).repeat_interleave(n_per_group)
    return proc, row.expand(z.numel(), N).contiguous(), z, z_values


def check_law(backend, k, top_p, n, alpha_s=0.6, alpha_t=0.3):
    proc, logits, z, z_values = posterior_case(k, n, seed=int(100 * k))
    out = proc.sample_step(logits, z, alpha_s, alpha_t, top_p=top_p,
                           generator=torch.Generator().manual_seed(7), backend=backend)
    assert out.tokens.shape == z.shape and out.tokens.dtype == torch.int64
    for i, zv in enumerate(z_values):
        law = exact_law(proc, logits[0], zv, alpha_s, alpha_t, top_p)
        assert_follows(out.tokens[i * n : (i + 1) * n], law, f"{backend} k={k} top_p={top_p} z={zv}")
    # prob = the model's (nucleus) probability of the returned token
    p = dense_clean_probs(logits[0], proc.mask_id, top_p).float()
    torch.testing.assert_close(out.prob, p[out.tokens], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("top_p", [None, 0.8])
def test_chunked_draws_follow_the_posterior(k, top_p):
    check_law("chunked", k, top_p, n=3000)


@pytest.mark.triton
@pytest.mark.parametrize("k,top_p", [(0.0, None), (0.1, 0.8), (1.0, None)])
def test_triton_draws_follow_the_posterior(k, top_p, triton_cpu):
    check_law("triton", k, top_p, n=1500)


def random_rows(T, N, m, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = 2.5 * torch.randn(T, N, generator=gen)
    logits[:, m] = 40.0
    proc_z = torch.randint(0, N, (T,), generator=gen)
    return logits, proc_z


@pytest.mark.parametrize("backend", ["chunked", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("k", [0.0, 0.5])
@pytest.mark.parametrize("alpha_s", [1.0, 0.7])
@pytest.mark.parametrize("top_p", [None, 0.9])
def test_greedy_is_the_dense_argmax(backend, k, alpha_s, top_p, request):
    if backend == "triton":
        request.getfixturevalue("triton_cpu")
    N, m, T = 300, 77, 48
    proc = XDLM(N, m, k)
    logits, z = random_rows(T, N, m, seed=int(10 * k) + int(10 * alpha_s))
    z[:16] = m
    want = proc.sample_step(logits, z, alpha_s, 0.2, top_p=top_p, backend="torch", greedy=True)
    got = proc.sample_step(logits, z, alpha_s, 0.2, top_p=top_p, backend=backend, greedy=True)
    assert torch.equal(got.tokens, want.tokens)
    torch.testing.assert_close(got.prob, want.prob, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_chunked_nucleus_is_top_p_filter_support(top_p):
    N, m, T = 257, 256, 40
    logits, _ = random_rows(T, N, m, seed=3)
    rd = chunked_sample.row_draw(logits, m, top_p, greedy=True, generator=None, chunk=16)
    kept = chunked_sample.float_key(logits) >= rd.threshold[:, None]
    kept[:, m] = False
    support = dense_clean_probs(logits, m, top_p) > 0
    assert torch.equal(kept, support)
    torch.testing.assert_close(rd.lse, torch.logsumexp(logits.masked_fill(~kept, -math.inf), -1))


@pytest.mark.triton
def test_triton_row_pass_matches_its_twin(triton_cpu):
    from xdlm.diffusion.kernels import triton_sample  # imports triton: only in triton tests

    N, m, T = 300, 5, 40
    logits, _ = random_rows(T, N, m, seed=4)
    logits[0] = 0.0  # a row of ties: the first id wins, in both
    logits[1, 100:] = -math.inf  # -inf logits are simply impossible
    for top_p in (None, 0.3, 0.9):
        twin = chunked_sample.row_draw(logits, m, top_p, True, None, 16)
        for block_v in (64, 512):
            got = triton_sample.row_draw(logits, m, top_p, True, None, block_t=16, block_v=block_v)
            assert torch.equal(got.threshold, twin.threshold), (top_p, block_v)
            assert torch.equal(got.draw, twin.draw), (top_p, block_v)
            torch.testing.assert_close(got.lse, twin.lse, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["chunked", pytest.param("triton", marks=pytest.mark.triton)])
def test_seeded_generator_reproduces_and_noise_differs_per_seed(backend, request):
    if backend == "triton":
        request.getfixturevalue("triton_cpu")
    proc = XDLM(50, 0, 0.3)
    logits, z = random_rows(64, 50, 0, seed=5)
    draw = lambda seed: proc.sample_step(  # noqa: E731
        logits, z, 0.9, 0.5, generator=torch.Generator().manual_seed(seed), backend=backend
    ).tokens
    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_torch_backend_is_the_dense_reference_bit_for_bit():
    N, m = 40, 39
    proc = XDLM(N, m, 0.2)
    logits, z = random_rows(30, N, m, seed=6)
    out = proc.sample_step(logits, z, 0.8, 0.4, top_p=0.7, generator=torch.Generator().manual_seed(3), backend="torch")
    p = proc.clean_probs(logits)
    p = top_p_filter(p, 0.7)
    alphas = [torch.tensor(a, dtype=torch.float64).to(p.dtype).expand(z.shape) for a in (0.8, 0.4)]
    q = posterior(p, z, *alphas, N, m, 0.2)
    assert torch.equal(out.tokens, gumbel_max(q, torch.Generator().manual_seed(3)))


def test_sample_step_validation():
    proc = XDLM(10, 9, 0.5)
    logits, z = torch.zeros(2, 3, 10), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="alpha_s must be >= alpha_t"):
        proc.sample_step(logits, z, 0.3, 0.6)
    with pytest.raises(ValueError, match="top_p must be in"):
        proc.sample_step(logits, z, 0.6, 0.3, top_p=0.0)
    with pytest.raises(ValueError, match="logits has last dimension 11"):
        proc.sample_step(torch.zeros(2, 3, 11), z, 0.6, 0.3)
    with pytest.raises(ValueError, match="logits must be a floating tensor"):
        proc.sample_step(torch.zeros(2, 3, 10, dtype=torch.long), z, 0.6, 0.3)


class Oracle:
    def __init__(self, x0, N):
        self.x0, self.N = x0, N

    def __call__(self, z, t):
        return torch.full((*self.x0.shape, self.N), -math.inf).scatter(-1, self.x0[..., None], 0.0)


@pytest.mark.parametrize("backend", ["chunked", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("final_step", ["ancestral", "greedy"])
def test_sampler_on_a_streaming_backend_recovers_x0_at_k0(backend, final_step, request):
    if backend == "triton":
        request.getfixturevalue("triton_cpu")
    N, m = 23, 9
    x0 = torch.randint(0, N - 1, (2, 16), generator=torch.Generator().manual_seed(0))
    x0 = x0 + (x0 >= m).long()
    sampler = sampling.get("ancestral", XDLM.mdlm(N, m), schedules.get("loglinear"), steps=4,
                           final_step=final_step, backend=backend)
    out = sampler.sample(Oracle(x0, N), (2, 16), generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, x0)


def test_sampler_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of auto, torch, chunked, triton"):
        sampling.get("ancestral", XDLM(5, 4, 0.1), schedules.get("loglinear"), steps=2, backend="cuda")
