"""The Tune function trainable: one trial = one Ray Train run of the trial's job.

Ray 2.60 runs Ray Train ("V2") inside Tune only this way: ``TorchTrainer(...).fit()`` called from
a function trainable. Inside this function only ``ray.tune.*`` session calls work (``ray.train.*``
raises). Every report of the workers (``val/nelbo`` at each evaluation, checkpoints) reaches Tune
through ``channel.py``, each checkpoint as a pointer Tune can hand back, so ASHA can stop a trial
and PBT can clone one.

Which Ray Train run a start continues is decided by the checkpoint Tune hands it
(``choose_segment``): none, the trial's first run ``<sweep>-<trial id>`` (a first start, or a
restart before its first checkpoint); its own pointer, the run that wrote it (a retry after a
failure, a paused trial resumed, a restored sweep: Ray Train hands the workers that run's
latest checkpoint); another trial's pointer, PBT's exploit step: a new segment run starts from
that checkpoint with the mutated config. A trial that already finished (``trial_done.json``
exists: the driver died after the trial ended but before Tune saved that) only re-reports its
final metrics.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray import tune

from xdlm.checkpoint import MANIFEST, RUN_RECORD, latest_checkpoint
from xdlm.cluster import storage
from xdlm.tracking.runs import make_client
from xdlm.train.launch import run_training
from xdlm.tune import layout
from xdlm.tune.channel import CLOCKS, fit_reporting_to_tune, read_pointer
from xdlm.tune.replicates import identity, searched_values
from xdlm.tune.space import trial_job

log = logging.getLogger(__name__)


def final_tune_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numbers Tune can keep (MLflow's final metrics plus the last Ray Train report), without the
    clock: schedulers have nothing to act on in a finished trial (see ``channel.CLOCKS``)."""
    out = {}
    for key, value in metrics.items():
        if key in CLOCKS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        out[key] = value
    return out


@dataclass
class Segment:
    """The Ray Train run one start of a trial trains in."""

    index: int
    run_name: str
    init_from: dict[str, Any] | None = None
    """The donor's pointer (PBT) when this run starts from another trial's checkpoint."""


def same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def choose_segment(directory: Path, sweep_name: str, trial_id: str, config: dict[str, Any], pointer) -> Segment:
    """The run this start of ``trial_id`` trains in, from the checkpoint Tune handed it."""
    runs = layout.trial_segments(directory).get(trial_id, [])
    if pointer is None:
        return Segment(0, layout.trial_run_name(sweep_name, trial_id))
    if pointer.trial_id == trial_id:
        for run_dir, info in runs:
            if run_dir.name == pointer.run_name:
                return Segment(info["segment"], pointer.run_name, info.get("init_from"))
        return Segment(0, pointer.run_name)
    donor = asdict(pointer)
    if runs:
        run_dir, info = runs[-1]
        if info.get("init_from") == donor and same_params(info["params"], config):
            return Segment(info["segment"], run_dir.name, donor)  # this exploit, restarted
    index = runs[-1][1]["segment"] + 1 if runs else 1
    return Segment(index, layout.trial_run_name(sweep_name, trial_id, index), donor)


def donor_checkpoint(directory: Path, donor: dict[str, Any]) -> str:
    """The donor's checkpoint, or its run's latest one if the donor's own retention
    (train.keep_checkpoints) has deleted it since."""
    if (Path(donor["checkpoint"]) / MANIFEST).is_file():
        return donor["checkpoint"]
    latest = str(latest_checkpoint(directory / layout.TRIALS_DIR / donor["run_name"]))
    log.warning("PBT donor checkpoint %s is gone (retention); starting from %s", donor["checkpoint"], latest)
    return latest


def run_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """Train the trial ``config`` (sampled values by dotted key) of the sweep described by ``sweep``
    (``runner.trainable_context``) and report its final metrics to Tune."""
    trial_id = tune.get_context().get_trial_id()
    directory = Path(sweep["sweep_dir"])
    segment = choose_segment(directory, sweep["name"], trial_id, config, read_pointer(tune.get_checkpoint()))
    job = trial_job(sweep["base_job"], config, segment.run_name, str(directory / layout.TRIALS_DIR),
                    sweep["tracking_uri"])
    run_dir = Path(job.run_dir())

    done = layout.read_done(run_dir)
    if done is not None:
        tune.report(done["metrics"])
        return

    resume = storage.exists(f"{run_dir}/{RUN_RECORD}")
    if not (run_dir / layout.TRIAL_FILE).is_file():
        layout.write_trial_info(run_dir, {"trial_id": trial_id, "segment": segment.index, "params": config,
                                          "init_from": segment.init_from})
    layout.log_start(directory, trial_id, resume, segment.run_name)
    # used only while the run has no checkpoint of its own (Ray Train's come first)
    init_checkpoint = donor_checkpoint(directory, segment.init_from) if segment.init_from else None
    who = identity(config)
    tags = {"xdlm.sweep": sweep["name"], "xdlm.trial_id": trial_id,
            "xdlm.sweep.config_id": who.config_id, "xdlm.sweep.replicate": who.replicate,
            **{f"xdlm.sweep.param.{key}": str(value)[:5000] for key, value in searched_values(config).items()}}
    if segment.init_from:
        tags["xdlm.pbt.segment"] = segment.index
        tags["xdlm.pbt.init_from"] = layout.donor_label(segment.init_from)
    started = time.time()
    outcome = fit_reporting_to_tune(
        lambda callbacks: run_training(job, resume=resume, parent_run_id=sweep["parent_run_id"],
                                       extra_callbacks=callbacks, init_checkpoint=init_checkpoint, tags=tags,
                                       take_over=True),  # the sweep is the only writer of its trials
        trial_id, segment.run_name, job.train.steps,
    )
    metrics = final_tune_metrics(outcome.metrics)
    if outcome.run_id:
        make_client(outcome.tracking_uri).set_tag(outcome.run_id, "xdlm.trial_status", "completed")
    layout.write_done(run_dir, {"trial_id": trial_id, "run_id": outcome.run_id, "params": config,
                                "metrics": metrics, "finished_at": time.time(), "started_at": started})
    tune.report(metrics)
