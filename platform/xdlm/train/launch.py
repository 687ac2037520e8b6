"""The driver of ``xdlm train``: validate, prepare the run record and MLflow run, start Ray Train.

Order matters: everything that can be wrong with the request (config values, an existing run
without --resume, a resume with another model shape, more workers than the cluster has) is
checked before any worker starts, and none of those checks writes anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from xdlm.checkpoint import (
    FAILURE_RECORD,
    JOB_FILE,
    MANIFEST,
    RUN_RECORD,
    NoCompleteCheckpoint,
    scan,
)
from xdlm.cluster import storage
from xdlm.cluster.ray_session import check_resources, ensure_ray
from xdlm.cluster.run_lock import acquire
from xdlm.config import ConfigError, JobConfig, from_dict, to_dict, to_yaml
from xdlm.errors import RunFailed, UserError
from xdlm.eval import metric_names
from xdlm.tracking.driver_log import DriverLog
from xdlm.tracking.logger import RunLogger
from xdlm.tracking.runs import close_stale_runs, ensure_experiment, make_client, start_run, ui_url
from xdlm.train import run_page
from xdlm.train.loop import train_loop_per_worker
from xdlm.train.preflight import preflight

# No public API names it; tests/train/test_preflight.py fails loudly if Ray renames it.
RAY_CHECKPOINT_RECORD = "checkpoint_manager_snapshot.json"
# Sections a resumed run must share with the original: they decide what the checkpoint means.
FROZEN_ON_RESUME = ("model", "data", "diffusion")


@dataclass
class TrainOutcome:
    run_dir: str
    run_id: str | None
    tracking_uri: str | None
    checkpoint: str | None
    metrics: dict[str, Any]
    experiment_id: str | None = None

    def ui_url(self) -> str | None:
        """The run's page in the MLflow UI, training layout (``tracking.runs.ui_url``)."""
        if not (self.run_id and self.tracking_uri and self.experiment_id):
            return None
        return ui_url(self.tracking_uri, self.experiment_id, self.run_id)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def check_run_dir(job: JobConfig, resume: bool) -> dict[str, Any] | None:
    """Refuse to overwrite an existing run and to resume an incompatible one; return its record."""
    run_dir = job.run_dir()
    record_uri = f"{run_dir}/{RUN_RECORD}"
    if not storage.exists(record_uri):
        if resume:
            raise ConfigError(f"--resume: there is no run named {job.name!r} under {job.cluster.storage_path}")
        return None
    if not resume:
        raise ConfigError(
            f"name: a run named {job.name!r} already exists at {run_dir}; pass --resume to continue it "
            "or choose another name (name=...)"
        )
    record = json.loads(storage.read_text(record_uri))
    old = from_dict(record["job"])
    changed = [d for section in FROZEN_ON_RESUME
               for d in differences(to_dict(old)[section], to_dict(job)[section], f"{section}.")]
    # DDP keeps the optimizer in state.pt, ZeRO in per-rank shards: a checkpoint of one cannot feed the other
    changed += differences(old.train.deepspeed, job.train.deepspeed, "train.deepspeed.")
    if changed:
        raise ConfigError(
            f"--resume: run {job.name!r} was trained with a different configuration; its checkpoints "
            f"cannot be loaded into this one ({'; '.join(changed)})"
        )
    return record


def tracking_uri_of(job: JobConfig) -> str:
    """tracking.tracking_uri, else MLFLOW_TRACKING_URI, else a sqlite store beside the runs."""
    if job.tracking.tracking_uri:
        return job.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    base = job.cluster.storage_path if storage.is_local(job.cluster.storage_path) else "runs"
    return f"sqlite:///{os.path.abspath(os.path.expanduser(base))}/mlflow.db"


