"""The sweep driver: ``xdlm sweep SWEEP.yaml`` and ``xdlm sweep --resume NAME``.

Order matters, as in ``xdlm train``: the sweep is validated without Ray (``load_sweep``), then Ray
is joined and the concurrency rule is applied (``resources.py``: fail fast when no trial fits),
and only then is anything written: the sweep directory, the MLflow parent run (trials nest under
it through the ``mlflow.parentRunId`` tag, which Tune's own MLflow callback would not set), and
the Tune experiment. After ``Tuner.fit`` the driver settles what Tune does not tell MLflow:
trials ASHA stopped are marked (their runs would otherwise stay RUNNING: Tune kills the trial's
actor), the best trial is tagged, and the report is logged to the parent run.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import ray
from ray import tune

from xdlm.cluster.ray_session import ensure_ray
from xdlm.config import ConfigError, JobConfig, from_dict, to_dict, to_yaml
from xdlm.tracking.logger import RunLogger
from xdlm.tracking.runs import ensure_experiment, start_run
from xdlm.train.launch import default_tracking_uri, tracking_uri_of
from xdlm.train.preflight import preflight
from xdlm.tune import layout
from xdlm.tune.algorithms import build_scheduler, build_search_alg
from xdlm.tune.report import build_report
from xdlm.tune.resources import check_pbt_population, max_concurrent_trials, trial_resources
from xdlm.tune.settle import SweepOutcome, settle_trials, tune_verdicts
from xdlm.tune.space import param_space
from xdlm.tune.spec import SweepSpec, population_size, spec_from_dict, spec_to_dict, spec_to_yaml
from xdlm.tune.sweep import load_sweep
from xdlm.tune.trainable import run_trial

log = logging.getLogger(__name__)

# Trials report at checkpoints without evaluating (no metric there) and finals only at the end;
# load_sweep has already made sure the metric is reported when it matters.
DRIVER_ENV = {"TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}


def trial_dirname(trial) -> str:
    """Tune trial directories named by trial id only (module level: Tune pickles it)."""
    return trial.trial_id


def trainable_context(state: dict[str, Any]) -> dict[str, Any]:
    return {key: state[key] for key in ("name", "sweep_dir", "base_job", "tracking_uri", "parent_run_id")}


def build_trainable(state: dict[str, Any], trainable_cpus: float):
    with_context = tune.with_parameters(run_trial, sweep=trainable_context(state))
    return tune.with_resources(with_context, tune.PlacementGroupFactory([{"CPU": trainable_cpus}]))


def plan_concurrency(spec: SweepSpec, job: JobConfig) -> int:
    """Join Ray and apply the concurrency rule (raises when not even one trial fits)."""
    ensure_ray(job.cluster.address, object_store_memory_mb=job.cluster.object_store_memory_mb)
    need = trial_resources(job, spec.resources.trainable_cpus)
    concurrent = max_concurrent_trials(need, ray.cluster_resources(), spec.max_concurrent_trials)
    if spec.scheduler.kind == "pbt":
        check_pbt_population(population_size(spec), concurrent, need)
    log.info("sweep %s: each trial needs %s; running up to %d at once", spec.name, need.describe(), concurrent)
    return concurrent


def _tracking(job: JobConfig) -> tuple[str, str]:
    return default_tracking_uri(job), job.tracking.experiment


def open_parent_run(state: dict[str, Any], spec: SweepSpec, job: JobConfig, resume: bool):
    """Create (or reopen) the sweep's MLflow run; trials nest under it."""
    uri, experiment = state["tracking_uri"], state["experiment"]
    ensure_experiment(uri, experiment)  # the artifact root training uses too
    tags = {"xdlm.kind": "sweep", "xdlm.sweep": spec.name, "xdlm.sweep.metric": spec.metric,
            "xdlm.sweep.mode": spec.mode, "xdlm.sweep.dir": state["sweep_dir"]}
    run_id = start_run(uri, experiment, spec.name, tags, run_id=state.get("parent_run_id"))
    logger = RunLogger(uri, run_id, install_handlers=True, status_at_exit="KILLED")
    if not resume:
        as_dict = spec_to_dict(spec)
        logger.log_params({
            "metric": spec.metric, "mode": spec.mode, "search": as_dict["search"],
            "scheduler": as_dict["scheduler"], "resources": as_dict["resources"],
            "budget": as_dict["budget"], "space_keys": ",".join(spec.space),
            "max_concurrent_trials": state["max_concurrent_trials"],
        })
        logger.log_text(spec_to_yaml(spec), "sweep/spec.yaml")
        logger.log_text(to_yaml(job), "sweep/base_job.yaml")
    return run_id, logger


