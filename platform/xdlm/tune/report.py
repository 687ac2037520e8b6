"""``xdlm sweep report NAME``: the trials as a table and the understanding/generation frontier.

Everything is read back from what the sweep left: its state file, each trial's run record and
MLflow run (params, final metrics, start/end times) and Tune's statuses as tagged by
``settle.py``. The table and the frontier are printed, written under ``<sweep>/report/`` (Markdown,
CSV, JSON, PNG, HTML) and logged to the sweep's parent MLflow run under ``report/``.

Replicates. Trials are grouped by configuration (``xdlm.tune.replicates``): every metric column
gets the mean over the completed replicates and a 95 % Student-t interval
(``xdlm.tune.aggregate``); the best configuration and the Pareto frontier are computed on the
means, and the report says whether each is resolved at this budget (intervals clear of each
other) or not. The per-configuration means and intervals are also logged as metrics of the parent
run (``configs/<config id>/<metric>/{mean,ci_low,ci_high}``).

Generation axis. Generative PPL needs an evaluator LM (``eval.evaluator``); without one the
report uses the *entropy gap*: |mean unigram entropy of S-step samples - the same for real
validation blocks of the same length| (nats). Samples that are too repetitive (low entropy) or
too noise-like (high entropy) both score badly; it says nothing about fluency, which is why the
report names the proxy it used.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Metric, RunTag

from xdlm.config import from_dict
from xdlm.data.build import build_datasets
from xdlm.eval import metric_names
from xdlm.eval.generation import mean_sample_entropy
from xdlm.tracking.runs import make_client
from xdlm.tune import layout
from xdlm.tune.aggregate import BestVerdict, ConfigSummary, TrialResult, decide_best, summarise
from xdlm.tune.pareto import Placement, frontier_resolution, pareto_front, plot_html, plot_png
from xdlm.tune.replicates import identity
from xdlm.tune.stats import CONFIDENCE, Estimate

log = logging.getLogger(__name__)

AXIS_X, AXIS_Y = "pareto/x", "pareto/y"
"""Each completed trial's frontier coordinates, pooled per configuration like any metric."""


@dataclass
class TrialRow:
    trial_id: str
    status: str
    run_id: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    wall_s: float | None
    best: bool = False
    lineage: str | None = None
    """PBT: the donor checkpoint this trial's current segment started from (run@step)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Its Tune config (``trial.json``): which configuration and replicate it is."""
    config_id: str = ""
    replicate: str = "0"

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass
class SweepReport:
    name: str
    rows: list[TrialRow]
    columns: list[tuple[str, str]]
    """(header, metric key or 'param:<key>' / 'status' / 'wall')."""
    metric: str = metric_names.nelbo()
    """The sweep's metric: what "best" is decided on (its mean over replicates)."""
    configs: list[ConfigSummary] = field(default_factory=list)
    config_columns: list[tuple[str, str]] = field(default_factory=list)
    """(header, metric key) aggregated per configuration."""
    best: BestVerdict = field(default_factory=lambda: BestVerdict(None))
    frontier: list[str] = field(default_factory=list)
    placements: dict[str, Placement] = field(default_factory=dict)
    """config id -> its place on the frontier and whether that is resolved."""
    x_label: str = ""
    y_label: str = ""
    y_source: str = ""
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"# Sweep {self.name}: {len(self.rows)} trials", "", markdown_table(self), ""]
        if self.configs:
            what = (f"mean ± half-width of the {CONFIDENCE:.0%} Student-t interval over replicates (n)"
                    if any(c.n > 1 for c in self.configs) else "one replicate each: single values, no interval")
            lines += [f"## {len(self.configs)} configurations: {what}", "", config_table(self), ""]
        if self.best.config_id:
            lines += [f"Best on the mean {self.metric}: {self.label_of(self.best.config_id)}; {self.best.reason}", ""]
        if self.frontier:
            lines += [f"Pareto frontier of the means ({self.x_label} vs {self.y_label}; both lower = better): "
                      + ", ".join(self.frontier), ""]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def label_of(self, config_id: str) -> str:
        return next((c.label for c in self.configs if c.config_id == config_id), config_id)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def cell(row: TrialRow, key: str) -> str:
    if key == "status":
        return row.status + (" *best*" if row.best else "")
    if key == "wall":
        return "-" if row.wall_s is None else f"{row.wall_s / 60:.1f}m"
    if key == "replicate":
        return row.replicate
    if key == "tokens":
        value = row.metric("tokens")
        return "-" if value is None else f"{value / 1e3:.0f}k"
    if key.startswith("param:"):
        value = row.params.get(key[6:], "-")
        try:  # MLflow keeps params as text: 0.00038148027376007793 reads better as 0.000381
            return _fmt(float(value))
        except ValueError:
            return value
    return _fmt(row.metric(key))