def default_tracking_uri(job: JobConfig) -> str:
    """``tracking_uri_of(job)``, with the directory of a sqlite store created."""
    uri = tracking_uri_of(job)
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")), exist_ok=True)
    return uri


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def open_mlflow_run(job: JobConfig, tracking_uri: str, record: dict | None, parent_run_id: str | None = None,
                    extra_tags: dict[str, Any] | None = None):
    """Create (or resume) the job's MLflow run and log what is known before training: the
    config as params (with a size preset's real model dimensions), tags (k, schedule, size, user,
    source, the description); returns (run id, experiment id, logger)."""
    experiment_id = ensure_experiment(tracking_uri, job.tracking.experiment)  # the artifact root sweeps use too
    run_id = record.get("mlflow_run_id") if record else None
    if run_id is None:
        close_stale_runs(tracking_uri, job.tracking.experiment, job.name)
    parent_link = run_page.run_link(tracking_uri, experiment_id, parent_run_id) if parent_run_id else None
    tags = {
        "xdlm.k": job.diffusion.k, "xdlm.schedule": job.diffusion.schedule, "xdlm.model_size": job.model.size,
        "xdlm.backbone": job.model.backbone, "xdlm.dataset": job.data.source, "mlflow.source.git.commit": git_commit(),
        **run_page.source_tags(),
        run_page.NOTE_TAG: run_page.description(job, None, parent_link, extra_tags),
        **{key: str(value) for key, value in job.tracking.tags.items()}, **(extra_tags or {}),
    }
    run_id = start_run(tracking_uri, job.tracking.experiment, job.name, tags, run_id=run_id,
                       parent_run_id=parent_run_id)
    logger = RunLogger(tracking_uri, run_id, spill_dir=spill_dir_of(job), install_handlers=True, status_at_exit="KILLED")
    params = to_dict(job)
    params["model"].update(run_page.resolved_model_params(job))
    logger.log_params(params)
    logger.log_text(to_yaml(job), "config/job.yaml")
    return run_id, experiment_id, logger


def run_training(job: JobConfig, resume: bool = False, parent_run_id: str | None = None,
                 tracking: bool = True, extra_callbacks: list | None = None,
                 fault: dict | None = None, init_checkpoint: str | None = None,
                 tags: dict[str, Any] | None = None, take_over: bool = False) -> TrainOutcome:
    """Run ``job`` on Ray Train (local Ray unless cluster.address / RAY_ADDRESS) to completion.

    ``init_checkpoint``: a checkpoint directory of *another* run to start from when this run has
    none of its own (weights, EMA, optimizer moments, step and data position; this job's
    hyperparameters). Sweeps use it for Population Based Training's exploit step.
    ``tags``: set on the MLflow run when it opens (sweeps name the trial there).
    ``take_over``: take the run's lock over from a process that is gone (``cluster.run_lock``).

    Raises ``UserError`` for anything wrong with the request, before Ray starts, and
    ``RunFailed`` when the workers stopped the run on purpose (a non-finite loss).
    """
    import ray.train

    job.validate()
    check_run_dir(job, resume)  # refuse early, before anything is written
    if init_checkpoint is not None and not storage.exists(f"{init_checkpoint}/{MANIFEST}"):
        raise UserError(f"init_checkpoint: no complete checkpoint at {init_checkpoint} (no {MANIFEST} there)")
    address = job.cluster.address or os.environ.get("RAY_ADDRESS")
    preflight(job, tracking_uri_of(job) if tracking else None, address, ray_running=ray.is_initialized())

    run_dir = job.run_dir()
    lock = acquire(run_dir, job.name, take_over=take_over)
    try:
        record = check_run_dir(job, resume)  # again: the name is ours only now
        announce_resume(job, record, run_dir)
        return _train_locked(job, record, run_dir, parent_run_id, tracking, extra_callbacks, fault,
                             init_checkpoint, tags)
    finally:
        lock.release()
        if storage.is_local(run_dir) and os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)  # a refused request leaves nothing behind


