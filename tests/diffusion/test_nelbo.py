"""The NELBO integrand against independent references: the numerical limit of the KL between
dense Bayes posteriors, MDLM's and UDLM's closed forms, autograd's gradcheck."""

import math

import numpy as np
import pytest
import torch

from tests.diffusion import dense
from xdlm.diffusion import XDLM, schedules

CASES = [(5, 4, 0.0), (5, 0, 0.25), (7, 3, 1.0), (12, 11, 0.1), (20, 6, 0.5), (64, 0, 0.9), (9, 4, 1e-3)]


def model_logits(N, mask_id, gen, scale=2.0):
    logits = scale * torch.randn(N, generator=gen, dtype=torch.float64)
    logits[mask_id] = 123.0  # must be ignored: p_m = 0 whatever the mask logit says
    return logits


def model_probs(logits, mask_id):
    masked = logits.clone()
    masked[mask_id] = -math.inf
    return torch.softmax(masked, -1)


def kl_rate(N, mask_id, k, x0, z, p, t, schedule, h):
    """KL(q(z_s | z_t, x0) || p_theta(z_s | z_t)) / (t - s) at s = t - h, from dense Bayes."""
    a_t = float(schedule.alpha(torch.tensor(t, dtype=torch.float64)))
    a_s = float(schedule.alpha(torch.tensor(t - h, dtype=torch.float64)))
    onehot = torch.zeros(N, dtype=torch.float64)
    onehot[x0] = 1
    q = dense.posterior(N, mask_id, k, onehot, z, a_s, a_t)
    p_theta = dense.posterior(N, mask_id, k, p, z, a_s, a_t)
    return float(dense.kl(q, p_theta)) / h


@pytest.mark.parametrize("N,mask_id,k", CASES)
@pytest.mark.parametrize("schedule_name,t", [("loglinear", 0.3), ("cosine", 0.7), ("geometric", 0.5)])
def test_nelbo_is_the_limit_of_the_kl_rate(N, mask_id, k, schedule_name, t):
    schedule = schedules.get(schedule_name)
    proc = XDLM(N, mask_id, k)
    gen = torch.Generator().manual_seed(N + int(100 * k))
    logits = model_logits(N, mask_id, gen)
    p = model_probs(logits, mask_id)
    x0 = (mask_id + 1 + int(torch.randint(0, N - 1, (), generator=gen))) % N
    t_ = torch.tensor(t, dtype=torch.float64)
    alpha, dalpha = schedule.alpha(t_), schedule.dalpha(t_)
    onehot = torch.zeros(N, dtype=torch.float64)
    onehot[x0] = 1
    reachable = torch.arange(N)[dense.marginal(N, mask_id, k, onehot, float(alpha)) > 0]
    got = proc.nelbo(
        logits.expand(len(reachable), N), torch.full_like(reachable, x0), reachable, alpha, dalpha
    )
    h = 2e-4
    for z, value in zip(reachable.tolist(), got.tolist(), strict=True):
        coarse = kl_rate(N, mask_id, k, x0, z, p, t, schedule, h)
        fine = kl_rate(N, mask_id, k, x0, z, p, t, schedule, h / 2)
        limit = 2 * fine - coarse  # Richardson: removes the O(h) term
        assert value == pytest.approx(limit, rel=2e-5, abs=1e-8), (z, value, limit)


def test_k0_is_exactly_mdlm():
    N, m = 50, 7
    proc = XDLM.mdlm(N, m)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, N - 1, (4, 16), generator=gen)
    x0 = x0 + (x0 >= m).long()
    alpha = torch.rand(4, 1, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    dalpha = -torch.rand(4, 1, generator=gen, dtype=torch.float64) - 0.5
    z = proc.sample_marginal(x0, alpha, generator=gen)
    logits = torch.randn(4, 16, N, generator=gen, dtype=torch.float64)
    masked = logits.clone()
    masked[..., m] = -math.inf
    logp_x = torch.log_softmax(masked, -1).gather(-1, x0[..., None]).squeeze(-1)
    mdlm = torch.where(z == m, -dalpha / (1 - alpha) * (-logp_x), torch.zeros_like(logp_x))
    torch.testing.assert_close(proc.nelbo(logits, x0, z, alpha, dalpha), mdlm, rtol=1e-12, atol=1e-12)
    assert (z == m).any() and (z != m).any()


@pytest.mark.parametrize("N,mask_id", [(6, 5), (10, 0), (31, 13)])
def test_k1_is_exactly_udlm(N, mask_id):
    proc = XDLM.udlm(N, mask_id)
    gen = torch.Generator().manual_seed(N)
    for alpha in (0.02, 0.4, 0.97):
        logits = model_logits(N, mask_id, gen)
        p = model_probs(logits, mask_id)
        for x0 in [e for e in range(N) if e != mask_id][:4]:
            z_all = torch.arange(N)
            got = proc.nelbo(logits.expand(N, N), torch.full((N,), x0), z_all, alpha, -1.3)
            want = torch.stack([dense.udlm_loss(N, x0, z, p, alpha, -1.3) for z in range(N)])
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_nelbo_is_continuous_in_k_at_zero():
    N, m = 17, 3
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(8, N, generator=gen, dtype=torch.float64)
    x0 = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8])
    z = torch.tensor([m, 1, m, 4, m, 6, m, 8])  # tokens reachable at k = 0
    base = XDLM(N, m, 0.0).nelbo(logits, x0, z, 0.6, -1.0)
    near = XDLM(N, m, 1e-9).nelbo(logits, x0, z, 0.6, -1.0)
    torch.testing.assert_close(near, base, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [0.0, 0.3, 1.0])
