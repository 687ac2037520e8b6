"""Decay branches: the loss of one long run at several horizons.

A parent run trains with a schedule that is flat after warm-up (``optim.lr_schedule: wsd`` or
``constant``).  The branch of horizon h (a fraction of the parent's ``train.steps`` T) is a wsd
run of ``T_h = round(h * T)`` steps that starts from the parent's checkpoint at its own decay
start ``S_h = T_h - round(f * T_h)`` (f = ``optim.decay_fraction``) and decays from there.  Up
to S_h the two runs used the same learning rates (``xdlm.train.optim.lr_multiplier``), so the
branch is exactly the wsd run of T_h steps the parent would have been, at the cost of only its
decay.  The parent keeps those checkpoints when trained with ``train.branch_horizons``.

Each branch is its own run (``<parent>-h<h>``) and MLflow run, nested under the parent's and
tagged ``xdlm.branch.*`` so an analysis finds the horizons of one parent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xdlm.checkpoint import RUN_RECORD, StoredCheckpoint, scan
from xdlm.cluster import storage
from xdlm.config import ConfigError, JobConfig, from_dict, to_dict
from xdlm.errors import UserError

TAG_PARENT_RUN_ID = "xdlm.branch.parent_run_id"
TAG_PARENT = "xdlm.branch.parent"
TAG_HORIZON = "xdlm.branch.horizon"
TAG_START_STEP = "xdlm.branch.start_step"
FLAT_SCHEDULES = ("wsd", "constant")
"""Parent schedules a branch can leave: flat after warm-up, so the branch's past is its own."""
FROZEN = ("model", "data", "diffusion")
"""Sections an override may not change: they decide what the parent's checkpoint means."""
STUDY_TAG_PREFIX = "xdlm.scaling."
"""Tags of the parent's study (its IsoFLOP budget, size) describe the parent, not a branch."""


@dataclass(frozen=True)
class Parent:
    name: str
    run_dir: str
    run_id: str | None
    tracking_uri: str | None
    job: JobConfig
    checkpoints: list[StoredCheckpoint]

    def steps_available(self) -> list[int]:
        return sorted({c.step for c in self.checkpoints})


@dataclass(frozen=True)
class Branch:
    horizon: float
    name: str
    steps: int
    """T_h = round(h * parent train.steps): the branch's own train.steps."""
    start_step: int
    """S_h = T_h - round(decay_fraction * T_h): the parent checkpoint it starts from."""
    checkpoint: str


def find_parent(run: str, storage_path: str = "runs") -> Parent:
    """The parent run ``run``: a run name under ``storage_path`` (local or s3://) or a local run
    directory, with its record and complete checkpoints."""
    if os.path.isfile(os.path.join(run, RUN_RECORD)):
        run_dir = os.path.abspath(run)
    else:
        base = storage_path if "://" in storage_path else os.path.abspath(os.path.expanduser(storage_path))
        run_dir = f"{base.rstrip('/')}/{run}"
    record_uri = f"{run_dir}/{RUN_RECORD}"
    if not storage.exists(record_uri):
        raise UserError(f"RUN: no run {run!r} (no {RUN_RECORD} at {record_uri}); give a run name under "
                        f"--storage-path (now {storage_path}) or a run directory")
    record = json.loads(storage.read_text(record_uri))
    complete, _ = scan(run_dir)
    return Parent(record["name"], run_dir, record.get("mlflow_run_id"), record.get("tracking_uri"),
                  from_dict(record["job"]), complete)


def horizon_label(horizon: float) -> str:
    return f"h{horizon:g}"


def plan_branches(parent: Parent, horizons: list[float], decay_fraction: float | None = None) -> list[Branch]:
    """One ``Branch`` per horizon, each with the parent checkpoint it starts from; ``UserError``
    naming the flag or the option to set when one cannot be made."""
    if not horizons:
        raise UserError("--at: give at least one horizon, e.g. --at 0.25,0.5,1.0")
    bad = [h for h in horizons if not 0 < h <= 1]
    if bad:
        raise UserError(f"--at: horizons are fractions of the parent's train.steps in (0, 1], got {bad}")
    schedule = parent.job.optim.lr_schedule
    if schedule not in FLAT_SCHEDULES:
        raise UserError(f"RUN: {parent.name!r} trained with optim.lr_schedule={schedule}; a decay branch needs a "
                        f"parent that is flat after warm-up ({' or '.join(FLAT_SCHEDULES)}), so that its "
                        "checkpoint is where a shorter run would have been")
    optim = parent.job.optim
    if decay_fraction is not None:
        if not 0 < decay_fraction <= 1:
            raise UserError(f"--decay-fraction: must be in (0, 1], got {decay_fraction}")
        optim = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(optim), {"decay_fraction": decay_fraction}))
    total = parent.job.train.steps
    available = parent.steps_available()
    by_step = {c.step: c for c in reversed(parent.checkpoints)}  # newest-first list: keep the newest per step
    branches, missing = [], []
    for h in horizons:
        steps = round(h * total)
        start = optim.decay_start(steps)
        if steps < 1 or start >= steps:
            raise UserError(f"--at: horizon {h:g} is {steps} steps of {parent.name!r}, of which decay_fraction "
                            f"{optim.decay_fraction} decays none; use a longer horizon or a larger --decay-fraction")
        if start not in by_step:
            missing.append((h, start))
            continue
        branches.append(Branch(h, f"{parent.name}-{horizon_label(h)}", steps, start, by_step[start].uri))
    if missing:
        wanted = ", ".join(f"step {s} for horizon {h:g}" for h, s in missing)
        raise UserError(
            f"RUN: {parent.name!r} has no checkpoint at {wanted} (decay_fraction {optim.decay_fraction}); its "
            f"checkpoints are at steps {available or 'none'}. Train the parent with "
            f"train.branch_horizons=[{','.join(f'{h:g}' for h in horizons)}] and optim.decay_fraction="
            f"{optim.decay_fraction} to keep them")
    return branches


