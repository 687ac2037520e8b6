"""The Markov chain's exact quantities against brute force and long samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from xdlm.synthetic.markov import MarkovChain, MarkovSpec, empirical_entropy, entropy


@pytest.mark.parametrize("order", [1, 2, 3])
def test_log_prob_is_a_law_with_the_exact_block_entropy(order: int) -> None:
    chain = MarkovChain.generate(MarkovSpec(3, order, concentration=0.5, sparsity=0.3, floor=0.02, seed=1))
    length = 5
    everything = torch.tensor(list(itertools.product(range(3), repeat=length)))
    logp = chain.log_prob(everything)
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(-(logp.exp() * logp).sum()) == pytest.approx(chain.block_entropy(length), abs=1e-12)
    # stationarity: every position has the same one-symbol law, every pair the same bigram law
    for i in range(length - 1):
        marginal = torch.zeros(3, 3, dtype=torch.float64)
        marginal.index_put_((everything[:, i], everything[:, i + 1]), logp.exp(), accumulate=True)
        assert torch.allclose(marginal, chain.bigram(), atol=1e-12)
        assert torch.allclose(marginal.sum(1), chain.unigram(), atol=1e-12)


def test_log_prob_by_hand_for_order_one() -> None:
    trans = torch.tensor([[0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    chain = MarkovChain(trans, order=1)
    assert torch.allclose(chain.stationary, torch.tensor([0.8, 0.2], dtype=torch.float64))
    x = torch.tensor([[0, 0, 1, 1]])
    assert float(chain.log_prob(x)) == pytest.approx(np.log(0.8 * 0.9 * 0.1 * 0.6))


@pytest.mark.parametrize("order", [1, 2])
def test_entropy_rate_matches_a_long_sample(order: int) -> None:
    chain = MarkovChain.generate(MarkovSpec(6, order, concentration=0.4, sparsity=0.5, seed=3))
    length = 400
    x = chain.sample(400, length, np.random.default_rng(0))
    per_sequence = -chain.log_prob(x)
    rate = float(per_sequence.mean()) / length
    stderr = float(per_sequence.std()) / length / np.sqrt(x.shape[0])
    exact = chain.block_entropy(length) / length
    assert abs(rate - exact) < 4 * stderr + 1e-9
    assert abs(exact - chain.entropy_rate()) < 0.02  # the start-up term, spread over 400 symbols
    assert empirical_entropy(x, 6, 1) == pytest.approx(entropy(chain.unigram()), abs=0.01)


def test_parameters_and_samples_are_bit_identical_for_a_seed() -> None:
    spec = MarkovSpec(7, 2, concentration=0.3, sparsity=0.5, seed=11)
    a, b = MarkovChain.generate(spec), MarkovChain.generate(spec)
    assert torch.equal(a.trans, b.trans)
    assert torch.equal(a.sample(8, 20, np.random.default_rng(5)), b.sample(8, 20, np.random.default_rng(5)))
    assert not torch.equal(a.trans, MarkovChain.generate(MarkovSpec(7, 2, 0.3, 0.5, seed=12)).trans)


def test_concentration_and_sparsity_set_the_entropy_rate() -> None:
    rates = [MarkovChain.generate(MarkovSpec(8, 1, c, s, seed=0)).entropy_rate()
             for c, s in ((5.0, 0.0), (0.5, 0.5), (0.1, 0.8))]
    assert rates[0] > rates[1] > rates[2]


@pytest.mark.parametrize("kwargs, field", [({"num_symbols": 1}, "num_symbols"), ({"order": 4}, "order"),
                                           ({"floor": 0.0}, "floor"), ({"sparsity": 1.0}, "sparsity")])
def test_bad_specs_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MarkovSpec(**{"num_symbols": 4, **kwargs})
