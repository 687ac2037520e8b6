"""The LLaDA-style sampler against hand-computed runs of scripted 'models' (fixed logits per call).

Vocabulary of 8 with [MASK] = 7; a position's scripted distribution puts probability c on one
token and spreads 1 - c evenly over the six other non-mask tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from xdlm.diffusion import XDLM, sampling, schedules
from xdlm.diffusion.llada_sampling import LLaDASampler, edit_schedule, top_positions, unmask_schedule

N, MASK = 8, 7
PROMPT = torch.tensor([[1, 3]])


def dist(token: int, c: float) -> torch.Tensor:
    p = torch.full((N,), (1 - c) / (N - 2))
    p[token], p[MASK] = c, 0.0
    return p


def logits_of(rows: list[tuple[int, float] | torch.Tensor]) -> torch.Tensor:
    """[L, N] log-probabilities from one (token, confidence) pair or probability vector per position."""
    return torch.stack([r if isinstance(r, torch.Tensor) else dist(*r) for r in rows]).clamp_min(1e-30).log()


class Scripted:
    """Returns the j-th scripted [L, N] logits at its j-th call (for every row)."""

    def __init__(self, script: list[torch.Tensor]):
        self.script, self.calls = script, 0

    def __call__(self, x, t):
        out = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return out.expand(x.shape[0], -1, -1).clone()


def run(script, k, steps, gen_length, block_length=None, prompt=PROMPT, **options):
    sampler = LLaDASampler(XDLM(N, MASK, 0.0), steps=steps, gen_length=gen_length,
                           block_length=block_length, k=k, **options)
    return [s.x[0].tolist() for s in sampler.iterate(Scripted(script), prompt=prompt)]


# positions 0, 1 are the prompt; the answer is 2..5
FIXED = logits_of([(1, .9), (3, .9), (1, .5), (2, .9), (3, .7), (4, .6)])
M = MASK


def test_schedules_match_hand_counts():
    assert unmask_schedule(torch.tensor([10, 3]), 4).tolist() == [[3, 3, 2, 2], [1, 1, 1, 0]]
    # k = 0.5: E_i = floor(N_i * 1) with E_1 = 0: cumulative 0, 2, 3, 4
    assert edit_schedule(torch.tensor([[1, 1, 1, 1]]), 0.5).tolist() == [[0, 2, 1, 1]]
    # k = 0.1: 4 unmasks per step, E_i = floor(4 i / 9) = 0, 0, 1, 1, 2, 2, 3, 3
    assert edit_schedule(torch.full((1, 8), 4), 0.1).tolist() == [[0, 0, 1, 0, 1, 0, 1, 0]]
    assert edit_schedule(torch.full((1, 8), 4), 0.0).tolist() == [[0] * 8]
    assert top_positions(torch.tensor([.5, .9, .9, .1]), 2).tolist() == [1, 2]  # ties: leftmost


def test_unmasking_follows_confidence_one_block():
    states = run([FIXED], k=0.0, steps=4, gen_length=4)
    assert states == [[1, 3, M, 2, M, M], [1, 3, M, 2, 3, M], [1, 3, M, 2, 3, 4], [1, 3, 1, 2, 3, 4]]
    two = run([FIXED], k=0.0, steps=2, gen_length=4)
    assert two == [[1, 3, M, 2, 3, M], [1, 3, 1, 2, 3, 4]]


def test_blocks_are_generated_left_to_right():
    # position 4 (0.7) is more confident than 2 (0.5) but lies in the second block
    states = run([FIXED], k=0.0, steps=4, gen_length=4, block_length=2)
    assert states == [[1, 3, M, 2, M, M], [1, 3, 1, 2, M, M], [1, 3, 1, 2, 3, M], [1, 3, 1, 2, 3, 4]]


# The model changes its mind at every call (hand-computed run in the comments; k = 0.5 gives
# e = 0, 2, 1, 1 edits for one unmask per step).
EDIT_SCRIPT = [
    FIXED,
    # step 2: unmask 4 (.7) -> 0; edits wanted 2, eligible {3}: 3 -> 0, one carried
    logits_of([(0, .99), (0, .3), (0, .5), (0, .8), (0, .7), (0, .6)]),
    # step 3: unmask 5 (.65) -> 4; edits wanted 1 + 1, eligible {3, 4}: both -> 4
    logits_of([(1, .9), (3, .9), (4, .55), (4, .9), (4, .95), (4, .65)]),
    # step 4: unmask 2 -> 1; edits wanted 1, eligible {3, 4, 5}: the most confident, 4 (.8) -> 1
    logits_of([(1, .9), (3, .9), (1, .6), (1, .7), (1, .8), (1, .75)]),
]


def test_edits_count_rule_and_carry_match_the_hand_computed_run():
    states = run(EDIT_SCRIPT, k=0.5, steps=4, gen_length=4)
    assert states == [[1, 3, M, 2, M, M], [1, 3, M, 0, 0, M], [1, 3, M, 4, 4, 4], [1, 3, 1, 4, 1, 4]]


def test_k0_makes_no_edits_and_the_prompt_is_never_edited():
    assert run(EDIT_SCRIPT, k=0.0, steps=4, gen_length=4)[-1] == [1, 3, 1, 2, 0, 4]
    # step 2 proposes 0 at prompt position 0 with confidence .99: edited only when allowed
    edited = run(EDIT_SCRIPT, k=0.5, steps=4, gen_length=4, edit_prompt=True)
    assert edited[1] == [0, 3, M, 0, 0, M]


class ScriptedProposals(LLaDASampler):
    """Gumbel draws replaced by scripted proposals, to test the p(proposal) >= p(current) rule."""

    proposals: list[list[int]] = []

    def _propose(self, logits, generator):
        return torch.tensor([self.proposals.pop(0)]).expand(logits.shape[0], -1).clone()


def test_an_edit_needs_the_proposal_at_least_as_likely_as_the_current_token():
    p0 = torch.full((N,), 0.2 / 6)
    p0[1], p0[4], p0[MASK] = 0.6, 0.2, 0.0
    p1 = torch.full((N,), 0.2 / 6)
    p1[5], p1[1], p1[MASK] = 0.7, 0.1, 0.0
    script = [logits_of([(1, .9), (2, .8), (3, .5)]),
              logits_of([p0, (2, .8), (3, .5)]),          # proposal 4 at 0 has p .2 < p(1) = .6
              logits_of([p1, (2, .8), (3, .5)])]          # proposal 5 at 0 has p .7 >= p(1) = .1
    sampler = ScriptedProposals(XDLM(N, MASK, 0.0), steps=3, gen_length=3, k=0.5, temperature=1.0)
    sampler.proposals = [[1, 2, 3], [4, 2, 3], [5, 2, 3]]
    states = [s.x[0].tolist() for s in sampler.iterate(Scripted(script), (1, 3))]
    assert states == [[1, M, M], [1, 2, M], [5, 2, 3]]


def mixing_model(seed=0):
    """Logits that depend on every token of their own row only."""
    g = torch.Generator().manual_seed(seed)
    emb, ctx, pos = torch.randn(N, N, generator=g), torch.randn(N, N, generator=g), torch.randn(16, N, generator=g)
    return lambda x, t: emb[x] + ctx[x].mean(dim=1, keepdim=True) + pos[: x.shape[1]]


def test_batching_gives_the_one_by_one_result():
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6], [0, 0, 1]])
    sampler = LLaDASampler(XDLM(N, MASK, 0.2), steps=6, gen_length=8, block_length=4)
    model = mixing_model()
    batch = sampler.sample(model, prompt=prompts)
    single = torch.cat([sampler.sample(model, prompt=p[None]) for p in prompts])
    assert torch.equal(batch, single)
    assert torch.equal(batch[:, :3], prompts) and not bool((batch == MASK).any())
    # k = 0.2 made edits here: the run differs from pure LLaDA's
    pure = LLaDASampler(XDLM(N, MASK, 0.2), steps=6, gen_length=8, block_length=4, k=0.0)
    assert not torch.equal(pure.sample(model, prompt=prompts), batch)


def test_eos_stops_a_row_and_pads_after_it_and_ban_eos_removes_it():
    eos, pad = 6, 0
    # position 3 (first block) is EOS with confidence .95
    logits = logits_of([(1, .9), (3, .9), (2, .9), (eos, .95), (4, .6), (5, .6), (2, .5), (3, .5)])
    model = Scripted([logits])
    sampler = LLaDASampler(XDLM(N, MASK, 0.0), steps=6, gen_length=6, block_length=2, eos_id=eos,
                           stop_at_eos=True, pad_id=pad)
    out = sampler.sample(model, prompt=PROMPT)
    assert out[0].tolist() == [1, 3, 2, eos, pad, pad, pad, pad]
    assert model.calls == 2  # the later blocks were never computed
    banned = LLaDASampler(XDLM(N, MASK, 0.0), steps=6, gen_length=6, block_length=2, eos_id=eos, ban_eos=True)
    assert not bool((banned.sample(Scripted([logits]), prompt=PROMPT) == eos).any())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_temperature_draws_follow_the_tempered_softmax(temperature):
    p = torch.tensor([0.6, 0.3, 0.1, 0, 0, 0, 0, 0])
    logits = logits_of([p])
    sampler = LLaDASampler(XDLM(N, MASK, 0.0), steps=1, gen_length=1, temperature=temperature)
    out = sampler.sample(Scripted([logits]), (4000, 1), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out[:, 0], minlength=N).double() / 4000
    expected = torch.softmax(logits[0].double() / temperature, dim=-1)
    assert torch.allclose(freq, expected, atol=0.03), (freq, expected)
    greedy = LLaDASampler(XDLM(N, MASK, 0.0), steps=1, gen_length=1)
    assert bool((greedy.sample(Scripted([logits]), (5, 1)) == 0).all())


def test_registered_sampler_generates_unconditionally_like_the_others():
    sampler = sampling.get("llada", XDLM(N, MASK, 0.1), schedules.get("loglinear"), steps=4, top_p=None)
    out = sampler.sample(mixing_model(1), (3, 8), generator=torch.Generator().manual_seed(0), device="cpu")
    assert out.shape == (3, 8) and not bool((out == MASK).any())
    with pytest.raises(ValueError, match="steps 3 must be a multiple of the number of blocks 2"):
        LLaDASampler(XDLM(N, MASK, 0.1), steps=3, block_length=4).sample(mixing_model(), (1, 8))
    with pytest.raises(ValueError, match="k must be in"):
        LLaDASampler(XDLM(N, MASK, 1.0), steps=4)
    assert math.isfinite(sampler.k)