def announce_resume(job: JobConfig, record: dict | None, run_dir: str) -> None:
    """Say which step a resume continues from: the newest complete checkpoint on storage,
    whatever Ray recorded.  A run that has checkpoints but none complete is an error, never a
    fresh start."""
    if record is None:
        return
    complete, broken = scan(run_dir)
    if complete:
        print(f"xdlm: resuming run {job.name!r} from step {complete[0].step} ({complete[0].name})", flush=True)
        return
    if broken:
        raise NoCompleteCheckpoint(f"--resume: run {job.name!r} has checkpoints but none is complete: "
                                   + "; ".join(f"{n}: {p}" for n, p in sorted(broken.items())))
    print(f"xdlm: run {job.name!r} has no checkpoint yet: it starts again from step 0", flush=True)


def _train_locked(job, record, run_dir, parent_run_id, tracking, extra_callbacks, fault, init_checkpoint,
                  tags) -> TrainOutcome:
    ensure_ray(job.cluster.address, object_store_memory_mb=job.cluster.object_store_memory_mb)
    check_resources(job.cluster.num_workers, job.cluster.cpus_per_worker, job.cluster.use_gpu)

    tracking_uri = default_tracking_uri(job) if tracking else None
    run_id, experiment_id, logger = (open_mlflow_run(job, tracking_uri, record, parent_run_id, tags) if tracking
                                     else (None, None, None))
    driver_log = DriverLog(driver_log_path(job)).start() if logger is not None else None
    try:
        metrics, checkpoint = _fit(job, record, run_dir, run_id, tracking_uri, extra_callbacks, fault, init_checkpoint)
    except BaseException as err:
        reason = out_of_space_reason(err, job)
        if logger is not None:
            end_after_error(logger, err, reason, driver_log)
        if reason:
            raise RunFailed(f"run {job.name!r}: {reason}") from None
        raise
    finally:
        if driver_log is not None:
            driver_log.stop()  # again after end_after_error: nothing
    if logger is not None:
        if checkpoint:
            logger.set_tags({"xdlm.final_checkpoint": checkpoint})
        finish_run_page(job, logger, tracking_uri, run_id, experiment_id, parent_run_id, tags)
        upload_driver_log(logger, driver_log, "FINISHED")
        metrics.update(final_metrics_from_mlflow(tracking_uri, run_id))
    return TrainOutcome(run_dir, run_id, tracking_uri, checkpoint, metrics, experiment_id)


def _fit(job, record, run_dir, run_id, tracking_uri, extra_callbacks, fault, init_checkpoint):
    """Write the run record, run Ray Train to the end; return (Ray's last metrics, the newest
    complete checkpoint). Raises ``RunFailed`` when the workers stopped the run on purpose."""
    import ray.train
    from ray.train.torch import TorchTrainer

    if record is None:
        storage.write_text(f"{run_dir}/{RUN_RECORD}", json.dumps(
            {"name": job.name, "mlflow_run_id": run_id, "tracking_uri": tracking_uri, "job": to_dict(job)}, indent=2))
    storage.write_text(f"{run_dir}/{JOB_FILE}", to_yaml(job))
    storage.delete(f"{run_dir}/{FAILURE_RECORD}")  # from an earlier attempt
    # Ray's own list of this run's checkpoints: we resume from storage instead, and our retention
    # deletes checkpoints that list still names, which Ray would refuse to start with
    storage.delete(f"{run_dir}/{RAY_CHECKPOINT_RECORD}")

    spill_dir = spill_dir_of(job)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": to_dict(job), "run_dir": run_dir, "run_id": run_id, "tracking_uri": tracking_uri,
                           "spill_dir": spill_dir, "fault": fault, "init_checkpoint": init_checkpoint},
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.cluster.num_workers, use_gpu=job.cluster.use_gpu,
            resources_per_worker={"CPU": job.cluster.cpus_per_worker, **({"GPU": 1} if job.cluster.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=job.name,
            storage_path=job.cluster.storage_path if "://" in job.cluster.storage_path
            else os.path.abspath(os.path.expanduser(job.cluster.storage_path)),
            failure_config=ray.train.FailureConfig(max_failures=job.cluster.max_failures),
            # retention is ours (xdlm.checkpoint.prune): Ray would delete an older good
            # checkpoint before knowing whether the new one is whole
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
            callbacks=extra_callbacks or None,
        ),
    )
    with sigterm_aborts_training():
        result = trainer.fit()
    failure = f"{run_dir}/{FAILURE_RECORD}"
    if storage.exists(failure):
        reason = json.loads(storage.read_text(failure))["reason"]
        stopped = RunFailed(f"run {job.name!r} stopped at {reason}")
        stopped.reason = reason
        raise stopped
    complete, _ = scan(run_dir)
    return dict(result.metrics or {}), (complete[0].uri if complete else None)


