"""What each dashboard page shows, read from MLflow through its client API (no web code here).

Runs are described by the platform's own tags and params (``xdlm.k``, ``xdlm.schedule``,
``xdlm.model_size``, ``xdlm.kind``, ``diffusion.*``, ``model.*``) and metrics (``tokens``,
``flops``, ``val/ppl``, ``val/unigram_ppl``, ``params/total``); anything missing shows as None.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from xdlm.eval import metric_names

X_AXES = ("step", "tokens", "flops")
"""What a curve can be drawn against: the step, or the counters logged beside every record."""

TRAJECTORY_DIR = "trajectories"
TRAJECTORY_TAG = "xdlm.trajectory"
"""Set on a run when a trajectory is logged to it: the newest one's artifact path."""
SCALING_KIND = "scaling_analysis"
SCALING_FIT = "scaling/fit.json"
FILTERS = ("experiment", "k", "schedule", "size", "status", "kind")


@dataclass
class RunRow:
    """One run as a researcher reads it in the runs table."""

    run_id: str
    experiment_id: str
    experiment: str
    name: str
    status: str
    kind: str
    k: str | None
    schedule: str | None
    size: str | None
    params: float | None
    tokens: float | None
    val_ppl: float | None
    unigram_ppl: float | None
    duration_s: float | None
    start_time: int
    sweep: str | None = None
    parent_run_id: str | None = None
    trajectory: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.status == "RUNNING"

    def value(self, name: str) -> str | None:
        """The row's value for a filter (``FILTERS``) as text."""
        return self.experiment_id if name == "experiment" else getattr(self, name)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def run_kind(tags: dict[str, str]) -> str:
    """``xdlm.kind`` when set (sweep, scaling_analysis, ...), else trial (of a sweep) or train."""
    if tags.get("xdlm.kind"):
        return tags["xdlm.kind"]
    if tags.get("xdlm.sweep"):
        return "trial"
    return "oracle" if tags.get("mlflow.runName", "").startswith("oracle-") else "train"


def parameter_count(run: Run) -> float | None:
    """Total parameters: a param or tag where the platform records it, else the older one-point
    ``params/total`` metric."""
    data = run.data
    for key in ("model.params_total", "model.params.total", "params.total", "params_total", "n_params"):
        for source in (data.params, data.tags):
            if _finite(source.get(key)) is not None:
                return _finite(source[key])
    return _finite(data.metrics.get("params/total"))


def model_size(run: Run) -> str | None:
    """The size preset, with its dimensions when the run recorded them (``custom`` always)."""
    params, tags = run.data.params, run.data.tags
    size = tags.get("xdlm.model_size") or params.get("model.size")
    dims = [params.get(f"model.{key}") for key in ("n_layers", "hidden")]
    if all(d not in (None, "None", "") for d in dims):
        return f"{size} ({dims[0]}x{dims[1]})" if size and size != "custom" else f"{dims[0]}x{dims[1]}"
    return size


def run_row(run: Run, experiment_name: str, now_ms: int | None = None) -> RunRow:
    info, data = run.info, run.data
    tags, params, metrics = data.tags, data.params, data.metrics
    end = info.end_time or (now_ms if info.status == "RUNNING" else None)
    return RunRow(
        run_id=info.run_id, experiment_id=info.experiment_id, experiment=experiment_name,
        name=info.run_name or info.run_id[:8], status=info.status, kind=run_kind(tags),
        k=tags.get("xdlm.k") or params.get("diffusion.k"),
        schedule=tags.get("xdlm.schedule") or params.get("diffusion.schedule"),
        size=model_size(run), params=parameter_count(run), tokens=_finite(metrics.get("tokens")),
        val_ppl=_finite(metrics.get(metric_names.ppl())), unigram_ppl=_finite(metrics.get(metric_names.UNIGRAM_PPL)),
        duration_s=(end - info.start_time) / 1000 if end and info.start_time else None,
        start_time=info.start_time or 0, sweep=tags.get("xdlm.sweep"),
        parent_run_id=tags.get("mlflow.parentRunId"), trajectory=tags.get(TRAJECTORY_TAG),
        metrics=dict(metrics),
    )


def experiments(client: MlflowClient) -> dict[str, str]:
    """id -> name of the active experiments."""
    return {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}


