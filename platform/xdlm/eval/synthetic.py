"""Exact evaluation on a source whose law is known (``Datasets.exact_law``: the Markov source).

- NELBO estimates per sequence, through the training objective (antithetic times over
  [t_min, 1], the schedule's alpha and alpha', ``XDLM.nelbo`` with the job's backend), with
  their Monte Carlo standard error;
- samples scored exactly under the source: NLL per token, pooled unigram and bigram entropies;
- ``synthetic_metrics``: the trained model's values and the oracle's on the same settings, under
  ``metric_names`` (``val/nelbo_gap`` beside ``val/nelbo_gap_oracle``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from xdlm.config import JobConfig
from xdlm.data.datasets import Datasets
from xdlm.diffusion import time_sampling
from xdlm.eval import metric_names
from xdlm.eval.generation import generate
from xdlm.objective import Objective, Process, build_oracle, diffusion_loss
from xdlm.synthetic.markov import MarkovChain, empirical_entropy


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean with its standard error over ``n`` independent batch estimates."""

    mean: float
    stderr: float
    n: int


def estimate(values: torch.Tensor) -> Estimate:
    values = values.double()
    n = values.numel()
    stderr = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(float(values.mean()), stderr, n)


@torch.no_grad()
def nelbo_per_sequence(objective: Objective, model: torch.nn.Module, batches: Iterable[torch.Tensor],
                       t_min: float, seed: int = 0, device="cpu") -> torch.Tensor:
    """One estimate of E[NELBO] per sequence (nats) per batch [B, L]: the objective's token mean
    times L, with fresh antithetic times and noise per batch (batches are independent draws)."""
    out = []
    for i, x0 in enumerate(batches):
        x0 = x0.to(device)
        t = time_sampling.antithetic_times(x0.shape[0], t_min, torch.Generator().manual_seed(seed + i))
        noise = torch.Generator(device=device).manual_seed(seed + i)
        out.append(float(objective(model, x0, t, noise)) * x0.shape[1])
    return torch.tensor(out, dtype=torch.float64)


def true_nll_per_token(chain: MarkovChain, tokens: torch.Tensor) -> float:
    """Mean -log p(x) / L of sequences [B, L] under the source; a sequence still holding a
    [MASK] (or any id >= V) has no probability: +inf."""
    tokens = tokens.cpu().long()
    if bool((tokens >= chain.num_symbols).any()):
        return math.inf
    return float(-chain.log_prob(tokens).mean()) / tokens.shape[1]


def sample_scores(chain: MarkovChain, tokens: torch.Tensor) -> dict[str, float]:
    """Exact NLL per token and pooled unigram / bigram entropies of samples [B, L]."""
    return {"true_nll": true_nll_per_token(chain, tokens),
            "unigram_entropy": empirical_entropy(tokens.cpu(), chain.num_symbols, 1),
            "bigram_entropy": empirical_entropy(tokens.cpu(), chain.num_symbols, 2)}


def validation_nll_per_token(chain: MarkovChain, batches: Iterable[torch.Tensor]) -> float:
    """Exact NLL per token of held-out sequences."""
    tokens = torch.cat([b.long() for b in batches])
    return true_nll_per_token(chain, tokens)


def synthetic_metrics(job: JobConfig, model: torch.nn.Module | None, data: Datasets, process: Process,
                      device, max_batches: int | None) -> dict[str, float]:
    """The exact metrics of a run on a known source ({} for any other source): for ``model`` (a
    diffusion backbone; None skips it) and for the oracle under the same process, on the same
    ``max_batches`` validation batches and with the job's sampler settings."""
    chain = data.exact_law
    if chain is None:
        return {}
    seq_len, ev = data.config.seq_len, job.eval
    batches = list(data.eval_batches(job.train.micro_batch, name=metric_names.VALIDATION))[:max_batches]
    held = torch.cat(batches)
    reference = validation_nll_per_token(chain, batches)
    metrics = {metric_names.TRUE_NLL: reference, metric_names.ENTROPY_RATE: chain.entropy_rate(),
               metric_names.source_entropy("unigram"): empirical_entropy(held, chain.num_symbols, 1),
               metric_names.source_entropy("bigram"): empirical_entropy(held, chain.num_symbols, 2)}
    rows = torch.tensor([b.shape[0] for b in batches], dtype=torch.float64)

    def objective(m, x0, t, generator=None):  # the diffusion loss, whatever the job's backbone
        return diffusion_loss(m, process.xdlm, process.schedule, x0, t, generator, job.diffusion.loss_backend)

    for oracle, denoiser in ((False, model), (True, build_oracle(data, process))):
        if denoiser is None:
            continue
        dev = "cpu" if oracle else device
        per_seq = nelbo_per_sequence(objective, denoiser, batches, job.diffusion.t_min, seed=1234, device=dev)
        metrics[metric_names.nelbo_gap(oracle)] = float((per_seq * rows).sum() / rows.sum()) / seq_len - reference
        for steps in ev.sample_steps:
            tokens = generate(denoiser, process.xdlm, process.schedule, ev.num_samples, seq_len, steps,
                              ev.sampler, ev.top_p, seed=steps, device=dev)
            scores = sample_scores(chain, tokens)
            metrics[metric_names.true_nll(steps, oracle)] = scores["true_nll"]
            for kind in ("unigram", "bigram"):
                metrics[metric_names.pooled_entropy(kind, steps, oracle)] = scores[f"{kind}_entropy"]
    return metrics
