"""Forward sampling against the closed-form marginal and prior (chi-square tests on counts)."""

import pytest
import torch
from scipy.stats import chisquare

from tests.diffusion import dense
from xdlm.diffusion import XDLM


def chi_square_pvalue(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples.flatten(), minlength=probs.numel()).double()
    support = probs > 0
    assert counts[~support].sum() == 0, "a sample landed outside the support"
    if int(support.sum()) == 1:
        return 1.0  # a point mass: the support check above is the whole test
    expected = probs[support] * counts.sum()
    return float(chisquare(counts[support], expected).pvalue)


@pytest.mark.parametrize("N,mask_id,k,alpha", [(8, 7, 0.0, 0.3), (8, 0, 0.5, 0.3), (13, 6, 1.0, 0.6), (5, 2, 0.1, 0.05)])
def test_sample_marginal_matches_marginal(N, mask_id, k, alpha):
    proc = XDLM(N, mask_id, k)
    gen = torch.Generator().manual_seed(11)
    x0_id = (mask_id + 1) % N
    x0 = torch.full((200_000,), x0_id)
    samples = proc.sample_marginal(x0, alpha, generator=gen)
    onehot = torch.zeros(N, dtype=torch.float64)
    onehot[x0_id] = 1
    assert chi_square_pvalue(samples, dense.marginal(N, mask_id, k, onehot, alpha)) > 1e-3


def test_sample_marginal_per_token_alpha():
    proc = XDLM(6, 5, 0.4)
    x0 = torch.zeros(2, 50_000, dtype=torch.long)
    alpha = torch.tensor([[0.9], [0.1]])
    z = proc.sample_marginal(x0, alpha, generator=torch.Generator().manual_seed(0))
    kept = (z == 0).double().mean(-1)
    # P(z = x0) = alpha + (1 - alpha) k / N
    want = alpha[:, 0].double() + (1 - alpha[:, 0].double()) * 0.4 / 6
    torch.testing.assert_close(kept, want, atol=0.01, rtol=0)


@pytest.mark.parametrize("N,mask_id,k", [(8, 7, 0.0), (8, 3, 0.3), (10, 0, 1.0)])
def test_sample_prior_matches_pi(N, mask_id, k):
    proc = XDLM(N, mask_id, k)
    samples = proc.sample_prior((400, 500), generator=torch.Generator().manual_seed(2))
    assert samples.shape == (400, 500) and samples.dtype == torch.long
    assert chi_square_pvalue(samples, dense.stationary(N, mask_id, k)) > 1e-3


def test_chi_square_detects_a_wrong_law():
    """The test above can fail: the prior of k = 0.3 is rejected against pi of k = 0.35."""
    samples = XDLM(8, 3, 0.3).sample_prior((400, 500), generator=torch.Generator().manual_seed(2))
    assert chi_square_pvalue(samples, dense.stationary(8, 3, 0.35)) < 1e-6
