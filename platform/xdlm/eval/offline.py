"""``xdlm eval`` and ``xdlm sample``: score or sample a trained run from its latest checkpoint,
in this process (no Ray needed: evaluation of a checkpoint is a single-process job)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from xdlm.config import JobConfig
from xdlm.data.build import build_datasets
from xdlm.diffusion import XDLM, schedules
from xdlm.eval.generation import generate, generative_perplexity, unigram_entropy
from xdlm.eval.likelihood import nelbo_sums, perplexity
from xdlm.train.objective import make_objective
from xdlm.train.restore import load_model_from_run


@dataclass
class LoadedRun:
    model: torch.nn.Module
    job: JobConfig
    process: XDLM
    schedule: schedules.Schedule


def resolve_run_dir(run: str, storage_path: str = "runs") -> Path:
    """A run directory, or a run name under ``storage_path``."""
    for candidate in (Path(run), Path(storage_path) / run):
        if candidate.is_dir():
            return candidate
    raise ValueError(f"run {run!r}: neither a directory nor a run name under {storage_path}/")


def load_run(run: str, device: str = "cpu", storage_path: str = "runs") -> LoadedRun:
    model, job = load_model_from_run(resolve_run_dir(run, storage_path), device)
    model.eval()
    vocab = model.vocab_size
    mask_id = build_datasets(job.data).tokenizer.mask_id
    process = XDLM(vocab, mask_id, job.diffusion.k)
    return LoadedRun(model, job, process, schedules.get(job.diffusion.schedule, **job.diffusion.schedule_params))


def evaluate_run(
    run: str,
    eval_sets: list[str] | None = None,
    sample_steps: list[int] | None = None,
    num_samples: int | None = None,
    max_batches: int | None = 50,
    evaluator: str | None = None,
    device: str = "cpu",
    storage_path: str = "runs",
) -> dict[str, float]:
    """Zero-shot NELBO / PPL on ``eval_sets`` and generation quality at ``sample_steps``."""
    loaded = load_run(run, device, storage_path)
    job = loaded.job
    if eval_sets is not None:
        job.data.eval_sets = list(eval_sets)
    data = build_datasets(job.data)
    objective = make_objective(job.model.backbone, loaded.process, loaded.schedule, job.diffusion.loss_backend)
    metrics: dict[str, float] = {}
    for name in ["validation", *data.eval_sets]:
        total, count = nelbo_sums(objective, loaded.model, data.eval_batches(job.train.micro_batch, name=name),
                                  device, job.diffusion.t_min, max_batches=max_batches)
        metrics[f"{name}/nelbo"] = total / max(count, 1)
        metrics[f"{name}/ppl"] = perplexity(total / max(count, 1))
    metrics["validation/unigram_ppl"] = float(data.unigram_baseline().perplexity)
    if job.model.backbone == "causal_dit":
        return metrics
    from xdlm.eval.evaluators import load_evaluator

    scorer = load_evaluator(evaluator or job.eval.evaluator, data.tokenizer, device)
    for steps in sample_steps or job.eval.sample_steps:
        tokens = generate(loaded.model, loaded.process, loaded.schedule, num_samples or job.eval.num_samples,
                          job.data.seq_len, steps, job.eval.sampler, job.eval.top_p, seed=steps, device=device)
        metrics[f"gen/entropy_{steps}steps"] = unigram_entropy(tokens)
        if scorer is not None:
            metrics[f"gen/ppl_{steps}steps"] = generative_perplexity(scorer, tokens)
    return metrics


def sample_run(
    run: str,
    num_samples: int = 4,
    steps: int = 32,
    prefix: str | None = None,
    top_p: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    storage_path: str = "runs",
) -> list[str]:
    """Decoded samples; ``prefix`` fixes the first tokens (never noised) and the rest is generated."""
    from xdlm.diffusion import sampling

    loaded = load_run(run, device, storage_path)
    job = loaded.job
    if job.model.backbone == "causal_dit":
        raise ValueError("sample: this run is an autoregressive model; sample from a diffusion run")
    tokenizer = build_datasets(job.data).tokenizer
    shape = (num_samples, job.data.seq_len)
    fixed_mask = fixed_tokens = None
    if prefix:
        ids = [tokenizer.bos_id, *tokenizer.encode_batch([prefix])[0]][: job.data.seq_len]
        fixed_tokens = torch.zeros(shape, dtype=torch.long)
        fixed_tokens[:, : len(ids)] = torch.tensor(ids)
        fixed_mask = torch.zeros(shape, dtype=torch.bool)
        fixed_mask[:, : len(ids)] = True
    sampler = sampling.get(job.eval.sampler, loaded.process, loaded.schedule, steps=steps, top_p=top_p)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tokens = sampler.sample(lambda z, t: loaded.model(z, t.float()), shape, generator=gen,
                                fixed_mask=fixed_mask, fixed_tokens=fixed_tokens, device=device)
    return [tokenizer.decode(row.tolist()) for row in tokens]
