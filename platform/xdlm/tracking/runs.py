"""Run lifecycle: where runs are tracked, their experiment, creating/resuming them, and cleaning
up after crashes.

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
from xdlm.tracking.local_store import artifact_root, exclusive_open

log = logging.getLogger(__name__)

T = TypeVar("T")

# MLflow's own defaults (7 retries with backoff factor 2, 120 s timeout) make one failed request
# block for minutes; RunLogger retries by itself, so each request should fail fast instead.
FAST_FAILURE_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
"""MLflow 3's name for a model-training experiment (its other kind is ``genai_development``)."""
TRAINING_LAYOUT_QUERY = "workflowType=machine_learning"
"""MLflow 3.17's UI opens in its GenAI layout unless a link carries this (its layout switch
reads the URL first, then the browser's last choice); every link the platform prints has it."""

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
    """A client with fast-failing HTTP; safe to create from many processes on a new SQLite file.

    Creating the client opens its store, and opening a new SQLite store creates its tables: the
    lock keeps concurrent openers (sweep trials) from building them twice.
    """
    configure_fast_http_failures()
    with exclusive_open(tracking_uri):
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
            log.warning("%s failed (%s); retrying in %.1f s", what, describe_error(error), delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def get_or_create_experiment(client: MlflowClient, experiment_name: str) -> str:
    """The experiment's id, creating it (or restoring a deleted one) as needed.

    A new experiment keeps its artifacts under ``local_store.artifact_root`` of the client's
    tracking URI (servers choose their own). Safe when processes race: whoever loses the race to
    create (or restore) the experiment reads the winner's instead of failing.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        try:
            return client.create_experiment(
                experiment_name, artifact_location=artifact_root(client.tracking_uri),
                tags={EXPERIMENT_KIND_TAG: TRAINING_KIND},
            )
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:  # created and deleted again meanwhile: nothing sane to return
                raise
    if experiment.lifecycle_stage == "deleted":
        try:
            client.restore_experiment(experiment.experiment_id)
        except MlflowException:
            if client.get_experiment(experiment.experiment_id).lifecycle_stage == "deleted":
                raise  # not restored by someone else either
    mark_training_experiment(client, experiment.experiment_id, experiment.tags)
    return experiment.experiment_id


def mark_training_experiment(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> None:
    """Tag an experiment as model training (``mlflow.experimentKind``) unless it has a kind;
    a failure to tag is only logged (the experiment works without it)."""
    if tags.get(EXPERIMENT_KIND_TAG):
        return
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    except MlflowException as error:
        log.warning("could not tag experiment %s as training: %s", experiment_id, describe_error(error))


def ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None,
           ui_base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of an experiment (or one of its runs) in the training layout:
    ``<server>/#/experiments/<id>[/runs/<run>]?workflowType=machine_learning``.

    An http(s) tracking URI is its own UI; for any other store (sqlite, files) the page is that
    of ``mlflow ui --backend-store-uri <uri>`` on ``ui_base`` (its default address).
    """
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else ui_base
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "/runs")
    return f"{base}/{page}?{TRAINING_LAYOUT_QUERY}"


def ensure_experiment(tracking_uri: str, experiment_name: str, retry_for_s: float = 60.0) -> str:
    """The id of ``experiment_name`` in the store at ``tracking_uri``, created if missing.

    Every driver (training, sweeps) calls this before its runs, so that all of them agree on the
    experiment's artifact root; Ray Tune's ``setup_mlflow`` also raises unless the experiment
    exists. Transient failures (server down, SQLite busy) are retried for ``retry_for_s``.
    """
    return call_with_retries(
        # The client inside the retries: creating it opens the store, the first contact with it.
        lambda: get_or_create_experiment(make_client(tracking_uri), experiment_name),
        retry_for_s,
        f"creating MLflow experiment {experiment_name!r}",
    )


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


def describe_error(error: BaseException) -> str:
    """One short line for a log message: MLflow errors can carry whole HTML pages or tracebacks."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