def branch_job(parent: Parent, branch: Branch, decay_fraction: float | None = None,
               overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """The branch's job: the parent's, as a wsd run of ``branch.steps`` steps under its own name
    beside the parent, tracked in the parent's store, then the user's dotted ``overrides``
    (anything but model, data and diffusion)."""
    base = to_dict(parent.job)
    base["tracking"]["tags"] = {k: v for k, v in base["tracking"]["tags"].items()
                                if not k.startswith(STUDY_TAG_PREFIX)}
    settings = {
        "name": branch.name,
        "train": {"steps": branch.steps, "branch_horizons": []},
        "optim": {"lr_schedule": "wsd",
                  **({"decay_fraction": decay_fraction} if decay_fraction is not None else {})},
        "cluster": {"storage_path": parent.run_dir.rsplit("/", 1)[0]},
        "tracking": {"tracking_uri": parent.tracking_uri},
    }
    try:
        merged = OmegaConf.merge(OmegaConf.structured(JobConfig), base, settings)
        for item in overrides:
            if "=" not in item:
                raise UserError(f"override {item!r} must look like dotted.key=value")
            if item.split(".", 1)[0].split("=", 1)[0] in FROZEN:
                raise UserError(f"override {item!r}: a branch continues the parent's checkpoint, so it keeps "
                                f"the parent's {', '.join(FROZEN)}")
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        job: JobConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise ConfigError(f"branch overrides: {str(err).splitlines()[0]}") from None
    job.validate()
    if job.optim.decay_start(job.train.steps) != branch.start_step:
        raise UserError(f"overrides: the branch must decay from step {branch.start_step} (where the parent's "
                        f"checkpoint is); set the decay with --decay-fraction, not optim.decay_fraction or train.steps")
    return job


def branch_tags(parent: Parent, branch: Branch) -> dict[str, Any]:
    return {TAG_PARENT_RUN_ID: parent.run_id or "", TAG_PARENT: parent.name, TAG_HORIZON: branch.horizon,
            TAG_START_STEP: branch.start_step}


def branch_status(job: JobConfig) -> str:
    """``new`` (no run yet), ``done`` (a complete checkpoint at its last step) or ``partial``."""
    run_dir = job.run_dir()
    if not storage.exists(f"{run_dir}/{RUN_RECORD}"):
        return "new"
    complete, _ = scan(run_dir)
    return "done" if complete and complete[0].step >= job.train.steps else "partial"


def run_branches(run: str, horizons: list[float], storage_path: str = "runs", decay_fraction: float | None = None,
                 overrides: list[str] | tuple[str, ...] = (), address: str | None = None) -> list[tuple[Branch, Any]]:
    """Train every branch of ``run`` (one after the other); a finished one is skipped, an
    interrupted one resumed. Every branch is checked before the first one starts. Returns
    (branch, ``TrainOutcome`` or None when it was already done) per horizon."""
    from xdlm.train.launch import run_training

    parent = find_parent(run, storage_path)
    branches = plan_branches(parent, horizons, decay_fraction)
    jobs = [branch_job(parent, b, decay_fraction, overrides) for b in branches]
    results = []
    for branch, job in zip(branches, jobs, strict=True):
        if address:
            job.cluster.address = address
        status = branch_status(job)
        if status == "done":
            print(f"xdlm: branch {job.name} is already trained to step {job.train.steps}: skipped", flush=True)
            results.append((branch, None))
            continue
        print(f"xdlm: branch {job.name}: steps {branch.start_step} -> {branch.steps} from {branch.checkpoint}",
              flush=True)
        outcome = run_training(job, resume=status == "partial", parent_run_id=parent.run_id or None,
                               init_checkpoint=branch.checkpoint, tags=branch_tags(parent, branch))
        results.append((branch, outcome))
    return results
