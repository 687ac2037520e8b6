"""``xdlm eval`` and ``xdlm sample``: score or sample a trained run from its latest checkpoint,
in this process (no Ray needed: evaluation of a checkpoint is a single-process job)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.entities import Metric

from xdlm.checkpoint import RUN_RECORD, has_checkpoint, load_model_from_run, scan
from xdlm.config import JobConfig
from xdlm.data.build import build_datasets
from xdlm.diffusion import sampling
from xdlm.errors import UserError
from xdlm.eval import metric_names
from xdlm.eval.evaluators import load_evaluator
from xdlm.eval.generation import trajectory_payload
from xdlm.eval.suite import generation_metrics, likelihood_metrics
from xdlm.eval.synthetic import synthetic_metrics
from xdlm.models import backbone_info
from xdlm.objective import Process, build_process, make_objective
from xdlm.tracking.runs import make_client

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    model: torch.nn.Module
    job: JobConfig
    process: Process


def resolve_run_dir(run: str, storage_path: str = "runs") -> Path:
    """A run directory, or a run name under ``storage_path``."""
    for candidate in (Path(run), Path(storage_path) / run):
        if candidate.is_dir():
            if not has_checkpoint(candidate):
                raise UserError(f"run {run!r}: no checkpoint under {candidate} (not an xdlm run, or it "
                                "stopped before its first checkpoint)")
            return candidate
    raise UserError(f"run {run!r}: neither a directory nor a run name under {storage_path}/")


def load_run(run: str, device: str = "cpu", storage_path: str = "runs") -> LoadedRun:
    model, job = load_model_from_run(resolve_run_dir(run, storage_path), device)
    model.eval()
    mask_id = build_datasets(job.data).tokenizer.mask_id
    return LoadedRun(model, job, build_process(job, model.vocab_size, mask_id))


def log_to_run(run: str, metrics: dict[str, float], storage_path: str = "runs") -> str | None:
    """Add ``metrics`` to the run's own MLflow run, at the step of the checkpoint evaluated, so a
    run evaluated again lands on the same charts as its training.  Returns the MLflow run id, or
    None when the run was not tracked or the tracker does not answer (then nothing is lost: the
    numbers were printed)."""
    run_dir = resolve_run_dir(run, storage_path)
    record_path = run_dir / RUN_RECORD
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if not record.get("mlflow_run_id") or not record.get("tracking_uri"):
        return None
    step = scan(str(run_dir.resolve()))[0][0].step  # the manifest has it: no need to load the weights again
    now = int(time.time() * 1000)
    try:
        make_client(record["tracking_uri"]).log_batch(
            record["mlflow_run_id"], metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
    except Exception as err:
        log.warning("could not log the evaluation to MLflow run %s: %s", record["mlflow_run_id"], err)
        return None
    return record["mlflow_run_id"]


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
    """Validation and zero-shot NELBO / PPL, the unigram baseline, and generation quality at
    ``sample_steps``, under the same metric names training logs."""
    if max_batches is not None and max_batches < 1:
        raise UserError(f"--max-batches must be >= 1, got {max_batches}")
    if num_samples is not None and num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {num_samples}")
    loaded = load_run(run, device, storage_path)
    job = loaded.job
    if eval_sets is not None:
        job.data.eval_sets = list(eval_sets)
    data = build_datasets(job.data)
    objective = make_objective(job, loaded.process)
    metrics = likelihood_metrics(objective, loaded.model, data, [metric_names.VALIDATION, *data.eval_sets],
                                 job.train.micro_batch, device, job.diffusion.t_min, max_batches)
    metrics[metric_names.UNIGRAM_PPL] = float(data.unigram_baseline().perplexity)
    generates = backbone_info(job.model.backbone).generates
    if sample_steps:
        job.eval.sample_steps = list(sample_steps)
    if num_samples:
        job.eval.num_samples = num_samples
    metrics.update(synthetic_metrics(job, loaded.model if generates else None, data, loaded.process, device,
                                     max_batches))
    if not generates:
        return metrics
    scorer = load_evaluator(evaluator or job.eval.evaluator, data.tokenizer, device)
    metrics.update(generation_metrics(
        loaded.model, loaded.process, job.eval.sampler, job.eval.top_p, job.data.seq_len,
        sample_steps or job.eval.sample_steps, num_samples or job.eval.num_samples, scorer, device))
    return metrics


def sample_run(run: str, **options) -> list[str]:
    """Decoded samples; ``prefix`` fixes the first tokens (never noised) and the rest is generated
    (the options of ``sample_run_recorded``)."""
    return sample_run_recorded(run, **options)[0]


def sample_run_recorded(
    run: str,
    num_samples: int = 4,
    steps: int = 32,
    prefix: str | None = None,
    top_p: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    storage_path: str = "runs",
    trajectory_rows: int = 0,
) -> tuple[list[str], dict | None]:
    """``sample_run``, and with ``trajectory_rows`` > 0 the denoising trajectory of that many of
    the samples (``generation.trajectory_payload``); the samples drawn are the same either way."""
    if num_samples < 1 or steps < 1:
        raise UserError(f"--num-samples and --steps must be >= 1, got {num_samples} and {steps}")
    loaded = load_run(run, device, storage_path)
    job = loaded.job
    if not backbone_info(job.model.backbone).generates:
        raise UserError(f"sample: run {run!r} is a {job.model.backbone} model, which does not generate "
                         "through the diffusion sampler; sample from a diffusion run")
    tokenizer = build_datasets(job.data).tokenizer
    shape = (num_samples, job.data.seq_len)
    fixed_mask = fixed_tokens = None
    if prefix:
        start = [tokenizer.bos_id] if tokenizer.bos_id is not None else []  # symbol sources have none
        ids = [*start, *tokenizer.encode_batch([prefix])[0]][: job.data.seq_len]
        fixed_tokens = torch.zeros(shape, dtype=torch.long)
        fixed_tokens[:, : len(ids)] = torch.tensor(ids)
        fixed_mask = torch.zeros(shape, dtype=torch.bool)
        fixed_mask[:, : len(ids)] = True
    sampler = sampling.get(job.eval.sampler, loaded.process.xdlm, loaded.process.schedule, steps=steps, top_p=top_p)
    gen = torch.Generator().manual_seed(seed)
    recorder = sampling.TrajectoryRecorder(min(trajectory_rows, num_samples)) if trajectory_rows > 0 else None
    with torch.no_grad():
        if job.eval.sampler == "llada":  # it conditions on a prompt: the prefix is one, the rest its answer
            prompt = None if fixed_tokens is None else fixed_tokens[:, : int(fixed_mask[0].sum())]
            tokens = sampler.sample(lambda z, t: loaded.model(z, t.float()), shape, prompt=prompt, generator=gen,
                                    device=device, recorder=recorder)
        else:
            tokens = sampler.sample(lambda z, t: loaded.model(z, t.float()), shape, generator=gen,
                                    fixed_mask=fixed_mask, fixed_tokens=fixed_tokens, device=device,
                                    recorder=recorder)
    texts = [tokenizer.decode(row.tolist()) for row in tokens]
    if recorder is None:
        return texts, None
    payload = trajectory_payload(
        recorder, lambda i: tokenizer.decode([i]), run=job.name, k=job.diffusion.k, steps=steps,
        schedule=job.diffusion.schedule, sampler=job.eval.sampler, top_p=top_p, seed=seed,
        seq_len=job.data.seq_len, prefix=prefix, step=scan(str(resolve_run_dir(run, storage_path).resolve()))[0][0].step)
    for sample, text in zip(payload["samples"], texts, strict=False):
        sample["text"] = text
    return texts, payload


def mlflow_run_of(run: str, storage_path: str = "runs") -> tuple[str, str] | None:
    """(tracking URI, MLflow run id) of a run directory or name, None when it was not tracked."""
    record_path = resolve_run_dir(run, storage_path) / RUN_RECORD
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if not record.get("mlflow_run_id") or not record.get("tracking_uri"):
        return None
    return record["tracking_uri"], record["mlflow_run_id"]


def trajectory_artifact(payload: dict) -> str:
    """Where a trajectory goes among its run's artifacts (the dashboard lists ``trajectories/``)."""
    return f"trajectories/trajectory_{payload['steps']}steps_seed{payload['seed']}.json"
