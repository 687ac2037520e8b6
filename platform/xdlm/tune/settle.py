"""After ``Tuner.fit``: tell MLflow what only Tune knows.

Tune ends a trial that ASHA stops by killing its actor, so that trial's MLflow run (opened by
``run_training`` in the actor) would stay RUNNING forever; errored trials likewise. Here each
trial's run gets ``xdlm.trial_status`` (completed / stopped_early / error / interrupted;
``pbt_replaced`` for the earlier segments of a trial that PBT made clone another) and the
terminal status that Tune's verdict implies, and the best configuration is recorded: decided on
the mean of the sweep's metric over its completed replicates (``xdlm.tune.aggregate``), its runs
tagged ``xdlm.best_config=true``, its best replicate ``xdlm.best_trial=true``, and the parent run
gets ``best/<metric>`` (the mean), its interval, the number of replicates and whether the best is
resolved at this budget (``xdlm.best_resolved``: true / false / unknown with one replicate).

Tune's verdict is read through public API only: each ``Result`` of the ``ResultGrid`` gives a
trial's error and last metrics, and the experiment state Tune saves as ``fit`` returns, read
back with ``tune.ExperimentAnalysis(results.experiment_path)``, gives its status. That saved
state is also the true one: Tune writes it before tearing the trials down, and the teardown
marks the still-running trials behind the ``ResultGrid`` TERMINATED, so an interrupted trial
read from there would look stopped early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import ExperimentAnalysis

from xdlm.tracking.runs import make_client
from xdlm.tune import layout
from xdlm.tune.aggregate import BestVerdict, TrialResult, decide_best, summarise

# Tune's statuses of a trial that has not ended: a resumed sweep continues it.
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")
TRIAL_STATUSES = ("completed", "stopped_early", "error", "interrupted")


@dataclass
class SweepOutcome:
    name: str
    directory: Path
    parent_run_id: str
    tracking_uri: str
    best_trial_id: str | None
    statuses: dict[str, str]
    interrupted: bool = False
    """Tune returned with trials unfinished (e.g. Ctrl-C): resume to continue."""
    best: BestVerdict = field(default_factory=lambda: BestVerdict(None))
    """The best configuration on the means, and whether that is resolved."""


@dataclass(frozen=True)
class TuneVerdict:
    """What Tune says of one trial at the end of ``fit``."""

    status: str | None
    """TERMINATED, ERROR, or one of ``UNFINISHED`` when the sweep was interrupted; None when
    Tune's saved state does not list the trial."""
    error: BaseException | None = None
    last: dict[str, Any] = field(default_factory=dict)
    """The trial's last report to Tune (``step`` says where a stopped trial stopped)."""


def tune_verdicts(results) -> dict[str, TuneVerdict]:
    """trial id -> Tune's verdict, from a ``ResultGrid`` (trial directories are named by id)."""
    statuses = {trial.trial_id: trial.status for trial in ExperimentAnalysis(results.experiment_path).trials}
    verdicts = {trial_id: TuneVerdict(status) for trial_id, status in statuses.items()}
    for result in results:
        trial_id = Path(result.path).name if result.path else (result.metrics or {}).get("trial_id")
        if trial_id:
            verdicts[trial_id] = TuneVerdict(statuses.get(trial_id), result.error, dict(result.metrics or {}))
    return verdicts


def trial_status(record: dict[str, Any], verdict: TuneVerdict) -> tuple[str, str]:
    """(``xdlm.trial_status``, MLflow run status) of a trial: its own finish marker, else Tune's word."""
    if record["done"] is not None:
        return "completed", "FINISHED"
    if verdict.error is not None or verdict.status == "ERROR":
        return "error", "FAILED"
    if verdict.status in UNFINISHED:
        return "interrupted", "KILLED"  # `xdlm sweep --resume` continues it
    return "stopped_early", "KILLED"


