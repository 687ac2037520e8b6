"""The Tune function trainable: one trial = one Ray Train run of the trial's job.

Ray 2.60 runs Ray Train ("V2") inside Tune only this way: ``TorchTrainer(...).fit()`` called from
a function trainable, with ``TuneReportCallback`` forwarding every ``ray.train.report`` of the
workers (``val/nelbo`` at each evaluation) to Tune, where ASHA can stop the trial. Inside this
function only ``ray.tune.*`` session calls work (``ray.train.*`` raises).

The trial's Ray Train run is named ``<sweep>-<trial id>`` under the sweep's ``trials/``
directory, so when Tune restarts the trial (a retry after a failure, or a restored sweep) the
run record is there, ``run_training(resume=True)`` is used and Ray Train hands the workers the
latest checkpoint. A trial that already finished (its ``trial_done.json`` exists: the driver
died after the trial ended but before Tune saved that) only re-reports its final metrics.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from xdlm.tune import layout


def final_tune_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numbers Tune can keep (MLflow's final metrics plus the last Ray Train report)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        out[key] = value
    return out


def run_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """Train the trial ``config`` (sampled values by dotted key) of the sweep described by ``sweep``
    (``runner.trainable_context``) and report its final metrics to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from xdlm.cluster import storage
    from xdlm.train.launch import RUN_RECORD, run_training
    from xdlm.tune.space import trial_job

    trial_id = tune.get_context().get_trial_id()
    directory = Path(sweep["sweep_dir"])
    name = layout.trial_run_name(sweep["name"], trial_id)
    job = trial_job(sweep["base_job"], config, name, str(directory / layout.TRIALS_DIR), sweep["tracking_uri"])
    run_dir = Path(job.run_dir())

    done = layout.read_done(run_dir)
    if done is not None:
        tune.report(done["metrics"])
        return

    resume = storage.exists(f"{run_dir}/{RUN_RECORD}")
    layout.log_start(directory, trial_id, resume)
    started = time.time()
    outcome = run_training(job, resume=resume, parent_run_id=sweep["parent_run_id"],
                           extra_callbacks=[TuneReportCallback()])
    metrics = final_tune_metrics(outcome.metrics)
    if outcome.run_id:
        from xdlm.tracking.runs import make_client

        client = make_client(outcome.tracking_uri)
        tags = {"xdlm.sweep": sweep["name"], "xdlm.trial_id": trial_id, "xdlm.trial_status": "completed"}
        for key, value in config.items():
            tags[f"xdlm.sweep.param.{key}"] = str(value)[:5000]
        for key, value in tags.items():
            client.set_tag(outcome.run_id, key, value)
    layout.write_done(run_dir, {"trial_id": trial_id, "run_id": outcome.run_id, "params": config,
                                "metrics": metrics, "finished_at": time.time(), "started_at": started})
    tune.report(metrics)