def run_sweep(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
              address: str | None = None) -> SweepOutcome:
    """Validate, plan, then run a new sweep to the end."""
    sweep = load_sweep(path, overrides)
    spec, job = sweep.spec, sweep.job
    if address:
        job.cluster.address = address
    storage_path = spec.storage_path or job.cluster.storage_path
    directory = layout.sweep_dir(storage_path, spec.name)
    if (directory / layout.SWEEP_STATE_FILE).exists():
        raise ConfigError(f"name: a sweep named {spec.name!r} already exists at {directory}; resume it with "
                          f"`xdlm sweep --resume {spec.name}` or choose another name (name=...)")
    preflight(job, tracking_uri_of(job), job.cluster.address or os.environ.get("RAY_ADDRESS"),
              ray_running=ray.is_initialized())
    concurrent = plan_concurrency(spec, job)

    uri, experiment = _tracking(job)
    job.tracking.tracking_uri = uri
    state = {"name": spec.name, "sweep_dir": str(directory), "storage_path": storage_path,
             "spec": spec_to_dict(spec), "base_job": to_dict(job), "tracking_uri": uri, "experiment": experiment,
             "max_concurrent_trials": concurrent, "created_at": time.time(), "parent_run_id": None}
    run_id, logger = open_parent_run(state, spec, job, resume=False)
    state["parent_run_id"] = run_id
    layout.write_state(directory, state)
    (directory / layout.TRIALS_DIR).mkdir(exist_ok=True)

    tuner = tune.Tuner(
        build_trainable(state, spec.resources.trainable_cpus),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, search_alg=build_search_alg(spec, concurrent),
            scheduler=build_scheduler(spec, job), num_samples=spec.search.num_samples,
            time_budget_s=spec.budget.sweep_time_s,
            trial_dirname_creator=trial_dirname,
            # a reused actor could still hold the previous trial's Ray Train run in its fit thread
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=layout.TUNE_DIR, storage_path=str(directory),
            failure_config=tune.FailureConfig(max_failures=spec.trial_max_failures), verbose=1,
        ),
    )
    return _fit(tuner, state, spec, logger)


def resume_sweep(name: str, storage_path: str = "runs", address: str | None = None) -> SweepOutcome:
    """Continue a sweep whose driver died: finished trials stay finished, the rest resume from
    their checkpoints (``Tuner.restore``), errored ones are retried."""
    directory = layout.locate(name, storage_path)
    state = layout.read_state(directory)
    spec = spec_from_dict(state["spec"])
    job = from_dict(state["base_job"])
    if address:
        job.cluster.address = address
    tune_path = directory / layout.TUNE_DIR
    if not tune.Tuner.can_restore(str(tune_path)):
        raise ConfigError(f"--resume: sweep {spec.name!r} at {directory} has no Tune state to restore "
                          "(its driver stopped before Tune started)")
    plan_concurrency(spec, job)
    _, logger = open_parent_run(state, spec, job, resume=True)
    logger.set_tags({"xdlm.sweep.resumed_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    tuner = tune.Tuner.restore(str(tune_path), trainable=build_trainable(state, spec.resources.trainable_cpus),
                               resume_unfinished=True, resume_errored=True)
    return _fit(tuner, state, spec, logger)


def _fit(tuner, state: dict[str, Any], spec: SweepSpec, logger) -> SweepOutcome:
    for key, value in DRIVER_ENV.items():
        os.environ.setdefault(key, value)
    try:
        with warnings.catch_warnings():
            # Tune suggests actor reuse for PBT; it is off on purpose (reuse_actors=False above)
            warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
            results = tuner.fit()
    except BaseException as err:
        logger.close("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    outcome = settle_trials(state, spec, tune_verdicts(results))
    try:
        build_report(Path(state["sweep_dir"]), log_to_mlflow=True)
    except Exception as err:  # a report problem must not turn a finished sweep into a failed one
        log.warning("sweep %s: report failed: %s", spec.name, err, exc_info=True)
    logger.close("KILLED" if outcome.interrupted else "FINISHED")
    return outcome
