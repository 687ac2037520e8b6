"""After ``Tuner.fit``: tell MLflow what only Tune knows.

Tune ends a trial that ASHA stops by killing its actor, so that trial's MLflow run (opened by
``run_training`` in the actor) would stay RUNNING forever; errored trials likewise. Here each
trial's run gets ``xdlm.trial_status`` (completed / stopped_early / error; ``pbt_replaced`` for
the earlier segments of a trial that PBT made clone another) and the terminal status that Tune's
verdict implies, the best completed trial (by the sweep's metric, from its final report) gets
``xdlm.best_trial=true``, and the parent run records which one that was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from xdlm.train.launch import RUN_RECORD
from xdlm.tune import layout


def _run_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_RECORD
    return json.loads(path.read_text()).get("mlflow_run_id") if path.is_file() else None


def trial_records(directory: Path) -> dict[str, dict[str, Any]]:
    """trial id -> its current run {run_dir, run_id, done (final payload or None), segment,
    init_from, replaced (run ids of earlier PBT segments)} for every trial that started."""
    records = {}
    for trial_id, runs in layout.trial_segments(directory).items():
        run_dir, info = runs[-1]
        records[trial_id] = {"run_dir": str(run_dir), "run_id": _run_id(run_dir), "done": layout.read_done(run_dir),
                             "segment": info["segment"], "init_from": info.get("init_from"),
                             "replaced": [run_id for d, _ in runs[:-1] if (run_id := _run_id(d))]}
    return records


def tune_outcomes(results) -> dict[str, dict[str, Any]]:
    """trial id -> {error, last, status} from a ResultGrid (trial directories are named by id).

    ``status`` is Tune's (TERMINATED, ERROR, or PENDING/RUNNING/PAUSED when the sweep was
    interrupted, e.g. by Ctrl-C or the sweep time budget); None where Tune does not say.
    """
    outcomes = {}
    for result in results:
        trial_id = Path(result.path).name if result.path else (result.metrics or {}).get("trial_id")
        if trial_id:
            outcomes[trial_id] = {"error": result.error, "last": dict(result.metrics or {}), "status": None}
    analysis = getattr(results, "_experiment_analysis", None)
    for trial in getattr(analysis, "trials", None) or []:
        outcomes.setdefault(trial.trial_id, {"error": None, "last": {}, "status": None})["status"] = trial.status
    return outcomes


def pick_best(records: dict[str, dict[str, Any]], metric: str, mode: str) -> str | None:
    scored = []
    for trial_id, record in records.items():
        value = (record["done"] or {}).get("metrics", {}).get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            scored.append((value if mode == "min" else -value, trial_id))
    return min(scored)[1] if scored else None


def settle_trials(state: dict[str, Any], spec, results):
    from xdlm.tracking.runs import make_client
    from xdlm.tune.runner import SweepOutcome

    directory = Path(state["sweep_dir"])
    records = trial_records(directory)
    outcomes = tune_outcomes(results)
    client = make_client(state["tracking_uri"])
    statuses = {}
    for trial_id, record in records.items():
        outcome = outcomes.get(trial_id, {})
        if record["done"] is not None:
            status, run_status = "completed", "FINISHED"
        elif outcome.get("error") is not None or outcome.get("status") == "ERROR":
            status, run_status = "error", "FAILED"
        elif outcome.get("status") in ("PENDING", "RUNNING", "PAUSED"):
            status, run_status = "interrupted", "KILLED"  # `xdlm sweep --resume` continues it
        else:
            status, run_status = "stopped_early", "KILLED"
        statuses[trial_id] = status
        run_id = record["run_id"]
        if not run_id:
            continue
        client.set_tag(run_id, "xdlm.trial_status", status)
        client.set_tag(run_id, "xdlm.sweep", spec.name)
        client.set_tag(run_id, "xdlm.trial_id", trial_id)
        last_step = outcome.get("last", {}).get("step")
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

    best = pick_best(records, spec.metric, spec.mode)
    parent = state["parent_run_id"]
    counts = {s: list(statuses.values()).count(s) for s in ("completed", "stopped_early", "error", "interrupted")}
    for status, count in counts.items():
        client.log_metric(parent, f"sweep/trials_{status}", count)
    if best is not None:
        best_run = records[best]["run_id"]
        if best_run:
            client.set_tag(best_run, "xdlm.best_trial", "true")
            client.set_tag(parent, "xdlm.best_run_id", best_run)
        client.set_tag(parent, "xdlm.best_trial_id", best)
        client.log_metric(parent, f"best/{spec.metric}", records[best]["done"]["metrics"][spec.metric])
    unfinished = [t for t, o in outcomes.items() if o.get("status") in ("PENDING", "RUNNING", "PAUSED")]
    return SweepOutcome(spec.name, directory, parent, state["tracking_uri"], best, statuses, interrupted=bool(unfinished))