def estimate_cell(value: Estimate | None, key: str) -> str:
    """``mean ± half-width``, or the mean alone with one replicate."""
    if value is None:
        return "-"
    scale, unit = (1e3, "k") if key == "tokens" else (1.0, "")
    shown = _fmt(value.mean / scale) + unit
    return shown if value.half_width is None else f"{shown} ± {_fmt(value.half_width / scale)}{unit}"


def config_cells(report: SweepReport, config: ConfigSummary) -> list[str]:
    label = config.label
    if config.config_id == report.best.config_id:
        label += {True: " *best*", False: " *best, not resolved*", None: " *best?*"}[report.best.resolved]
    return [label, f"{config.n}/{len(config.trial_ids)}",
            *(estimate_cell(config.get(key), key) for _, key in report.config_columns)]


def config_table(report: SweepReport) -> str:
    headers = ["configuration", "n"] + [h for h, _ in report.config_columns]
    return _table(headers, [config_cells(report, c) for c in report.configs])


def markdown_table(report: SweepReport) -> str:
    headers = ["trial"] + [h for h, _ in report.columns]
    body = [[r.trial_id] + [cell(r, key) for _, key in report.columns] for r in report.rows]
    return _table(headers, body)


def _table(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(headers[i]), *(len(b[i]) for b in body)) if body else len(headers[i]) for i in range(len(headers))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def schedule_label(params: dict[str, str]) -> str:
    name = params.get("diffusion.schedule", "?")
    extras = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(params.items()) if k.startswith("diffusion.schedule_params.")]
    return name + (f"({', '.join(extras)})" if extras else "")


def collect_rows(directory: Path, state: dict[str, Any]) -> list[TrialRow]:
    client = make_client(state["tracking_uri"])
    rows = []
    for trial_id, record in layout.trial_records(directory).items():
        metrics, params, tags, wall = {}, {}, {}, None
        if record["run_id"]:
            run = client.get_run(record["run_id"])
            metrics, params, tags = dict(run.data.metrics), dict(run.data.params), dict(run.data.tags)
            if run.info.end_time and run.info.start_time:
                wall = (run.info.end_time - run.info.start_time) / 1000
        done = record["done"]
        if done:
            metrics.update({k: v for k, v in done["metrics"].items() if k not in metrics})
            wall = done["finished_at"] - done["started_at"] if wall is None else wall
        params["schedule"] = schedule_label(params)
        status = tags.get("xdlm.trial_status") or ("completed" if done else "unfinished")
        if status == "stopped_early" and tags.get("xdlm.stopped_at_step"):
            status = f"stopped@{tags['xdlm.stopped_at_step']}"
        donor = record.get("init_from")
        lineage = f"{layout.donor_label(donor)} (segment {record['segment']})" if donor else None
        who = identity(record.get("params") or {})
        rows.append(TrialRow(trial_id, status, record["run_id"], params, metrics, wall,
                             best=tags.get("xdlm.best_trial") == "true", lineage=lineage,
                             config=record.get("params") or {}, config_id=who.config_id, replicate=who.replicate))
    return rows


