import pytest
import torch

from tests.diffusion import dense
from xdlm.diffusion import XDLM

CASES = [  # (N, mask_id, k)
    (5, 4, 0.0), (5, 0, 0.3), (7, 3, 1.0), (11, 10, 0.1), (16, 5, 0.5), (33, 0, 0.9), (64, 17, 0.05),
]


def random_probs(N, mask_id, gen, mask_mass=False):
    p = torch.rand(N, generator=gen, dtype=torch.float64) ** 3
    if not mask_mass:
        p[mask_id] = 0
    return p / p.sum()


@pytest.mark.parametrize("N,mask_id,k", CASES)
@pytest.mark.parametrize("alpha_s,alpha_t", [(0.9, 0.4), (0.5, 0.49), (1.0, 0.2), (0.3, 0.01)])
def test_posterior_matches_dense_bayes(N, mask_id, k, alpha_s, alpha_t):
    gen = torch.Generator().manual_seed(N * 100 + mask_id)
    proc = XDLM(N, mask_id, k)
    x0 = int(torch.randint(0, N - 1, (), generator=gen))
    x0 = x0 if x0 < mask_id else x0 + 1  # never the mask
    onehot = torch.zeros(N, dtype=torch.float64)
    onehot[x0] = 1
    vectors = [onehot, random_probs(N, mask_id, gen), random_probs(N, mask_id, gen, mask_mass=True)]
    for x in vectors:
        marginal_t = dense.marginal(N, mask_id, k, x, alpha_t)
        z_all = torch.arange(N)[marginal_t > 0]  # posteriors only exist for reachable z_t
        got = proc.posterior(x.expand(len(z_all), N), z_all, alpha_s, alpha_t)
        want = torch.stack([dense.posterior(N, mask_id, k, x, int(z), alpha_s, alpha_t) for z in z_all])
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N,mask_id,k", CASES)
def test_marginal_matches_dense_kernel(N, mask_id, k):
    proc = XDLM(N, mask_id, k)
    x0 = torch.tensor([i for i in range(N) if i != mask_id])
    got = proc.marginal(x0, 0.37)
    want = torch.eye(N, dtype=torch.float64)[x0] @ dense.transition(N, mask_id, k, 0.37)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(proc.stationary(torch.float64), dense.stationary(N, mask_id, k))


def test_kernels_compose():
    """Q_{t|s} Q_s = Q_t: the stationary kernel is closed under composition (pi^T 1 = 1)."""
    N, m, k = 9, 2, 0.4
    composed = dense.transition(N, m, k, 0.8) @ dense.transition(N, m, k, 0.5)
    torch.testing.assert_close(composed, dense.transition(N, m, k, 0.4))


def test_mdlm_carries_over_unmasked_tokens_even_when_p_underflows():
    N, m = 6, 5
    proc = XDLM.mdlm(N, m)
    p = torch.tensor([[1.0, 0, 0, 0, 0, 0]], dtype=torch.float32)  # p_z = 0 at z = 3
    z = torch.tensor([3])
    post = proc.posterior(p, z, 0.9, 0.5)
    assert torch.equal(post, torch.eye(N)[3:4])


def test_posterior_rejects_reversed_time():
    proc = XDLM(5, 4, 0.5)
    with pytest.raises(ValueError, match="alpha_s must be >= alpha_t"):
        proc.posterior(torch.full((1, 5), 0.2), torch.tensor([0]), 0.3, 0.6)
