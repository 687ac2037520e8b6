"""The runs of a study, read back from MLflow, as points (N, D, C, L) and training curves.

``EXPERIMENT_OR_SWEEP`` names a sweep (its trials carry the tag ``xdlm.sweep``) or an MLflow
experiment.  Each usable run becomes one ``Point`` (its last finite loss with the tokens and
FLOPs logged at that step) plus its loss history; every run left out is an ``Exclusion`` with
the reason.  Nothing is read from a worker's files: params, tags and metric histories only.

The data contract (docs/scaling.md): tags ``xdlm.k``, ``xdlm.scaling.budget``, ``xdlm.scaling.size``,
``xdlm.branch.parent_run_id``, ``xdlm.branch.horizon``; params ``params.non_embedding`` (older runs:
the one-point metric ``params/non_embedding``), ``optim.warmup_steps``, ``train.global_batch``,
``data.seq_len``, ``model.n_layers``, ``model.hidden``; metric histories: the loss, ``tokens``,
``flops``, ``flops_with_embedding``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from mlflow.entities import ViewType

from xdlm.errors import UserError
from xdlm.eval import metric_names
from xdlm.tracking.runs import make_client

ANALYSIS_KIND = "scaling_analysis"
NOT_TRIALS = ("sweep", ANALYSIS_KIND, "oracle_study")
"""``xdlm.kind`` of runs that summarise others and are never points themselves."""
COMPARABLE = ("data.source", "data.seq_len", "data.tokenizer")
"""Params that must agree between points: runs that differ belong to another study."""


@dataclass
class Point:
    run_id: str
    name: str
    k: float
    n: float
    """Non-embedding parameters."""
    d: float
    """Training tokens at the loss's step."""
    c: float
    """Training FLOPs (non-embedding 6ND + attention) at that step."""
    loss: float
    step: int
    budget: float | None
    size: str
    n_total: float | None = None
    c_with_embedding: float | None = None
    curve_d: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Tokens of each evaluation after warm-up."""
    curve_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    parent_run_id: str | None = None
    horizon: float | None = None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def is_branch(self) -> bool:
        return self.parent_run_id is not None


@dataclass(frozen=True)
class Exclusion:
    run_id: str
    name: str
    reason: str


@dataclass
class Study:
    target: str
    kind: str
    """``sweep`` or ``experiment``."""
    experiment_id: str
    tracking_uri: str
    metric: str
    points: list[Point]
    excluded: list[Exclusion]
    entropy_rate: float | None = None
    """The source's entropy rate (nats/token) when it is known (``data.source: markov``)."""
    true_nll: float | None = None
    """Exact NLL per token of the validation sequences: the floor at this sequence length."""


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def find_runs(client, target: str) -> tuple[str, list, str]:
    """(kind, runs, experiment id) of the sweep or experiment ``target``; ``A,B`` names several
    sweeps of one study (a grid extended by a second sweep: a size added where the minimum sat at
    the edge), pooled as one."""
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    ids = [e.experiment_id for e in experiments]
    names = [name.strip() for name in target.split(",") if name.strip()]
    runs = []
    for name in names:
        found = client.search_runs(ids, filter_string=f"tags.`xdlm.sweep` = '{name}'", max_results=50000) if ids else []
        if not found and len(names) > 1:
            raise UserError(f"sweep {name!r} (of {target!r}): no runs tagged xdlm.sweep={name!r} at {client.tracking_uri}")
        runs += found
    runs = [r for r in runs if r.data.tags.get("xdlm.kind") not in NOT_TRIALS]
    if runs:
        homes = Counter(r.info.experiment_id for r in runs)
        if len(homes) > 1:
            names = {e.experiment_id: e.name for e in experiments}
            raise UserError(f"sweep {target!r}: runs of another experiment mixed in (its trials are in experiments "
                            f"{', '.join(repr(names[i]) for i in sorted(homes))}); analyse one experiment by name")
        return "sweep", runs, runs[0].info.experiment_id
    experiment = client.get_experiment_by_name(target)
    if experiment is None:
        known = ", ".join(sorted(e.name for e in experiments)) or "none"
        raise UserError(f"no sweep (tag xdlm.sweep) and no MLflow experiment named {target!r} at "
                        f"{client.tracking_uri} (experiments: {known})")
    runs = client.search_runs([experiment.experiment_id], max_results=50000)
    runs = [r for r in runs if r.data.tags.get("xdlm.kind") not in NOT_TRIALS]
    sweeps = sorted({r.data.tags["xdlm.sweep"] for r in runs if r.data.tags.get("xdlm.sweep")})
    if len(sweeps) > 1:
        raise UserError(f"experiment {target!r} mixes the runs of several sweeps ({', '.join(sweeps)}): "
                        "name one sweep (xdlm scaling fit SWEEP)")
    if not runs:
        raise UserError(f"experiment {target!r} has no runs to fit")
    return "experiment", runs, experiment.experiment_id


def parameter_count(run, key: str) -> float | None:
    """``params.<key>`` (an MLflow param), else the one-point metric ``params/<key>`` of older runs."""
    return _float(run.data.params.get(f"params.{key}")) or _float(run.data.metrics.get(f"params/{key}"))


