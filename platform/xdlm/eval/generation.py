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


TRAJECTORY_FORMAT = "xdlm.trajectory/1"


def trajectory_payload(recorder: sampling.TrajectoryRecorder, token_text: Callable[[int], str],
                       **meta) -> dict:
    """A recorded denoising trajectory as plain JSON data (the ``trajectories/*.json`` artifact).

    ``samples[i]["tokens"][j]``: the ids of sample i after step j ([S + 1] lists of L ids, j = 0
    the prior draw); ``samples[i]["events"][j - 1]``: what step j did to each position, as
    indices into ``events`` (``sampling.EVENTS``); ``counts[j - 1]``: how many positions of all
    recorded samples had each event at step j; ``vocab``: the text of every id that occurs.
    ``meta`` (k, steps, schedule, run, ...) is stored as given.
    """
    samples, ids = [], set()
    for row in range(recorder.tokens[0].shape[0]):
        tokens = [step[row].tolist() for step in recorder.tokens]
        samples.append({"tokens": tokens, "events": [step[row].tolist() for step in recorder.events]})
        ids.update(i for step in tokens for i in step)
    counts = [[int((step == code).sum()) for code in range(len(sampling.EVENTS))] for step in recorder.events]
    vocab = {str(i): ("[MASK]" if i == recorder.mask_id else token_text(i)) for i in sorted(ids)}
    return {"format": TRAJECTORY_FORMAT, **meta, "mask_id": recorder.mask_id, "events": list(sampling.EVENTS),
            "times": recorder.times, "counts": counts, "vocab": vocab, "samples": samples}


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