def runs_table(client: MlflowClient, experiment_ids: Sequence[str] | None = None,
               max_results: int = 1000) -> list[RunRow]:
    """Every run of the experiments (all when None), newest first."""
    names = experiments(client)
    ids = [e for e in (experiment_ids or list(names)) if e in names]
    if not ids:
        return []
    runs = client.search_runs(ids, max_results=max_results, order_by=["attributes.start_time DESC"])
    now = int(time.time() * 1000)
    return [run_row(run, names.get(run.info.experiment_id, run.info.experiment_id), now) for run in runs]


def filter_rows(rows: Iterable[RunRow], **wanted: str | None) -> list[RunRow]:
    """The rows whose ``FILTERS`` values equal every non-empty ``wanted`` one."""
    unknown = set(wanted) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filter(s) {sorted(unknown)}; filters: {', '.join(FILTERS)}")
    active = {name: value for name, value in wanted.items() if value}
    return [row for row in rows if all(row.value(name) == value for name, value in active.items())]


def filter_options(rows: Iterable[RunRow]) -> dict[str, list[str]]:
    """The values each filter can take among ``rows`` (sorted; numbers numerically)."""
    def key(v: str):
        number = _finite(v)
        return (0, number, "") if number is not None else (1, 0.0, v)

    rows = list(rows)
    return {name: sorted({v for r in rows if (v := r.value(name))}, key=key) for name in FILTERS}


# -- curves --------------------------------------------------------------------------------------

@dataclass
class Series:
    """One run's metric against an x axis, raw and smoothed."""

    run_id: str
    label: str
    x: list[float]
    y: list[float]
    smoothed: list[float]


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average: m_i = w m_(i-1) + (1 - w) y_i with m_(-1) = 0,
    reported as m_i / (1 - w^(i+1)), so the first point is y_0 itself and a constant stays
    constant.  ``weight`` in [0, 1): 0 returns the values unchanged."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, m = [], 0.0
    for i, y in enumerate(values):
        m = weight * m + (1.0 - weight) * y
        out.append(m / (1.0 - weight ** (i + 1)))
    return out


def interpolate(steps: Sequence[float], at_steps: Sequence[float], values: Sequence[float]) -> list[float | None]:
    """The counter ``values`` (logged at ``at_steps``, increasing) at each of ``steps``: exact where
    logged, linear in between (tokens and FLOPs grow linearly with the step), None outside."""
    pairs = sorted(zip(at_steps, values, strict=True))
    out: list[float | None] = []
    j = 0
    for s in steps:
        while j + 1 < len(pairs) and pairs[j + 1][0] <= s:
            j += 1
        if not pairs or s < pairs[0][0] or s > pairs[-1][0]:
            out.append(None)
        elif pairs[j][0] == s or j + 1 == len(pairs):
            out.append(pairs[j][1])
        else:
            (s0, v0), (s1, v1) = pairs[j], pairs[j + 1]
            out.append(v0 + (v1 - v0) * (s - s0) / (s1 - s0))
    return out


def metric_series(client: MlflowClient, run_id: str, metric: str, x_axis: str = "step",
                  weight: float = 0.0, label: str | None = None) -> Series:
    """``metric`` of one run against ``x_axis`` (``X_AXES``), in step order."""
    if x_axis not in X_AXES:
        raise ValueError(f"x axis must be one of {', '.join(X_AXES)}, got {x_axis!r}")
    history = sorted(client.get_metric_history(run_id, metric), key=lambda m: (m.step, m.timestamp))
    steps = [float(m.step) for m in history]
    ys = [float(m.value) for m in history]
    if x_axis == "step":
        xs: list[float | None] = list(steps)
    else:
        counter = client.get_metric_history(run_id, x_axis)
        xs = interpolate(steps, [float(m.step) for m in counter], [float(m.value) for m in counter])
    kept = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and math.isfinite(y)]
    x_out, y_out = [p[0] for p in kept], [p[1] for p in kept]
    return Series(run_id, label or run_id[:8], x_out, y_out, smooth(y_out, weight))


def metric_keys(rows: Iterable[RunRow]) -> list[str]:
    """Metrics worth charting among these runs: evaluation and training ones first."""
    keys = {k for r in rows for k in r.metrics if k not in ("step",) and not k.startswith("params/")}
    first = [k for k in (metric_names.ppl(), metric_names.nelbo(), metric_names.TRAIN_LOSS) if k in keys]
    return first + sorted(keys - set(first))


