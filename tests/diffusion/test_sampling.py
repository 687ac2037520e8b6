"""Samplers with an oracle denoiser (p = one-hot of the true x_0)."""

import math

import pytest
import torch

from xdlm.diffusion import XDLM, sampling, schedules


class Oracle:
    """Knows x0; returns logits whose clean softmax is exactly one-hot(x0); counts its calls."""

    def __init__(self, x0, vocab_size):
        self.x0, self.N, self.calls = x0, vocab_size, 0

    def __call__(self, z_t, t):
        self.calls += 1
        assert z_t.shape == self.x0.shape and t.shape == (z_t.shape[0],)
        logits = torch.full((*self.x0.shape, self.N), -math.inf)
        return logits.scatter(-1, self.x0[..., None], 0.0)


def clean_tokens(shape, N, mask_id, seed=0):
    x0 = torch.randint(0, N - 1, shape, generator=torch.Generator().manual_seed(seed))
    return x0 + (x0 >= mask_id).long()


@pytest.mark.parametrize("steps", [1, 4, 32])
@pytest.mark.parametrize("final_step", ["ancestral", "greedy"])
def test_oracle_recovers_x0_exactly_at_k0(steps, final_step):
    N, m = 23, 9
    x0 = clean_tokens((3, 40), N, m)
    oracle = Oracle(x0, N)
    sampler = sampling.get("ancestral", XDLM.mdlm(N, m), schedules.get("loglinear"), steps=steps, final_step=final_step)
    out = sampler.sample(oracle, (3, 40), generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, x0)
    assert oracle.calls == steps


@pytest.mark.parametrize("k", [0.1, 0.5, 1.0])
def test_oracle_ends_in_the_posterior_support_at_k_positive(k):
    N, m, steps = 17, 0, 8
    proc = XDLM(N, m, k)
    x0 = clean_tokens((4, 64), N, m, seed=3)
    oracle = Oracle(x0, N)
    sampler = sampling.get("ancestral", proc, schedules.get("cosine"), steps=steps)
    states = list(sampler.iterate(oracle, (4, 64), generator=torch.Generator().manual_seed(5)))
    assert oracle.calls == steps == len(states)
    assert [s.step for s in states] == list(range(1, steps + 1))
    before, final = states[-2].z, states[-1].z
    # last step draws from q(z_0 | z_t, x = onehot(x0)) = c onehot(x0) + (1 - c) onehot(z_t)
    alpha_t = sampler.schedule.alpha(torch.tensor(states[-1].t, dtype=torch.float64))
    onehot = torch.nn.functional.one_hot(x0, N).double()
    support = proc.posterior(onehot, before, 1.0, alpha_t) > 0
    assert support.gather(-1, final[..., None]).all()
    assert ((final == x0) | (final == before)).all()
    assert (final != m).all()  # alpha_s = 1: nothing stays masked
    assert (final == x0).double().mean() > 0.9  # the oracle pulls almost every token home


def test_none_final_step_stops_at_t_min():
    N, m = 11, 10
    x0 = clean_tokens((2, 30), N, m)
    sampler = sampling.get("ancestral", XDLM(N, m, 0.0), schedules.get("loglinear"), steps=2, final_step="none")
    states = list(sampler.iterate(Oracle(x0, N), (2, 30), generator=torch.Generator().manual_seed(0)))
    assert states[-1].s == pytest.approx(1e-3)


def test_fixed_positions_are_never_noised():
    N, m = 13, 12
    proc = XDLM(N, m, 0.5)
    x0 = clean_tokens((2, 20), N, m)
    fixed = torch.zeros(2, 20, dtype=torch.bool)
    fixed[:, :5] = True  # a prefix
    fixed[:, 15] = True  # and an infill anchor
    seen = []

    def denoiser(z, t):
        seen.append(z.clone())
        return torch.zeros(*z.shape, N)  # uniform p: the sampler wanders

    sampler = sampling.get("ancestral", proc, schedules.get("loglinear"), steps=6)
    out = sampler.sample(denoiser, (2, 20), fixed_mask=fixed, fixed_tokens=x0, generator=torch.Generator().manual_seed(0))
    for z in [*seen, out]:
        assert torch.equal(z[fixed], x0[fixed])
    assert not torch.equal(out[~fixed], x0[~fixed])


def test_top_p_restricts_draws_to_the_nucleus():
    N, m = 8, 7
    proc = XDLM.mdlm(N, m)
    logits = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.05, 0.03, 0.01, 0.01, 0.0]).clamp_min(1e-30))
    sampler = sampling.get("ancestral", proc, schedules.get("loglinear"), steps=1, top_p=0.75)
    out = sampler.sample(lambda z, t: logits.expand(*z.shape, N), (50, 40), generator=torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) == {0, 1}


def test_float64_gumbel_matches_the_law():
    from xdlm.diffusion.categorical import gumbel_max

    probs = torch.tensor([0.7, 0.2, 0.1]).expand(100_000, 3)
    draws = gumbel_max(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).double() / draws.numel()
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), atol=5e-3, rtol=0)


def test_sampler_validation():
    proc, sched = XDLM(5, 4, 0.1), schedules.get("loglinear")
    with pytest.raises(ValueError, match="unknown sampler 'ddim'; available: ancestral"):
        sampling.get("ddim", proc, sched, steps=4)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sampling.get("ancestral", proc, sched, steps=0)
    with pytest.raises(ValueError, match="final_step must be one of ancestral, greedy, none"):
        sampling.get("ancestral", proc, sched, steps=2, final_step="argmax")
    with pytest.raises(ValueError, match="top_p"):
        sampling.get("ancestral", proc, sched, steps=2, top_p=1.5)