@contextmanager
def sigterm_aborts_training():
    """While ``trainer.fit()`` runs, a SIGTERM (how Ray Jobs stops a job: ``xdlm jobs stop``)
    first aborts the Ray Train run the way Ctrl-C does: Ray Train's own SIGINT handler, installed
    inside ``fit``, asks the controller to abort, which ends the workers and frees their CPUs.
    Then the SIGTERM handler that was there runs (ending the MLflow run KILLED, then the process).
    Without it the workers end only once Ray notices that the driver that owns them is gone."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # Tune runs trials in threads; signals reach only the main thread
        return
    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        abort = signal.getsignal(signal.SIGINT)
        if callable(abort) and abort is not before_int:  # Ray Train's, once fit has started its controller
            print("xdlm: SIGTERM: aborting the Ray Train run", flush=True)
            abort(signal.SIGINT, frame)
        signal.signal(signal.SIGTERM, before_term)
        if callable(before_term):
            before_term(signum, frame)
        elif before_term != signal.SIG_IGN:
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, before_term)


def driver_log_path(job: JobConfig) -> str:
    """Where this attempt's driver log is written until it is uploaded: a local temporary
    directory, never the run's storage (a full disk there is one of the failures it records)."""
    return os.path.join(tempfile.mkdtemp(prefix="xdlm-driver-log-"), f"driver_{time.strftime('%Y%m%dT%H%M%S')}.log")


def upload_driver_log(logger: RunLogger, driver_log: DriverLog | None, status: str) -> None:
    """Log the driver log as ``logs/driver_<start>.log`` and end the run; the local copy goes
    once delivered (else it stays for ``xdlm tracking flush``)."""
    if driver_log is not None:
        logger.log_artifact(driver_log.path, "logs")
    delivered = logger.close(status)
    if delivered and driver_log is not None:
        shutil.rmtree(driver_log.path.parent, ignore_errors=True)
    if not delivered:
        print(f"xdlm: the tracking server did not take every record; the rest is in {logger.spill_path} "
              f"and is delivered by `xdlm tracking flush` or the next --resume", flush=True)


def end_after_error(logger: RunLogger, err: BaseException, reason: str | None, driver_log: DriverLog | None) -> None:
    """End the MLflow run of an attempt that raised, whatever raised (the driver, a worker, Ray):
    KILLED for an interrupt (SystemExit is how Ray Tune stops a trial, e.g. ASHA), else FAILED
    with the exception as the tag ``xdlm.failure``, the traceback and the driver log as
    artifacts."""
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
        status = "KILLED"
    else:
        status = "FAILED"
        summary = reason or getattr(err, "reason", None) or run_page.failure_summary(err)
        logger.set_tags({run_page.FAILURE_TAG: summary})
        logger.log_text(run_page.failure_traceback(err), run_page.TRACEBACK_ARTIFACT)
        print(f"xdlm: run failed: {summary}", flush=True)
    if driver_log is not None:
        driver_log.stop()
    upload_driver_log(logger, driver_log, status)


def finish_run_page(job: JobConfig, logger: RunLogger, tracking_uri: str, run_id: str, experiment_id: str,
                    parent_run_id: str | None, tags: dict[str, Any] | None) -> None:
    """The end of a finished run: figures of its curves and the description with its final
    numbers. A courtesy: a tracker that does not answer costs these, never the run."""
    try:
        latest = dict(make_client(tracking_uri).get_run(run_id).data.metrics)
        run_page.log_figures(tracking_uri, run_id, latest.get(metric_names.UNIGRAM_PPL))
        parent_link = run_page.run_link(tracking_uri, experiment_id, parent_run_id) if parent_run_id else None
        logger.set_tags({run_page.NOTE_TAG: run_page.description(job, latest, parent_link, tags)})
    except Exception as err:
        print(f"xdlm: figures and description not logged ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''})", flush=True)