def _flops_per_token(params: dict[str, str], n: float) -> float | None:
    # the same count as xdlm.models.flops_per_token: 6 N + 12 n_layers hidden seq_len
    layers, hidden, seq = (_float(params.get(k)) for k in ("model.n_layers", "model.hidden", "data.seq_len"))
    return 6 * n + (12 * layers * hidden * seq if layers and hidden and seq else 0.0)


def read_point(client, run, metric: str) -> Point | str:
    """The run's ``Point``, or the reason it cannot be one."""
    info, params, tags = run.info, run.data.params, run.data.tags
    if info.status == "FAILED":
        return "diverged (run FAILED)"
    if info.status != "FINISHED":
        return f"not finished (status {info.status})"
    losses = _history(client, info.run_id, metric)
    if not losses:
        return f"no {metric} logged"
    step = max(losses)
    if not math.isfinite(losses[step]) or not all(math.isfinite(v) for v in losses.values()):
        return f"diverged (non-finite {metric})"
    warmup = _float(params.get("optim.warmup_steps")) or 0.0
    if step <= warmup:
        return f"still in warm-up (last evaluation at step {step} <= optim.warmup_steps {warmup:g})"
    n = parameter_count(run, "non_embedding")
    if n is None:
        return "no parameter count (param params.non_embedding / metric params/non_embedding)"
    k = _float(tags.get("xdlm.k")) if tags.get("xdlm.k") is not None else _float(params.get("diffusion.k"))
    if k is None:
        return "no mixing ratio (tag xdlm.k / param diffusion.k)"
    tokens = _history(client, info.run_id, "tokens")
    per_step = (_float(params.get("train.global_batch")) or 0.0) * (_float(params.get("data.seq_len")) or 0.0)

    def tokens_at(s: int) -> float | None:
        return tokens.get(s, per_step * s if per_step else None)

    d = tokens_at(step)
    if not d:
        return "no token count (metric tokens, or params train.global_batch and data.seq_len)"
    flops = _history(client, info.run_id, "flops")
    c = flops.get(step) or d * _flops_per_token(params, n)
    with_embedding = _history(client, info.run_id, "flops_with_embedding").get(step)
    curve = sorted((tokens_at(s), v) for s, v in losses.items() if s > warmup and tokens_at(s))
    budget = _float(tags.get("xdlm.scaling.budget"))
    size = tags.get("xdlm.scaling.size") or params.get("model.size") or f"N={n:.3g}"
    if size == "custom" and params.get("model.hidden"):
        size = f"{params.get('model.n_layers')}x{params.get('model.hidden')}"
    return Point(info.run_id, info.run_name or info.run_id, k, n, float(d), float(c), float(losses[step]), step,
                 budget, size, parameter_count(run, "total"), with_embedding,
                 np.array([t for t, _ in curve], dtype=float), np.array([v for _, v in curve], dtype=float),
                 tags.get("xdlm.branch.parent_run_id") or None, _float(tags.get("xdlm.branch.horizon")),
                 {key: params[key] for key in COMPARABLE if key in params})


def _mixed_in(points: list[Point]) -> dict[str, str]:
    """run id -> reason, for points whose study params differ from the majority's."""
    reasons = {}
    for key in COMPARABLE:
        values = Counter(p.params.get(key) for p in points)
        if len(values) <= 1:
            continue
        majority, _ = values.most_common(1)[0]
        for p in points:
            if p.params.get(key) != majority and p.run_id not in reasons:
                reasons[p.run_id] = f"other experiment mixed in ({key}={p.params.get(key)}, the rest {majority})"
    return reasons


def load_study(tracking_uri: str, target: str, metric: str = metric_names.nelbo()) -> Study:
    client = make_client(tracking_uri)
    kind, runs, experiment_id = find_runs(client, target)
    points, excluded = [], []
    for run in runs:
        point = read_point(client, run, metric)
        if isinstance(point, str):
            excluded.append(Exclusion(run.info.run_id, run.info.run_name or run.info.run_id, point))
        else:
            points.append(point)
    for run_id, reason in _mixed_in(points).items():
        point = next(p for p in points if p.run_id == run_id)
        excluded.append(Exclusion(run_id, point.name, reason))
        points.remove(point)
    if not points:
        diverged = sum(e.reason.startswith("diverged") for e in excluded)
        if diverged == len(excluded):
            raise UserError(f"{kind} {target!r}: all {diverged} runs diverged (FAILED or non-finite {metric}): "
                            "nothing to fit")
        raise UserError(f"{kind} {target!r}: no usable run ({len(excluded)} excluded: "
                        + "; ".join(f"{e.name}: {e.reason}" for e in excluded[:5]) + ")")
    study = Study(target, kind, experiment_id, tracking_uri, metric, points, excluded)
    by_id = {r.info.run_id: r for r in runs}
    rates = [_float(by_id[p.run_id].data.metrics.get(metric_names.ENTROPY_RATE)) for p in points]
    nlls = [_float(by_id[p.run_id].data.metrics.get(metric_names.TRUE_NLL)) for p in points]
    rates, nlls = [r for r in rates if r is not None], [v for v in nlls if v is not None]
    study.entropy_rate = float(np.median(rates)) if rates else None
    study.true_nll = float(np.median(nlls)) if nlls else None
    return study
