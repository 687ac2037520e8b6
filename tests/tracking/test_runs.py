"""Run lifecycle against a real tracking server: create, nest, resume, clean up after crashes."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from xdlm.tracking import close_stale_runs, resolve_tracking_uri, start_run


def test_resolve_tracking_uri_prefers_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_tracking_uri(tmp_path) == "http://mlflow.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(tmp_path / "run") == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"


def test_start_run_creates_experiment_and_tags(tracking_uri, mlflow_client, experiment_name):
    run_id = start_run(tracking_uri, experiment_name, "train-a", tags={"git_sha": "abc123"})
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "train-a"
    assert run.data.tags["git_sha"] == "abc123"
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    assert run.info.experiment_id == experiment.experiment_id


def test_child_run_carries_parent_run_id(tracking_uri, mlflow_client, experiment_name):
    parent = start_run(tracking_uri, experiment_name, "sweep")
    child = start_run(tracking_uri, experiment_name, "trial-0", parent_run_id=parent)
    assert mlflow_client.get_run(child).data.tags[MLFLOW_PARENT_RUN_ID] == parent
    assert MLFLOW_PARENT_RUN_ID not in mlflow_client.get_run(parent).data.tags


def test_resume_sets_run_running_again(tracking_uri, mlflow_client, experiment_name):
    run_id = start_run(tracking_uri, experiment_name, "train")
    mlflow_client.set_terminated(run_id, status="KILLED")
    resumed = start_run(tracking_uri, experiment_name, "train", tags={"attempt": 2}, run_id=run_id)
    assert resumed == run_id
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["attempt"] == "2"


def test_close_stale_runs_kills_only_running_runs_of_that_name(
    tracking_uri, mlflow_client: MlflowClient, experiment_name
):
    orphan = start_run(tracking_uri, experiment_name, "train")  # its driver "died": never ended
    finished = start_run(tracking_uri, experiment_name, "train")
    mlflow_client.set_terminated(finished, status="FINISHED")
    other_name = start_run(tracking_uri, experiment_name, "eval")

    closed = close_stale_runs(tracking_uri, experiment_name, "train")

    assert closed == [orphan]
    assert mlflow_client.get_run(orphan).info.status == "KILLED"
    assert mlflow_client.get_run(finished).info.status == "FINISHED"
    assert mlflow_client.get_run(other_name).info.status == "RUNNING"
    assert close_stale_runs(tracking_uri, "no-such-experiment", "train") == []