def report_columns(state: dict[str, Any], rows: list[TrialRow]) -> list[tuple[str, str]]:
    job = from_dict(state["base_job"])
    space_keys = list(state["spec"]["space"])
    columns = [("status", "status"), ("k", "param:diffusion.k"), ("schedule", "param:schedule")]
    if any(r.replicate != "0" for r in rows):
        columns.insert(1, ("rep", "replicate"))
    for key in space_keys:
        if key not in ("diffusion.k", "diffusion.schedule", "diffusion") and not key.startswith("diffusion.schedule_params"):
            columns.append((key, f"param:{key}"))
    columns.append(("val PPL", metric_names.ppl()))
    for eval_set in job.data.eval_sets if job.eval.zero_shot else []:
        columns.append((f"0-shot PPL {eval_set}", metric_names.ppl(eval_set)))
    exact = any(r.metric(metric_names.nelbo_gap()) is not None for r in rows)
    if exact:  # a source with a known law: exact axes, the oracle's beside the model's
        columns += [("NELBO gap", metric_names.nelbo_gap()), ("oracle gap", metric_names.nelbo_gap(oracle=True))]
    for steps in sorted(job.eval.sample_steps):
        if exact:
            columns += [(f"true NLL@{steps}", metric_names.true_nll(steps)),
                        (f"oracle@{steps}", metric_names.true_nll(steps, oracle=True))]
        if any(r.metric(metric_names.generative_ppl(steps)) is not None for r in rows):
            columns.append((f"gen PPL@{steps}", metric_names.generative_ppl(steps)))
        columns.append((f"entropy@{steps}", metric_names.sample_entropy(steps)))
    columns += [("tokens", "tokens"), ("wall", "wall")]
    return columns


def reference_entropy(job_dict: dict[str, Any], max_blocks: int = 256) -> float | None:
    """Mean per-block unigram entropy (nats) of real validation blocks: what samples should match."""
    try:
        data = build_datasets(from_dict(job_dict).data)
        blocks = data.validation.blocks[:max_blocks]
        return mean_sample_entropy(torch.as_tensor(blocks.astype("int64")))
    except Exception as err:  # data not reachable from here (e.g. a cluster-only dataset)
        log.warning("no reference entropy (%s); falling back to raw sample entropy", err)
        return None


def frontier_axes(rows: list[TrialRow], job_dict: dict[str, Any]):
    """(x values, y values, x label, y label, source note) for the completed trials."""
    job = from_dict(job_dict)
    steps = 8 if 8 in job.eval.sample_steps else min(job.eval.sample_steps)
    if all(r.metric(metric_names.nelbo_gap()) is not None and r.metric(metric_names.true_nll(steps)) is not None
           for r in rows):
        return ([r.metric(metric_names.nelbo_gap()) for r in rows],
                [r.metric(metric_names.true_nll(steps)) for r in rows],
                "NELBO gap above the entropy rate (nats/token)", f"true NLL of {steps}-step samples (nats/token)",
                "exact axes: the source's law is known (docs/synthetic.md), so both are measured, not proxied")
    steps = min(job.eval.sample_steps)
    x_key = metric_names.nelbo()
    x_label = "val NELBO (nats/token)"
    if all(r.metric(metric_names.generative_ppl(steps)) is not None for r in rows):
        ys = [r.metric(metric_names.generative_ppl(steps)) for r in rows]
        return ([r.metric(x_key) for r in rows], ys, x_label, f"generative PPL at {steps} steps",
                f"generation axis: generative PPL of {steps}-step samples under the evaluator {job.eval.evaluator}")
    reference = reference_entropy(job_dict)
    entropies = [r.metric(metric_names.sample_entropy(steps)) for r in rows]
    if reference is not None:
        ys = [None if e is None else abs(e - reference) for e in entropies]
        return ([r.metric(x_key) for r in rows], ys, x_label, f"entropy gap at {steps} steps (nats)",
                f"generation axis: no evaluator LM (eval.evaluator), so a proxy: |unigram entropy of {steps}-step "
                f"samples - that of real validation blocks ({reference:.3f} nats)|; it flags repetitive or "
                "noise-like samples, not fluency")
    ys = [None if e is None else -e for e in entropies]
    return ([r.metric(x_key) for r in rows], ys, x_label, f"minus sample entropy at {steps} steps",
            "generation axis: no evaluator and no data for a reference: minus the samples' unigram entropy "
            "(a weak proxy: it only penalises repetitive samples)")


def aggregate_columns(report: SweepReport) -> list[tuple[str, str]]:
    """The metric columns of the trial table (and the sweep's metric), pooled per configuration."""
    columns = [(h, key) for h, key in report.columns
               if key not in ("status", "wall", "replicate") and not key.startswith("param:")]
    if report.metric not in [key for _, key in columns]:
        columns.insert(0, (report.metric, report.metric))
    return columns