def test_gradcheck(k):
    N, m = 7, 2
    proc = XDLM(N, m, k)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, N, generator=gen, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([[0, 1, 3], [4, 5, 6]])
    z = torch.tensor([[m, 1, 3], [m, 5, m]]) if k == 0 else torch.tensor([[m, 6, 3], [0, 5, m]])
    alpha = torch.tensor([[0.3], [0.8]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda lg: proc.nelbo(lg, x0, z, alpha, -1.0), (logits,))


@pytest.mark.parametrize("k", [0.0, 1e-3, 0.5, 1.0])
@pytest.mark.parametrize("alpha", [1e-6, 1e-3, 0.5, 1 - 1e-6, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_extremes(k, alpha, dtype):
    """Finite values and gradients at k in {0, 1}, alpha near 0 and 1, and when p_x underflows."""
    N, m = 300, 299
    proc = XDLM(N, m, k)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, N - 1, (3, 8), generator=gen)
    z = proc.sample_marginal(x0, torch.tensor(alpha), generator=gen)
    logits = (torch.randn(3, 8, N, generator=gen) * 5).to(dtype)
    logits[0, :, :] = 0
    logits[0, torch.arange(8), (x0[0] + 1) % (N - 1)] = 400.0  # p_x underflows to 0 in float32
    logits.requires_grad_(True)
    loss = proc.nelbo(logits, x0, z, alpha, -1.0)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all() and (loss >= -1e-3).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad.float()).all()


def integrated_nelbo(proc, logits, data, n_nodes=300, eps=1e-6):
    """E_x0 [ int_0^1 E_{z_t} l_t dt + KL(q(z_1 | x0) || pi) ] for one-token sequences, with
    Gauss-Legendre nodes in t and the expectation over z_t taken exactly."""
    N, m = proc.vocab_size, proc.mask_id
    schedule = schedules.get("loglinear", eps=eps)
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    t = torch.tensor((nodes + 1) / 2)
    w = torch.tensor(weights / 2)
    alpha, dalpha = schedule.alpha(t)[:, None], schedule.dalpha(t)[:, None]
    z_all = torch.arange(N).expand(n_nodes, N)
    total = 0.0
    for x0 in range(N):
        if data[x0] == 0:
            continue
        q_z = proc.marginal(torch.full((n_nodes,), x0), alpha[:, 0])
        l_t = proc.nelbo(logits.expand(n_nodes, N, N), torch.full((n_nodes, N), x0), z_all, alpha, dalpha)
        total += float(data[x0] * ((q_z * l_t).sum(-1) * w).sum())
        if proc.k > 0:  # at k = 0 the prior term is MDLM's (dropped) eps-leak
            q_1 = proc.marginal(torch.tensor([x0]), torch.tensor(eps, dtype=torch.float64))[0]
            total += float(data[x0] * dense.kl(q_1, dense.stationary(N, m, proc.k)))
    return total


@pytest.mark.parametrize("k", [0.0, 0.3, 1.0])
def test_nelbo_of_a_blind_denoiser_is_its_cross_entropy(k):
    """A denoiser that ignores z_t and predicts a law p makes the diffusion a model of p itself:
    the integrated NELBO must equal the cross-entropy E_data[-log p(x0)] >= H(data), so
    exp(NELBO) upper-bounds the true perplexity, tightly when p is the data law."""
    N, m = 6, 5
    proc = XDLM(N, m, k)
    data = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05, 0.0], dtype=torch.float64)
    entropy = float(-(data[:m] * data[:m].log()).sum())
    for law in (data, torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2, 0.0], dtype=torch.float64)):
        logits = torch.log(law.clamp_min(1e-300))
        cross_entropy = float(-(data[:m] * law[:m].log()).sum())
        total = integrated_nelbo(proc, logits, data)
        assert total == pytest.approx(cross_entropy, abs=1e-4)
        assert total >= entropy - 1e-4