# -- sweeps --------------------------------------------------------------------------------------

@dataclass
class SweepSummary:
    run_id: str
    experiment_id: str
    name: str
    status: str
    directory: str | None
    trials: int


def sweeps(client: MlflowClient) -> list[SweepSummary]:
    """The sweeps' parent runs (``xdlm.kind = sweep``), newest first."""
    names = experiments(client)
    if not names:
        return []
    runs = client.search_runs(list(names), "tags.`xdlm.kind` = 'sweep'", order_by=["attributes.start_time DESC"])
    out = []
    for run in runs:
        children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        out.append(SweepSummary(run.info.run_id, run.info.experiment_id,
                                run.data.tags.get("xdlm.sweep", run.info.run_name), run.info.status,
                                run.data.tags.get("xdlm.sweep.dir"), len(children)))
    return out


def sweep_report(directory: str | None):
    """The sweep's report (``xdlm.tune.report``: trial table, configurations, Pareto frontier),
    computed without writing files; None when the sweep's directory is not reachable from here."""
    if not directory or not (Path(directory) / "sweep.json").is_file():
        return None
    from xdlm.tune.report import build_report

    return build_report(Path(directory), log_to_mlflow=False, write_files=False)


def report_table(report) -> tuple[list[str], list[dict[str, Any]]]:
    """(headers, rows) of the report's trial table, cells formatted as ``xdlm sweep report`` does."""
    from xdlm.tune.report import cell

    headers = ["trial", *(h for h, _ in report.columns)]
    rows = [{"trial": r.trial_id, "run_id": r.run_id, "best": r.best,
             "cells": [cell(r, key) for _, key in report.columns]} for r in report.rows]
    return headers, rows


def frontier_points(report) -> list[dict[str, Any]]:
    """Each configuration's mean position (and 95 % half-widths) on the report's two axes."""
    from xdlm.tune.report import AXIS_X, AXIS_Y

    points = []
    for c in report.configs:
        x, y = c.get(AXIS_X), c.get(AXIS_Y)
        if x is None or y is None:
            continue
        placement = report.placements.get(c.config_id)
        points.append({"label": c.label, "n": c.n, "x": x.mean, "y": y.mean,
                       "x_err": x.half_width, "y_err": y.half_width,
                       "on_frontier": bool(placement and placement.on_frontier),
                       "resolved": None if placement is None else placement.resolved})
    return points


# -- scaling analyses ----------------------------------------------------------------------------

@dataclass
class ScalingAnalysis:
    run_id: str
    experiment_id: str
    name: str
    fit: dict[str, Any] | None
    figures: list[str]
    """Artifact paths of its PNG and HTML figures."""


def scaling_analyses(client: MlflowClient) -> list[ScalingAnalysis]:
    """Runs tagged ``xdlm.kind = scaling_analysis`` with their ``scaling/fit.json`` and figures."""
    names = experiments(client)
    if not names:
        return []
    runs = client.search_runs(list(names), f"tags.`xdlm.kind` = '{SCALING_KIND}'",
                              order_by=["attributes.start_time DESC"])
    out = []
    for run in runs:
        files = list(_artifact_files(client, run.info.run_id, "scaling"))
        fit = None
        if SCALING_FIT in files:
            try:
                fit = json.loads(Path(client.download_artifacts(run.info.run_id, SCALING_FIT)).read_text())
            except (OSError, ValueError) as err:
                fit = {"error": f"could not read {SCALING_FIT}: {err}"}
        figures = sorted(f for f in files if f.endswith((".png", ".html")))
        out.append(ScalingAnalysis(run.info.run_id, run.info.experiment_id, run.info.run_name, fit, figures))
    return out


def _artifact_files(client: MlflowClient, run_id: str, path: str, depth: int = 3) -> Iterable[str]:
    for item in client.list_artifacts(run_id, path):
        if item.is_dir and depth > 0:
            yield from _artifact_files(client, run_id, item.path, depth - 1)
        elif not item.is_dir:
            yield item.path