def trial_results(rows: list[TrialRow], axes: dict[str, tuple[float | None, float | None]]) -> list[TrialResult]:
    """What aggregation needs of each trial; ``axes``: completed trials' frontier coordinates."""
    results = []
    for row in rows:
        metrics = dict(row.metrics)
        x, y = axes.get(row.trial_id, (None, None))
        metrics.update({k: v for k, v in ((AXIS_X, x), (AXIS_Y, y)) if v is not None})
        results.append(TrialResult(row.trial_id, row.config, row.status == "completed", metrics))
    return results


def place_on_frontier(report: SweepReport) -> list[ConfigSummary]:
    """Frontier of the configurations' means, with each point's resolution; returns the points."""
    usable = [c for c in report.configs if c.get(AXIS_X) is not None and c.get(AXIS_Y) is not None]
    if not usable:
        return []
    boxes = [(c.get(AXIS_X), c.get(AXIS_Y)) for c in usable]
    placements = frontier_resolution(boxes)  # type: ignore[arg-type]
    report.placements = {c.config_id: p for c, p in zip(usable, placements, strict=True)}
    front = pareto_front([(x.mean, y.mean) for x, y in boxes])  # type: ignore[union-attr]
    flag = {True: "", False: " (not resolved)", None: ""}
    report.frontier = [usable[i].label + flag[placements[i].resolved] for i in front]
    names = lambda idx: ", ".join(usable[j].label for j in idx)  # noqa: E731
    if any(p.resolved is None for p in placements):
        report.notes.append("frontier: some configuration has one replicate, so no interval: whether the "
                            "frontier is resolved is unknown (search.replicates >= 3 to tell)")
    for config, p in zip(usable, placements, strict=True):
        if p.resolved is False and p.on_frontier:
            report.notes.append(f"frontier: {config.label} is on the frontier of the means, but not resolved at "
                                f"this budget: {names(p.against)} could dominate it (intervals overlap on both axes)")
        elif p.resolved is False:
            report.notes.append(f"frontier: {config.label} is dominated on the means by {names(p.against)}, but not "
                                "resolved at this budget (intervals overlap on an axis): it may be on the frontier")
    return usable


def write_plots(report: SweepReport, points: list[ConfigSummary], title: str, out: Path) -> None:
    means = [(c.get(AXIS_X).mean, c.get(AXIS_Y).mean) for c in points]  # type: ignore[union-attr]
    errors = [(c.get(AXIS_X).half_width, c.get(AXIS_Y).half_width) for c in points]  # type: ignore[union-attr]
    labels = [f"{c.label} (n={c.n})" for c in points]
    front = pareto_front(means)
    unresolved = [i for i, c in enumerate(points) if report.placements[c.config_id].resolved is False]
    report.files["pareto.png"] = str(plot_png(means, labels, front, report.x_label, report.y_label, title,
                                              out / "pareto.png", errors=errors, unresolved=unresolved))
    report.files["pareto.html"] = str(plot_html(means, labels, front, report.x_label, report.y_label, title,
                                                out / "pareto.html", errors=errors))

    def box(value: Estimate) -> dict[str, Any]:
        return {"mean": value.mean, "ci_low": value.low, "ci_high": value.high, "n": value.n}

    (out / "pareto.json").write_text(json.dumps({
        "x": report.x_label, "y": report.y_label, "note": report.y_source, "confidence": CONFIDENCE,
        "points": [{"config_id": c.config_id, "label": c.label, "values": c.values, "trials": c.trial_ids,
                    "replicates": c.n, "x": box(c.get(AXIS_X)), "y": box(c.get(AXIS_Y)),  # type: ignore[arg-type]
                    "on_frontier": report.placements[c.config_id].on_frontier,
                    "resolved": report.placements[c.config_id].resolved} for c in points]}, indent=2, default=str))
    report.files["pareto.json"] = str(out / "pareto.json")


