"""What the driver puts on a run's MLflow page beside the metrics: who and what started it, a
description a reviewer reads first, the curves as figures, and why a run failed.

- tags ``mlflow.user``, ``mlflow.source.name`` (the command), ``mlflow.source.type`` (JOB):
  the run table's User and Source columns;
- ``mlflow.note.content``: the run page's description (markdown), written when the run opens
  and again at its end with the final numbers;
- ``figures/curves.{png,html}``: loss and validation perplexity against tokens and FLOPs;
- a failed run: the exception as the tag ``xdlm.failure``, its traceback as
  ``failure/traceback.txt`` (the driver's own log is logged for every run, ``logs/``).
"""

from __future__ import annotations

import getpass
import os
import sys
import traceback
from typing import Any

from xdlm.config import JobConfig
from xdlm.eval import metric_names
from xdlm.tracking.figures import Panel, log_curve_figures
from xdlm.tracking.runs import TRAINING_LAYOUT_QUERY, make_client, ui_url

NOTE_TAG = "mlflow.note.content"
COMMAND_ENV = "XDLM_COMMAND"
"""The command line the user typed, set by ``xdlm.cli.main`` (the run's Source in MLflow)."""
FAILURE_TAG = "xdlm.failure"
TRACEBACK_ARTIFACT = "failure/traceback.txt"
FIGURES_STEM = "figures/curves"


def source_tags() -> dict[str, str]:
    """User and source of the run as MLflow names them (the run table's columns)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = os.environ.get("USER", "unknown")
    # a sweep's trials open their runs inside Ray workers, whose argv is Ray's own command line:
    # the CLI leaves the user's command in the environment, which local Ray workers inherit
    command = os.environ.get(COMMAND_ENV)
    if not command:
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        if program == "default_worker.py":
            command = "xdlm (a Ray worker of a sweep or job)"
        else:
            if program in ("cli.py", "__main__.py", "-m", "-c") or program.startswith("python"):
                program = "xdlm"
            command = " ".join([program, *sys.argv[1:]])
    command = command[:500]
    return {"mlflow.user": user, "mlflow.source.name": command, "mlflow.source.type": "JOB"}


def resolved_model_params(job: JobConfig) -> dict[str, int]:
    """``model.n_layers``, ``model.hidden``, ``model.n_heads`` with a size preset's real numbers
    (the config leaves them None for a named size)."""
    n_layers, hidden, n_heads = job.model.dims()
    return {"n_layers": n_layers, "hidden": hidden, "n_heads": n_heads}


def description(job: JobConfig, metrics: dict[str, float] | None = None, parent_link: str | None = None,
                tags: dict[str, Any] | None = None) -> str:
    """The run's description (markdown). ``metrics``: the run's latest metrics (None while it
    runs); ``parent_link``: the sweep's or parent run's page."""
    n_layers, hidden, n_heads = job.model.dims()
    planned = job.train.steps * job.train.global_batch * job.data.seq_len
    lines = [
        f"**XDLM k = {job.diffusion.k:g}**, schedule `{job.diffusion.schedule}`, "
        f"model `{job.model.backbone}` size `{job.model.size}` ({n_layers} layers x {hidden}, {n_heads} heads), "
        f"data `{job.data.source}` (L = {job.data.seq_len}), optimizer `{job.optim.lr_schedule}` lr {job.optim.lr:g}.",
        "",
    ]
    metrics = metrics or {}
    tokens = metrics.get(metric_names.TOKENS)
    if metrics:
        lines.append(f"Trained on {fmt_count(tokens)} tokens ({fmt_count(metrics.get(metric_names.FLOPS))} FLOPs, "
                     f"{fmt_count(metrics.get(metric_names.FLOPS_WITH_EMBEDDING))} with the output head; "
                     f"{job.train.steps} steps planned).")
        ppl, unigram = metrics.get(metric_names.ppl()), metrics.get(metric_names.UNIGRAM_PPL)
        if ppl is not None:
            against = f" against the unigram baseline {unigram:.1f}" if unigram is not None else ""
            lines.append(f"Final validation perplexity (bound) **{ppl:.1f}**{against}.")
    else:
        lines.append(f"Training: {job.train.steps} steps, {fmt_count(planned)} tokens planned "
                     "(the final numbers are written here when the run ends).")
    belongs = []
    tags = {**job.tracking.tags, **(tags or {})}
    if tags.get("xdlm.sweep"):
        belongs.append(f"sweep `{tags['xdlm.sweep']}`")
    if parent_link:
        belongs.append(f"[parent run]({parent_link})")
    belongs += [f"`{k}` = `{v}`" for k, v in sorted(job.tracking.tags.items())]
    if belongs:
        lines += ["", "Part of: " + ", ".join(belongs) + "."]
    lines += ["", "Config: artifact `config/job.yaml`; curves: `figures/curves.html`; samples: table "
              f"`{metric_names.SAMPLES_TABLE}` (Evaluation tab)."]
    return "\n".join(lines)


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to a run's page for the description: absolute on a tracking server, relative
    (``#/experiments/...``, resolved by whichever UI shows the description) for a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return ui_url(tracking_uri, experiment_id, run_id)
    return f"#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_LAYOUT_QUERY}"


def fmt_count(value: float | None) -> str:
    if value is None:
        return "?"
    for factor, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:.3g}"


def log_figures(tracking_uri: str, run_id: str, unigram_ppl: float | None) -> list[str]:
    """Loss and validation perplexity against tokens and FLOPs (PNG + offline HTML)."""
    panels = [
        Panel("training loss", (metric_names.TRAIN_LOSS, metric_names.TRAIN_LOSS_SMOOTH, metric_names.nelbo())),
        Panel("validation perplexity", (metric_names.ppl(),), log_y=True,
              baseline=(unigram_ppl, "unigram baseline") if unigram_ppl else None),
    ]
    return log_curve_figures(make_client(tracking_uri), run_id, panels,
                             (metric_names.TOKENS, metric_names.FLOPS), FIGURES_STEM)


def failure_summary(err: BaseException) -> str:
    """One line naming the exception that ended the run: for a worker's failure, the worker's
    own exception (Ray wraps it) and its rank."""
    where = ""
    failures = getattr(err, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        rank = min(failures)
        err, where = failures[rank], f" (worker rank {rank})"
    cause = getattr(err, "cause", None)  # RayTaskError: the user's exception
    if isinstance(cause, BaseException):
        err = cause
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    message = lines[-1].strip() if type(err).__module__.startswith("ray") and lines else (lines[0] if lines else "")
    return f"{type(err).__name__}: {message}{where}"[:1000]


def failure_traceback(err: BaseException) -> str:
    """The driver's traceback, then each failed worker's (Ray carries them as text)."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    for rank, failure in sorted((getattr(err, "worker_failures", None) or {}).items()):
        text += f"\n--- worker rank {rank} ---\n" + "".join(
            traceback.format_exception(type(failure), failure, failure.__traceback__))
    return text