@dataclass
class Block:
    """A piece of a JSON document laid out for reading: a key/value table, a table of records,
    or a titled group of blocks."""

    title: str
    kind: str  # "pairs" | "records" | "group" | "value"
    pairs: list[tuple[str, str]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    records: list[list[str]] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def layout_json(document: Any, title: str = "") -> Block:
    """Lay out any JSON document as nested tables, without knowing its schema:

    - a dict's scalars (and lists of scalars) become a key/value table, its nested values titled
      groups; a dict of flat dicts (``{"l_opt/exponent": {"value", "lo", "hi"}, ...}``) one table
      with a row per key;
    - a list of flat dicts becomes a table with the union of their keys as columns; a list of
      deeper dicts a group per item, titled by its ``k`` / ``name`` / ``label`` / ``id``.
    """
    if isinstance(document, dict):
        if len(document) >= 2 and all(_flat_dict(v) for v in document.values()):
            headers = [""] + _union(document.values())
            return Block(title, "records", headers=headers,
                         records=[[str(k), *(format_value(v.get(h)) for h in headers[1:])] for k, v in document.items()])
        scalars = [(k, format_value(v)) for k, v in document.items() if not _nested(v)]
        children = [layout_json(v, str(k)) for k, v in document.items() if _nested(v)]
        blocks = ([Block("", "pairs", pairs=scalars)] if scalars else []) + children
        return blocks[0] if len(blocks) == 1 and not title else Block(title, "group", children=blocks)
    if isinstance(document, list) and document and all(_flat_dict(v) for v in document):
        headers = _union(document)
        return Block(title, "records", headers=headers,
                     records=[[format_value(item.get(h)) for h in headers] for item in document])
    if isinstance(document, list) and any(isinstance(v, (dict, list)) for v in document):
        return Block(title, "group", children=[layout_json(v, _item_title(title, i, v)) for i, v in enumerate(document)])
    return Block(title, "value", pairs=[(title, format_value(document))])


def _flat_dict(value: Any) -> bool:
    return isinstance(value, dict) and not any(_nested(v) for v in value.values())


def _union(items: Iterable[dict]) -> list[str]:
    keys: list[str] = []
    for item in items:
        keys += [str(k) for k in item if str(k) not in keys]
    return keys


def _item_title(title: str, index: int, item: Any) -> str:
    if isinstance(item, dict):
        for key in ("k", "name", "label", "id"):
            if key in item and not _nested(item[key]):
                return f"{title}: {key} = {format_value(item[key])}"
    return f"{title}[{index}]"


def _nested(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))


# -- trajectories --------------------------------------------------------------------------------

def trajectory_runs(rows: Iterable[RunRow]) -> list[RunRow]:
    """Runs with a logged trajectory (``TRAJECTORY_TAG``)."""
    return [r for r in rows if r.trajectory]


def trajectory_files(client: MlflowClient, run_id: str) -> list[str]:
    return sorted(p for p in _artifact_files(client, run_id, TRAJECTORY_DIR, depth=1) if p.endswith(".json"))


def load_trajectory(client: MlflowClient, run_id: str, artifact: str) -> dict[str, Any]:
    """A trajectory artifact (``xdlm.eval.generation.trajectory_payload``), checked for shape."""
    if not artifact.startswith(TRAJECTORY_DIR + "/") or ".." in artifact:
        raise ValueError(f"not a trajectory artifact: {artifact!r}")
    payload = json.loads(Path(client.download_artifacts(run_id, artifact)).read_text())
    steps = payload.get("steps")
    for i, sample in enumerate(payload.get("samples", [])):
        if len(sample["tokens"]) != steps + 1 or len(sample["events"]) != steps:
            raise ValueError(f"{artifact}: sample {i} has {len(sample['tokens'])} token rows and "
                             f"{len(sample['events'])} event rows for {steps} steps")
    return payload


def trajectory_frames(payload: dict[str, Any], sample: int = 0) -> list[list[dict[str, Any]]]:
    """For the viewer: per state j = 0..S, each position's text and what step j did to it
    (state 0, the prior draw, is all ``kept``)."""
    vocab, mask_id = payload["vocab"], payload["mask_id"]
    chosen = payload["samples"][sample]
    kept = payload["events"].index("kept")
    frames = []
    for j, ids in enumerate(chosen["tokens"]):
        events = chosen["events"][j - 1] if j else [kept] * len(ids)
        frames.append([{"text": vocab.get(str(i), str(i)), "mask": i == mask_id,
                        "event": payload["events"][e]} for i, e in zip(ids, events, strict=True)])
    return frames