def write_tables(report: SweepReport, out: Path) -> None:
    (out / "trials.md").write_text(report.text())
    report.files["trials.md"] = str(out / "trials.md")
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", *(h for h, _ in report.columns), "config_id"])
        for row in report.rows:
            writer.writerow([row.trial_id, *(cell(row, key) for _, key in report.columns), row.config_id])
    report.files["trials.csv"] = str(out / "trials.csv")
    with open(out / "configs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["config_id", "configuration", "replicates", "trials",
                         *(f"{h} {part}" for h, _ in report.config_columns for part in ("mean", "ci_low", "ci_high"))])
        for c in report.configs:
            values = [(e.mean, e.low, e.high) if (e := c.get(key)) else (None, None, None)
                      for _, key in report.config_columns]
            writer.writerow([c.config_id, c.label, c.n, " ".join(c.trial_ids), *(v for triple in values for v in triple)])
    report.files["configs.csv"] = str(out / "configs.csv")


def aggregate_metrics(report: SweepReport) -> tuple[list[tuple[str, float]], dict[str, str]]:
    """(metrics, tags) for the parent run: each configuration's means and intervals, its label."""
    metrics: list[tuple[str, float]] = []
    tags = {}
    keys = [key for _, key in report.config_columns] + [AXIS_X, AXIS_Y]
    for c in report.configs:
        tags[f"xdlm.sweep.config.{c.config_id}"] = c.label[:5000]
        metrics.append((f"configs/{c.config_id}/replicates", float(c.n)))
        for key in keys:
            value = c.get(key)
            if value is None:
                continue
            metrics.append((f"configs/{c.config_id}/{key}/mean", value.mean))
            if value.has_interval:
                metrics += [(f"configs/{c.config_id}/{key}/ci_low", value.low),  # type: ignore[list-item]
                            (f"configs/{c.config_id}/{key}/ci_high", value.high)]
    if report.best.config_id:
        tags["xdlm.best_config_id"] = report.best.config_id
        tags["xdlm.best_resolved"] = {True: "true", False: "false", None: "unknown"}[report.best.resolved]
    return metrics, tags


def log_report(report: SweepReport, state: dict[str, Any]) -> None:
    client = make_client(state["tracking_uri"])
    run_id = state["parent_run_id"]
    for path in report.files.values():
        client.log_artifact(run_id, path, "report")
    metrics, tags = aggregate_metrics(report)
    now = int(time.time() * 1000)
    entries = [Metric(key, value, now, 0) for key, value in metrics]
    for start in range(0, len(entries), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=entries[start:start + 1000])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def build_report(directory: Path, log_to_mlflow: bool = True, echo: bool = False,
                 write_files: bool = True) -> SweepReport:
    """``write_files=False``: compute only (the dashboard redraws a live sweep in its page)."""
    state = layout.read_state(directory)
    rows = collect_rows(directory, state)
    spec = state["spec"]
    report = SweepReport(state["name"], rows, report_columns(state, rows),
                         metric=spec.get("metric", metric_names.nelbo()))
    report.config_columns = aggregate_columns(report)
    completed = [r for r in rows if r.status == "completed"]
    axes: dict[str, tuple[float | None, float | None]] = {}
    if completed:
        xs, ys, report.x_label, report.y_label, report.y_source = frontier_axes(completed, state["base_job"])
        axes = {r.trial_id: (x, y) for r, x, y in zip(completed, xs, ys, strict=True)}
        report.notes.append(report.y_source)
    report.configs, duplicates = summarise(trial_results(rows, axes))
    report.best = decide_best(report.configs, report.metric, spec.get("mode", "min"))
    report.notes += duplicates
    if report.configs and all(c.n <= 1 for c in report.configs):
        report.notes.append("one replicate per configuration: each mean is a single run and has no interval, so "
                            "no difference between configurations can be called resolved (search.replicates)")
    cloned = [f"{r.trial_id} from {r.lineage}" for r in rows if r.lineage]
    if cloned:
        report.notes.append("PBT: these trials ended in a segment started from another trial's checkpoint "
                            "(params and wall time are that segment's): " + "; ".join(cloned))
    stopped = [r.trial_id for r in rows if r.status.startswith("stopped")]
    if stopped:
        report.notes.append(f"stopped early by the scheduler (not counted in the means): {', '.join(stopped)}")
    points = place_on_frontier(report)
    if not write_files:
        return report
    out = directory / layout.REPORT_DIR
    out.mkdir(exist_ok=True)
    if points:
        write_plots(report, points, f"sweep {state['name']}: understanding vs few-step generation", out)
    write_tables(report, out)
    if log_to_mlflow:
        log_report(report, state)
    if echo:
        print(report.text())
    return report