def out_of_space_reason(err: BaseException, job: JobConfig) -> str | None:
    """A one-line reason when the run died of a full disk (a worker's ENOSPC reaches the driver
    inside Ray's error text), else None.  The checkpoint being written is incomplete and so
    invisible (its manifest is missing or its sizes differ): the next --resume starts from the
    one before."""
    text = f"{err!r} {err}"
    if "No space left on device" not in text and "Errno 28" not in text:
        return None
    return (f"out of space writing to {job.cluster.storage_path} (No space left on device); free space "
            "or point cluster.storage_path elsewhere, then run again with --resume")


def spill_dir_of(job: JobConfig) -> str | None:
    """Where a run's undelivered MLflow records wait (local storage only)."""
    if not storage.is_local(job.cluster.storage_path):
        return None
    return os.path.join(os.path.abspath(os.path.expanduser(job.cluster.storage_path)), job.name, "mlflow_spill")


def flush_spill(run: str, storage_path: str = "runs", timeout_s: float = 120.0) -> tuple[int, int]:
    """Deliver the spilled records of run ``run`` (a name under ``storage_path`` or a run
    directory) to its MLflow run; returns (delivered, still undelivered)."""
    run_dir = run if os.path.isdir(run) and os.path.isfile(os.path.join(run, RUN_RECORD)) else \
        os.path.join(os.path.abspath(os.path.expanduser(storage_path)), run)
    record_path = os.path.join(run_dir, RUN_RECORD)
    if not os.path.isfile(record_path):
        raise UserError(f"run {run!r}: no run record at {record_path}")
    with open(record_path) as f:
        record = json.load(f)
    if not record.get("mlflow_run_id"):
        raise UserError(f"run {run!r} was not tracked: nothing to flush")
    spill = os.path.join(run_dir, "mlflow_spill")
    if not os.path.isdir(spill) or not os.listdir(spill):
        return 0, 0
    logger = RunLogger(record["tracking_uri"], record["mlflow_run_id"], spill_dir=spill, install_handlers=False)
    logger.close(status=None, timeout=timeout_s)  # adopts the spill files and delivers them
    return logger.stats["delivered"], logger.queued_records()


def final_metrics_from_mlflow(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The run's latest metrics, or {} when the tracker is down: the run's outcome does not
    depend on the tracker being up at the end (what could not be delivered is spilled)."""
    try:
        return dict(make_client(tracking_uri).get_run(run_id).data.metrics)
    except Exception as err:
        print(f"xdlm: the tracking server did not answer after training ({str(err).splitlines()[0]}); "
              "the run itself finished: its checkpoints are complete", flush=True)
        return {}


def latest_samples(tracking_uri: str, run_id: str, max_chars: int = 1500) -> str | None:
    """The newest samples the run logged (its final ones: a few per sampler step count), from
    its samples table, for the driver to print; or None."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        client = make_client(tracking_uri)
        if metric_names.SAMPLES_TABLE not in {a.path for a in client.list_artifacts(run_id)}:
            return None
        with open(client.download_artifacts(run_id, metric_names.SAMPLES_TABLE)) as f:
            table = json.load(f)
        rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    except Exception:  # printing samples is a courtesy; never fail the command for it
        return None
    if not rows:
        return None
    last = max(row["step"] for row in rows)
    parts = [f"# step {row['step']}, {row['sampler_steps']} sampler steps, k = {row['k']}, sample {row['index']}\n"
             f"{row['text']}" for row in rows if row["step"] == last and row["index"] < 2]
    text = "\n\n".join(parts)
    return text if len(text) <= max_chars else text[:max_chars] + " [...]"