def pick_best(records: dict[str, dict[str, Any]], metric: str, mode: str) -> str | None:
    """The best of ``records`` (trial id -> layout record) on its final ``metric``."""
    scored = []
    for trial_id, record in records.items():
        value = (record["done"] or {}).get("metrics", {}).get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            scored.append((value if mode == "min" else -value, trial_id))
    return min(scored)[1] if scored else None


def best_configuration(records: dict[str, dict[str, Any]], metric: str, mode: str):
    """(verdict, the best configuration's summary or None) on the means of its replicates."""
    configs, _ = summarise(TrialResult(trial_id, record.get("params") or {}, record["done"] is not None,
                                       (record["done"] or {}).get("metrics", {}))
                           for trial_id, record in records.items())
    verdict = decide_best(configs, metric, mode)
    return verdict, next((c for c in configs if c.config_id == verdict.config_id), None)


def settle_trials(state: dict[str, Any], spec, verdicts: dict[str, TuneVerdict]) -> SweepOutcome:
    directory = Path(state["sweep_dir"])
    records = layout.trial_records(directory)
    client = make_client(state["tracking_uri"])
    statuses = {}
    for trial_id, record in records.items():
        verdict = verdicts.get(trial_id, TuneVerdict(None))
        status, run_status = trial_status(record, verdict)
        statuses[trial_id] = status
        run_id = record["run_id"]
        if not run_id:
            continue
        client.set_tag(run_id, "xdlm.trial_status", status)
        client.set_tag(run_id, "xdlm.sweep", spec.name)
        client.set_tag(run_id, "xdlm.trial_id", trial_id)
        last_step = verdict.last.get("step")
        if status == "stopped_early" and last_step is not None:
            client.set_tag(run_id, "xdlm.stopped_at_step", str(int(last_step)))
        # Tune's verdict wins over the trial's own: a trial stopped by the scheduler has its actor
        # torn down under a running ``trainer.fit()``, which then sometimes raises on the way out
        # and ends the run FAILED before the process goes (a race with the atexit KILLED).
        if client.get_run(run_id).info.status != run_status:
            client.set_terminated(run_id, status=run_status)
        for replaced in record["replaced"]:  # PBT: an earlier segment, torn down when the trial cloned another
            client.set_tag(replaced, "xdlm.trial_status", "pbt_replaced")
            client.set_tag(replaced, "xdlm.sweep", spec.name)
            client.set_tag(replaced, "xdlm.trial_id", trial_id)
            if client.get_run(replaced).info.status in ("RUNNING", "FAILED"):
                client.set_terminated(replaced, status="KILLED")

    verdict, config = best_configuration(records, spec.metric, spec.mode)
    best = pick_best({t: records[t] for t in config.counted.values()}, spec.metric, spec.mode) if config else None
    parent = state["parent_run_id"]
    for status in TRIAL_STATUSES:
        client.log_metric(parent, f"sweep/trials_{status}", list(statuses.values()).count(status))
    if config is not None and best is not None:
        for trial_id in config.counted.values():
            if records[trial_id]["run_id"]:
                client.set_tag(records[trial_id]["run_id"], "xdlm.best_config", "true")
        best_run = records[best]["run_id"]
        if best_run:
            client.set_tag(best_run, "xdlm.best_trial", "true")
            client.set_tag(parent, "xdlm.best_run_id", best_run)
        client.set_tag(parent, "xdlm.best_trial_id", best)
        client.set_tag(parent, "xdlm.best_config_id", config.config_id)
        client.set_tag(parent, "xdlm.best_resolved", {True: "true", False: "false", None: "unknown"}[verdict.resolved])
        value = config.get(spec.metric)
        client.log_metric(parent, f"best/{spec.metric}", value.mean)
        client.log_metric(parent, "best/replicates", value.n)
        if value.has_interval:
            client.log_metric(parent, f"best/{spec.metric}/ci_low", value.low)
            client.log_metric(parent, f"best/{spec.metric}/ci_high", value.high)
    unfinished = [t for t, verdict in verdicts.items() if verdict.status in UNFINISHED]
    return SweepOutcome(spec.name, directory, parent, state["tracking_uri"], best, statuses,
                        interrupted=bool(unfinished), best=verdict)
