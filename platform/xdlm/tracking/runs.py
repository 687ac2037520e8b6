"""Run lifecycle: where runs are tracked, creating/resuming them, and cleaning up after crashes.

These calls are synchronous and meant for the driver (or rank 0 before training starts): unlike
``RunLogger`` they raise, after retrying transient failures for ``retry_for_s`` seconds, because
a run that cannot even be created is better reported at once than discovered hours later.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from xdlm.tracking.flatten import clean_tags

log = logging.getLogger(__name__)

T = TypeVar("T")

# MLflow's own defaults (7 retries with backoff factor 2, 120 s timeout) make one failed request
# block for minutes; RunLogger retries by itself, so each request should fail fast instead.
FAST_FAILURE_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")

_LOCAL_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def resolve_tracking_uri(run_dir: str | os.PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` if set (a team server), else a SQLite store inside ``run_dir``.

    The fallback keeps a laptop run self-contained: ``mlflow ui --backend-store-uri`` on the
    printed URI shows it later, and nothing is written outside the run directory.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{run_dir / 'mlflow.db'}"


def configure_fast_http_failures() -> None:
    """Make MLflow HTTP requests fail within seconds instead of minutes when the server is down.

    MLflow reads these variables on every request, and they are process-wide; values the user
    set explicitly are kept.
    """
    for name, value in FAST_FAILURE_HTTP_ENV.items():
        os.environ.setdefault(name, value)


def make_client(tracking_uri: str) -> MlflowClient:
    configure_fast_http_failures()
    return MlflowClient(tracking_uri=tracking_uri)


def is_transient_error(error: BaseException) -> bool:
    """True for failures worth retrying: server unreachable, overloaded or erroring (5xx/429).

    A 4xx answer (bad key, param changed, run not found) will fail the same way again.
    MLflow reports a refused connection as INTERNAL_ERROR (500), so it lands here as transient.
    """
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status in (408, 429)
    if isinstance(error, _LOCAL_FILE_ERRORS):
        return False  # an artifact that vanished or cannot be read will not come back
    return isinstance(error, (OSError, TimeoutError, ConnectionError)) or (
        type(error).__module__.startswith(("requests", "urllib3", "sqlalchemy"))
    )


def call_with_retries(fn: Callable[[], T], retry_for_s: float, what: str) -> T:
    """Call ``fn``, retrying transient errors with exponential backoff for up to ``retry_for_s``."""
    deadline = time.monotonic() + retry_for_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as error:
            if not is_transient_error(error) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, _first_line(error), delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def local_artifact_location(tracking_uri: str) -> str | None:
    """For a ``sqlite:///`` store, an ``artifacts`` directory next to the database file.

    Without it MLflow would put a local store's artifacts under the current directory (wherever
    the job happened to start); next to the database, a run directory stays self-contained.
    Servers decide their artifact location themselves: None.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri[len(prefix) :])
    return (database.parent / "artifacts").resolve().as_uri()


def get_or_create_experiment(
    client: MlflowClient, experiment_name: str, artifact_location: str | None = None
) -> str:
    """The experiment's id, creating it (or restoring a deleted one) as needed.

    Ray Tune's ``setup_mlflow`` raises unless the experiment already exists, so drivers call
    this before launching trials. Concurrent creators (sweep trials) are fine: whoever loses the
    race reads the winner's experiment. ``artifact_location`` only applies to a new experiment
    (default: ``local_artifact_location`` of the client's tracking URI).
    """
    if artifact_location is None:
        artifact_location = local_artifact_location(client.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        try:
            return client.create_experiment(experiment_name, artifact_location=artifact_location)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def start_run(
    tracking_uri: str,
    experiment_name: str,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    retry_for_s: float = 60.0,
) -> str:
    """Create a run (or resume ``run_id``) and return its id.

    - The experiment is created if missing.
    - ``run_id`` given: the run is set RUNNING again (it may have been marked KILLED by
      ``close_stale_runs`` or ended by a previous attempt) and ``tags`` are added; its metrics
      continue where they stopped.
    - ``parent_run_id`` given: the ``mlflow.parentRunId`` tag nests the run under it in the UI
      (sweep trials under the sweep's run; Tune's MLflow callback does not do this itself).
    """
    client = make_client(tracking_uri)
    run_tags = clean_tags(tags or {})
    if parent_run_id:
        run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id

    def create_or_resume() -> str:
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            for key, value in run_tags.items():
                client.set_tag(run_id, key, value)
            return run_id
        experiment_id = get_or_create_experiment(client, experiment_name)
        run = client.create_run(experiment_id, tags=run_tags, run_name=run_name)
        return run.info.run_id

    what = f"resuming MLflow run {run_id}" if run_id else f"creating MLflow run {run_name!r}"
    return call_with_retries(create_or_resume, retry_for_s, what)


def find_runs(
    client: MlflowClient,
    experiment_name: str,
    run_name: str | None = None,
    statuses: Iterable[str] = (),
) -> list:
    """Runs of ``experiment_name`` (optionally with this name and one of these statuses)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    filters = []
    if run_name is not None:
        filters.append(f"attributes.run_name = {_quote(run_name)}")
    statuses = list(statuses)
    if len(statuses) == 1:
        filters.append(f"attributes.status = {_quote(statuses[0])}")
    runs, page_token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            filter_string=" and ".join(filters),
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=page_token,
        )
        runs.extend(r for r in page if not statuses or r.info.status in statuses)
        page_token = page.token
        if not page_token:
            return runs


def close_stale_runs(
    tracking_uri: str,
    experiment_name: str,
    run_name: str,
    status: str = "KILLED",
    keep_run_ids: Iterable[str] = (),
    retry_for_s: float = 60.0,
) -> list[str]:
    """Mark runs named ``run_name`` still RUNNING as ``status`` (KILLED); return their ids.

    A driver killed with SIGKILL (or a lost node) never ends its run, so MLflow shows it RUNNING
    forever. On resume the driver knows better: every RUNNING run of the same name belongs to a
    dead attempt. ``keep_run_ids`` spares runs that are legitimately live (e.g. the run the
    caller is about to resume itself, if it prefers not to flip it).
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
    client = make_client(tracking_uri)
    keep = set(keep_run_ids)

    def close_all() -> list[str]:
        closed = []
        running = find_runs(client, experiment_name, run_name, statuses=["RUNNING"])
        for run in running:
            if run.info.run_id in keep:
                continue
            client.set_terminated(run.info.run_id, status=status)
            closed.append(run.info.run_id)
        return closed

    closed = call_with_retries(close_all, retry_for_s, f"closing stale runs of {run_name!r}")
    if closed:
        log.info("marked %d stale run(s) of %r as %s: %s", len(closed), run_name, status, closed)
    return closed


def run_status(tracking_uri: str, run_id: str) -> str:
    """The run's status name (RUNNING, FINISHED, FAILED, KILLED, SCHEDULED)."""
    status = make_client(tracking_uri).get_run(run_id).info.status
    return status if isinstance(status, str) else RunStatus.to_string(status)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
