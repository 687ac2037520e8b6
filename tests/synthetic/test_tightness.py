"""End-to-end test of the NELBO: with the exact (leave-one-out) denoiser the continuous-time bound
is tight, E[NELBO] = E[-log p(x0)] per sequence, for every k and schedule, up to the end terms of
[t_min, 1] (``xdlm.synthetic.tightness``, derived in docs/synthetic.md).

The estimate goes through the code path training uses: ``make_objective`` (the job's loss
backend), antithetic times over [t_min, 1] (``time_sampling``), the schedule's alpha and alpha',
``XDLM.sample_marginal`` and ``XDLM.nelbo``.  A wrong weight anywhere moves the mean by far more
than the tolerance: the last tests show two (alpha' scaled by 1.1; the full posterior plugged in
instead of the leave-one-out one at k = 0.5).

Source: order 1, V = 5, L = 8 (H(x0) = 4.86 nats); 32 batches of 1024 sequences per case.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xdlm.config import load_job
from xdlm.data.build import build_datasets
from xdlm.eval.synthetic import Estimate, estimate, nelbo_per_sequence
from xdlm.objective import Process, build_oracle, build_process, make_objective
from xdlm.synthetic.markov import entropy
from xdlm.synthetic.tightness import nelbo_interval


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SEQ_LEN, BATCH, NUM_BATCHES = 8, 1024, 32
STDERRS = 4.0


def setup(k: float, schedule: str):
    job = load_job(None, ["data.source=markov", "data.eval_sets=[]", f"data.seq_len={SEQ_LEN}",
                          "data.markov.num_symbols=5", "data.markov.floor=0.05",
                          "data.markov.validation_sequences=8", f"diffusion.k={k}",
                          f"diffusion.schedule={schedule}", "model.backbone=oracle"])
    data = build_datasets(job.data)
    process = build_process(job, data.tokenizer.vocab_size, data.tokenizer.mask_id)
    return job, data, process


def measure(job, data, process: Process, leave_one_out: bool = True, batches: int = NUM_BATCHES) -> Estimate:
    chain = data.exact_law
    rng = np.random.default_rng(0)
    x0 = [chain.sample(BATCH, SEQ_LEN, rng) for _ in range(batches)]
    oracle = build_oracle(data, process, leave_one_out=leave_one_out)
    return estimate(nelbo_per_sequence(make_objective(job, process), oracle, x0, job.diffusion.t_min, seed=7))


def bounds(job, data, process: Process, est: Estimate) -> tuple[float, float]:
    chain = data.exact_law
    alpha = process.schedule.alpha
    lo, hi = nelbo_interval(chain.block_entropy(SEQ_LEN), SEQ_LEN, entropy(chain.unigram()), job.diffusion.k,
                            float(alpha(torch.tensor(job.diffusion.t_min, dtype=torch.float64))),
                            float(alpha(torch.tensor(1.0, dtype=torch.float64))), job.diffusion.t_min)
    return lo - STDERRS * est.stderr, hi + STDERRS * est.stderr


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
@pytest.mark.parametrize("k", [0.0, 0.1, 0.5, 1.0])
def test_oracle_nelbo_equals_the_entropy(k: float, schedule: str) -> None:
    job, data, process = setup(k, schedule)
    est = measure(job, data, process)
    lo, hi = bounds(job, data, process, est)
    entropy_ = data.exact_law.block_entropy(SEQ_LEN)
    assert lo <= est.mean <= hi, (f"E[NELBO] = {est.mean:.4f} ± {est.stderr:.4f} per sequence, "
                                  f"H = {entropy_:.4f}, allowed [{lo:.4f}, {hi:.4f}]")
    assert est.stderr < 0.06  # the test has power: a 0.3-nat error would fail it


class ScaledDerivative:
    """A schedule whose alpha' is off by a factor (the kind of bug the test must catch)."""

    def __init__(self, schedule, factor: float) -> None:
        self.schedule, self.factor = schedule, factor

    def alpha(self, t):
        return self.schedule.alpha(t)

    def dalpha(self, t):
        return self.factor * self.schedule.dalpha(t)


def test_a_wrong_loss_weight_fails() -> None:
    job, data, process = setup(0.5, "loglinear")
    wrong = Process(process.xdlm, ScaledDerivative(process.schedule, 1.1))
    est = measure(job, data, wrong, batches=16)
    lo, hi = bounds(job, data, wrong, est)
    assert est.mean > hi, f"alpha' x 1.1 gave {est.mean:.4f} ± {est.stderr:.4f}, inside [{lo:.4f}, {hi:.4f}]"


def test_the_full_posterior_is_not_the_optimal_plug_in() -> None:
    job, data, process = setup(0.5, "loglinear")
    est = measure(job, data, process, leave_one_out=False, batches=16)
    lo, hi = bounds(job, data, process, est)
    assert est.mean > hi + 1.0, f"full posterior gave {est.mean:.4f} ± {est.stderr:.4f}, bound {hi:.4f}"
