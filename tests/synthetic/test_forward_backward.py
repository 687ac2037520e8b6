"""Forward-backward posteriors against brute-force enumeration over every x0 (V = 3, L = 4)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from xdlm.synthetic.forward_backward import emission_log_probs, posterior_log_probs
from xdlm.synthetic.markov import MarkovChain, MarkovSpec

V, L = 3, 4
N, MASK = V + 1, V


def brute_force(chain: MarkovChain, z: torch.Tensor, alpha: torch.Tensor, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p(x0[i] | z_t[-i]) and p(x0[i] | z_t) by summing p(x0) prod_j q(z_j | x0_j) over all V^L x0."""
    every = torch.tensor(list(itertools.product(range(V), repeat=L)))
    prior = chain.log_prob(every).exp()
    emissions = emission_log_probs(z, alpha, V, N, MASK, k)  # [B, L, V]
    loo = torch.zeros(z.shape[0], L, V, dtype=torch.float64)
    full = torch.zeros_like(loo)
    for b in range(z.shape[0]):
        e = emissions[b][torch.arange(L), every]  # [V^L, L]: log q(z_j | x0_j)
        for i in range(L):
            others = torch.cat([e[:, :i], e[:, i + 1:]], dim=1).sum(1)  # every emission but i's
            loo[b, i].index_add_(0, every[:, i], prior * others.exp())
            full[b, i].index_add_(0, every[:, i], prior * e.sum(1).exp())
    return loo / loo.sum(-1, keepdim=True), full / full.sum(-1, keepdim=True)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("k", [0.0, 0.3, 1.0])
def test_posteriors_match_enumeration(order: int, k: float) -> None:
    chain = MarkovChain.generate(MarkovSpec(V, order, concentration=0.5, sparsity=0.3, floor=0.01, seed=2))
    g = torch.Generator().manual_seed(order)
    z = torch.randint(0, N, (6, L), generator=g)
    if k == 0.0:  # absorbing noise: an unmasked z_t is the clean symbol
        clean = chain.sample(6, L, np.random.default_rng(0))
        z = torch.where(torch.rand(6, L, generator=g) < 0.5, clean, torch.full_like(z, MASK))
    alpha = torch.rand(6, generator=g, dtype=torch.float64)
    want_loo, want_full = brute_force(chain, z, alpha, k)
    got_loo = posterior_log_probs(chain, z, alpha, N, MASK, k).exp()
    got_full = posterior_log_probs(chain, z, alpha, N, MASK, k, leave_one_out=False).exp()
    assert torch.allclose(got_loo, want_loo, atol=1e-12)
    assert torch.allclose(got_full, want_full, atol=1e-12)
    if k > 0:  # they differ where position i's own emission is informative
        assert not torch.allclose(got_loo, got_full, atol=1e-3)
