"""The evaluation suite shared by the end of training and ``xdlm eval``: zero-shot likelihood
on held-out sets and generation quality at several sampler step counts, under the names of
``xdlm.eval.metric_names`` (so both land on the same charts)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from xdlm.eval import metric_names
from xdlm.eval.generation import generate, generative_perplexity, mean_sample_entropy
from xdlm.eval.likelihood import nelbo_sums, perplexity
from xdlm.objective import Objective, Process


def likelihood_metrics(objective: Objective, model: torch.nn.Module, data, eval_sets: list[str],
                       micro_batch: int, device, t_min: float, max_batches: int | None) -> dict[str, float]:
    """NELBO and its perplexity bound on each of ``eval_sets`` (``validation`` or a zero-shot set)."""
    metrics: dict[str, float] = {}
    for name in eval_sets:
        total, count = nelbo_sums(objective, model, data.eval_batches(micro_batch, name=name), device,
                                  t_min, max_batches=max_batches)
        if count == 0:
            raise ValueError(f"evaluation of {name!r} scored no tokens (max_batches={max_batches}): "
                             "no number to report")
        metrics[metric_names.nelbo(name)] = total / count
        metrics[metric_names.ppl(name)] = perplexity(total / count)
    return metrics


def generation_metrics(model: torch.nn.Module, process: Process, sampler: str, top_p: float | None,
                       seq_len: int, sample_steps: list[int], num_samples: int,
                       scorer: Callable | None, device) -> dict[str, float]:
    """Sample entropy (and generative perplexity under ``scorer``) at each step count."""
    metrics: dict[str, float] = {}
    for steps in sample_steps:
        tokens = generate(model, process.xdlm, process.schedule, num_samples, seq_len, steps,
                          sampler, top_p, seed=steps, device=device)
        metrics[metric_names.sample_entropy(steps)] = mean_sample_entropy(tokens)
        if scorer is not None:
            metrics[metric_names.generative_ppl(steps)] = generative_perplexity(scorer, tokens.to(device))
    return metrics
