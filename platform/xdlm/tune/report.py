"""``xdlm sweep report NAME``: the trials as a table and the understanding/generation frontier.

Everything is read back from what the sweep left: its state file, each trial's run record and
MLflow run (params, final metrics, start/end times) and Tune's statuses as tagged by
``settle.py``. The table and the frontier are printed, written under ``<sweep>/report/`` (Markdown,
CSV, JSON, PNG, HTML) and logged to the sweep's parent MLflow run under ``report/``.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xdlm.config import from_dict
from xdlm.data.build import build_datasets
from xdlm.eval import metric_names
from xdlm.eval.generation import mean_sample_entropy
from xdlm.tracking.runs import make_client
from xdlm.tune import layout
from xdlm.tune.pareto import pareto_front, plot_html, plot_png

log = logging.getLogger(__name__)


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

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass
class SweepReport:
    name: str
    rows: list[TrialRow]
    columns: list[tuple[str, str]]
    """(header, metric key or 'param:<key>' / 'status' / 'wall')."""
    frontier: list[str] = field(default_factory=list)
    x_label: str = ""
    y_label: str = ""
    y_source: str = ""
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"# Sweep {self.name}: {len(self.rows)} trials", "", markdown_table(self), ""]
        if self.frontier:
            lines += [f"Pareto frontier ({self.x_label} vs {self.y_label}; both lower = better): "
                      + ", ".join(self.frontier), ""]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


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


def markdown_table(report: SweepReport) -> str:
    headers = ["trial"] + [h for h, _ in report.columns]
    body = [[r.trial_id] + [cell(r, key) for _, key in report.columns] for r in report.rows]
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
        rows.append(TrialRow(trial_id, status, record["run_id"], params, metrics, wall,
                             best=tags.get("xdlm.best_trial") == "true", lineage=lineage))
    return rows


def report_columns(state: dict[str, Any], rows: list[TrialRow]) -> list[tuple[str, str]]:
    job = from_dict(state["base_job"])
    space_keys = list(state["spec"]["space"])
    columns = [("status", "status"), ("k", "param:diffusion.k"), ("schedule", "param:schedule")]
    for key in space_keys:
        if key not in ("diffusion.k", "diffusion.schedule", "diffusion") and not key.startswith("diffusion.schedule_params"):
            columns.append((key, f"param:{key}"))
    columns.append(("val PPL", metric_names.ppl()))
    for eval_set in job.data.eval_sets if job.eval.zero_shot else []:
        columns.append((f"0-shot PPL {eval_set}", metric_names.ppl(eval_set)))
    for steps in sorted(job.eval.sample_steps):
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


def build_report(directory: Path, log_to_mlflow: bool = True, echo: bool = False) -> SweepReport:
    state = layout.read_state(directory)
    rows = collect_rows(directory, state)
    report = SweepReport(state["name"], rows, report_columns(state, rows))
    completed = [r for r in rows if r.status == "completed"]
    usable = []
    if completed:
        xs, ys, report.x_label, report.y_label, report.y_source = frontier_axes(completed, state["base_job"])
        usable = [(r, x, y) for r, x, y in zip(completed, xs, ys, strict=True) if x is not None and y is not None]
        report.notes.append(report.y_source)
    cloned = [f"{r.trial_id} from {r.lineage}" for r in rows if r.lineage]
    if cloned:
        report.notes.append("PBT: these trials ended in a segment started from another trial's checkpoint "
                            "(params and wall time are that segment's): " + "; ".join(cloned))
    stopped = [r.trial_id for r in rows if r.status.startswith("stopped")]
    if stopped:
        report.notes.append(f"stopped early by the scheduler (not on the frontier): {', '.join(stopped)}")
    out = directory / layout.REPORT_DIR
    out.mkdir(exist_ok=True)
    if usable:
        points = [(x, y) for _, x, y in usable]
        labels = [f"{r.trial_id.split('_')[-1]} k={r.params.get('diffusion.k', '?')}" for r, _, _ in usable]
        front = pareto_front(points)
        report.frontier = [labels[i] for i in front]
        title = f"sweep {state['name']}: understanding vs few-step generation"
        report.files["pareto.png"] = str(plot_png(points, labels, front, report.x_label, report.y_label, title,
                                                  out / "pareto.png"))
        report.files["pareto.html"] = str(plot_html(points, labels, front, report.x_label, report.y_label, title,
                                                    out / "pareto.html"))
        (out / "pareto.json").write_text(json.dumps({
            "x": report.x_label, "y": report.y_label, "note": report.y_source,
            "points": [{"trial": r.trial_id, "params": r.params, "x": x, "y": y, "on_frontier": i in front}
                       for i, (r, x, y) in enumerate(usable)]}, indent=2))
        report.files["pareto.json"] = str(out / "pareto.json")
    (out / "trials.md").write_text(report.text())
    report.files["trials.md"] = str(out / "trials.md")
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", *(h for h, _ in report.columns)])
        for row in rows:
            writer.writerow([row.trial_id, *(cell(row, key) for _, key in report.columns)])
    report.files["trials.csv"] = str(out / "trials.csv")
    if log_to_mlflow:
        client = make_client(state["tracking_uri"])
        for path in report.files.values():
            client.log_artifact(state["parent_run_id"], path, "report")
    if echo:
        print(report.text())
    return report
