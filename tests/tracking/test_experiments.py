"""One artifact root per store, and creating an experiment is safe when processes race.

All against real SQLite stores: the race is between real processes on one database file.
"""

from __future__ import annotations

import multiprocessing
import queue

import pytest
from mlflow import MlflowClient

from xdlm.tracking import (
    ensure_experiment,
    get_or_create_experiment,
    resolve_tracking_uri,
    start_run,
)
from xdlm.tracking.local_store import artifact_root

N_RACERS = 3
RACE_TIMEOUT_S = 120


def test_artifact_root_is_next_to_a_sqlite_database_and_left_to_servers(tmp_path):
    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    assert artifact_root(uri) == (tmp_path / "run" / "mlartifacts").resolve().as_uri()
    assert artifact_root(uri + "?timeout=30") == artifact_root(uri)
    assert artifact_root("http://mlflow.example:5000") is None
    assert artifact_root("databricks") is None


def open_like_training(uri: str) -> str:
    """What ``xdlm train`` does before its workers start (``train/launch.py``)."""
    ensure_experiment(uri, "lm")
    return start_run(uri, "lm", "train", tags={"xdlm.k": 0.5})


def open_like_a_sweep(uri: str) -> str:
    """What ``xdlm sweep`` does for its parent run (``tune/runner.py``)."""
    ensure_experiment(uri, "lm")
    return start_run(uri, "lm", "sweep", tags={"xdlm.kind": "sweep"})


@pytest.mark.parametrize(
    ("first", "second"),
    [(open_like_training, open_like_a_sweep), (open_like_a_sweep, open_like_training)],
    ids=["training-first", "sweep-first"],
)
def test_training_and_sweeps_put_artifacts_in_the_same_place(monkeypatch, tmp_path, first, second):
    """Whichever creates the experiment, both find the artifact root the other would choose."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(tmp_path / "runs")
    client = MlflowClient(uri)
    runs = [client.get_run(first(uri)), client.get_run(second(uri))]
    experiment = client.get_experiment_by_name("lm")
    expected = (tmp_path / "runs" / "mlartifacts").resolve().as_uri()
    assert experiment.artifact_location == expected
    for run in runs:
        assert run.info.experiment_id == experiment.experiment_id
        assert run.info.artifact_uri == f"{expected}/{run.info.run_id}/artifacts"


def test_a_deleted_experiment_is_restored(tmp_path):
    uri = resolve_tracking_uri(tmp_path)
    experiment_id = ensure_experiment(uri, "lm")
    MlflowClient(uri).delete_experiment(experiment_id)
    assert ensure_experiment(uri, "lm") == experiment_id
    assert MlflowClient(uri).get_experiment(experiment_id).lifecycle_stage == "active"


class _LookupOneMomentLate(MlflowClient):
    """A client whose first lookup predates another process creating the experiment."""

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri)
        self.lookups = 0

    def get_experiment_by_name(self, name):
        self.lookups += 1
        return None if self.lookups == 1 else super().get_experiment_by_name(name)


def test_creating_an_experiment_someone_just_created_returns_theirs(tmp_path):
    uri = resolve_tracking_uri(tmp_path)
    theirs = MlflowClient(uri).create_experiment("lm", artifact_location=artifact_root(uri))
    assert get_or_create_experiment(_LookupOneMomentLate(uri), "lm") == theirs


def _race_to_create(uri: str, name: str, start, results) -> None:
    """One racer: wait until every racer is ready, then create the experiment at once."""
    try:
        start.wait(timeout=RACE_TIMEOUT_S)
        results.put(("ok", ensure_experiment(uri, name, retry_for_s=60.0)))
    except BaseException as error:
        results.put(("error", f"{type(error).__name__}: {error}"))


def test_processes_creating_one_experiment_in_a_fresh_store_at_once_all_get_it(tmp_path):
    """The store's file does not exist yet: the racers also race to create its tables."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spawn = multiprocessing.get_context("spawn")  # fork would inherit this process's MLflow state
    start, results = spawn.Barrier(N_RACERS), spawn.Queue()
    racers = [
        spawn.Process(target=_race_to_create, args=(uri, "lm", start, results))
        for _ in range(N_RACERS)
    ]
    for racer in racers:
        racer.start()
    try:
        outcomes = [results.get(timeout=RACE_TIMEOUT_S) for _ in racers]
    except queue.Empty:
        outcomes = None
    finally:
        for racer in racers:
            racer.join(timeout=30)
            if racer.is_alive():
                racer.kill()
    assert outcomes is not None, "a racer never answered"
    assert [status for status, _ in outcomes] == ["ok"] * N_RACERS, outcomes
    experiment_ids = {experiment_id for _, experiment_id in outcomes}
    assert len(experiment_ids) == 1
    experiment = MlflowClient(uri).get_experiment(experiment_ids.pop())
    assert experiment.name == "lm"
    assert experiment.artifact_location == artifact_root(uri)
