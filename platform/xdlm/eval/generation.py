"""Generation quality: samples from the diffusion model, their unigram entropy and their
perplexity under an evaluator language model (generative perplexity)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from xdlm.diffusion import XDLM, sampling
from xdlm.diffusion.schedules import Schedule


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    process: XDLM,
    schedule: Schedule,
    num_samples: int,
    seq_len: int,
    steps: int,
    sampler: str = "ancestral",
    top_p: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
) -> torch.Tensor:
    """Draw ``num_samples`` sequences [num_samples, seq_len] with ``steps`` network calls each."""
    chosen = sampling.get(sampler, process, schedule, steps=steps, top_p=top_p)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        out.append(chosen.sample(lambda z, t: model(z, t.float()), (n, seq_len), generator=gen, device=device))
    return torch.cat(out)


def mean_sample_entropy(tokens: torch.Tensor) -> float:
    """Mean over samples [B, L] of the entropy (nats) of each sample's token histogram.

    Low values flag degenerate, repetitive text that a low generative perplexity can hide.
    """
    entropies = []
    for row in tokens:
        counts = torch.bincount(row).double()
        p = counts[counts > 0] / row.numel()
        entropies.append(float(-(p * p.log()).sum()))
    return sum(entropies) / len(entropies)


@torch.no_grad()
def generative_perplexity(scorer: Callable, tokens: torch.Tensor, batch_size: int = 16) -> float:
    """exp(-total log-likelihood / total scored tokens) of ``tokens`` under an evaluator LM.

    ``scorer(tokens [B, L]) -> (log-likelihood sums [B], scored token counts [B])``
    (``xdlm.eval.evaluators``).
    """
    total, count = 0.0, 0.0
    for start in range(0, tokens.shape[0], batch_size):
        ll, n = scorer(tokens[start : start + batch_size])
        total += float(ll.sum())
        count += float(n.sum())
    return math.exp(-total / count)
