"""RunLogger against a real tracking server: what is logged is what MLflow shows."""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from mlflow import MlflowClient

from xdlm.tracking import RunLogger, resolve_tracking_uri, start_run


@pytest.fixture
def run_id(tracking_uri, experiment_name) -> str:
    return start_run(tracking_uri, experiment_name, "train")


def make_logger(tracking_uri, run_id, tmp_path, **kwargs) -> RunLogger:
    kwargs.setdefault("install_handlers", False)
    return RunLogger(tracking_uri, run_id, spill_dir=tmp_path / "spill", **kwargs)


def test_metrics_params_tags_and_artifacts_round_trip(
    tracking_uri, mlflow_client: MlflowClient, run_id, tmp_path
):
    checkpoint_note = tmp_path / "note.md"
    checkpoint_note.write_text("# best checkpoint: step 9\n")
    logger = make_logger(tracking_uri, run_id, tmp_path)
    for step in range(10):
        logger.log_metrics({"train/loss": 10.0 - step, "train/lr": 1e-3}, step=step)
    logger.log_params({"model": {"hidden": 64, "layers": 2}, "optim": {"lr": 1e-3}})
    logger.set_tags({"stage": "pretrain"})
    logger.log_text("step 9: the cat sat", "samples/step_9.txt")
    logger.log_dict({"model": {"hidden": 64}}, "config/resolved.yaml")
    logger.log_dict({"tokens_seen": 1234}, "stats.json")
    logger.log_artifact(checkpoint_note, "notes")
    assert logger.close("FINISHED", timeout=60)

    history = mlflow_client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 10.0 - s) for s in range(10)]
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"model.hidden": "64", "model.layers": "2", "optim.lr": "0.001"}
    assert run.data.tags["stage"] == "pretrain"
    top = {a.path for a in mlflow_client.list_artifacts(run_id)}
    assert top == {"samples", "config", "stats.json", "notes"}
    assert [a.path for a in mlflow_client.list_artifacts(run_id, "notes")] == ["notes/note.md"]
    download = tmp_path / "download"
    download.mkdir()
    local = mlflow_client.download_artifacts(run_id, "config/resolved.yaml", str(download))
    assert yaml.safe_load(open(local)) == {"model": {"hidden": 64}}
    local = mlflow_client.download_artifacts(run_id, "stats.json", str(download))
    assert json.load(open(local)) == {"tokens_seen": 1234}


def test_more_than_1000_metrics_in_one_flush_are_all_delivered(
    tracking_uri, mlflow_client, run_id, tmp_path
):
    logger = make_logger(tracking_uri, run_id, tmp_path)
    wide = {f"layer_{i}/grad_norm": float(i) for i in range(1500)}  # one call, > 1 batch
    logger.log_metrics(wide, step=0)
    for step in range(1200):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    assert logger.flush(timeout=60)
    assert logger.stats["delivered"] == 2700

    metrics = mlflow_client.get_run(run_id).data.metrics
    assert all(metrics[key] == value for key, value in wide.items())
    history = mlflow_client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1200))
    logger.close()


def test_exception_in_context_manager_ends_run_failed(
    tracking_uri, mlflow_client, run_id, tmp_path
):
    with pytest.raises(RuntimeError, match="diverged"):
        with make_logger(tracking_uri, run_id, tmp_path) as logger:
            logger.log_metrics({"loss": float("nan")}, step=3)
            raise RuntimeError("loss diverged")
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.metrics.get("loss") is not None  # logged before the failure, still delivered


def test_context_manager_ends_run_finished(tracking_uri, mlflow_client, run_id, tmp_path):
    with make_logger(tracking_uri, run_id, tmp_path) as logger:
        logger.log_metric("loss", 0.5, step=1)
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"


def test_refused_records_are_dropped_alone_and_nothing_raises(
    tracking_uri, mlflow_client, run_id, tmp_path, caplog
):
    logger = make_logger(tracking_uri, run_id, tmp_path)
    with caplog.at_level(logging.WARNING, logger="xdlm.tracking"):
        # The server refuses "!" in keys: only that record may be lost, not its batch.
        logger.log_metrics({"ok/a": 1.0, "bad key!": 2.0, "ok/b": 3.0}, step=0)
        logger.log_metrics({"ok/c": "not a number", "ok/d": 4.0}, step=0)
        logger.log_metrics(None, step=0)  # type: ignore[arg-type]
        logger.log_params({"lr": 0.1})
        logger.log_params({"lr": 0.2})  # params are immutable: kept at 0.1, warned
        logger.log_artifact(tmp_path / "does-not-exist.bin")
        assert logger.close(timeout=60)
    run = mlflow_client.get_run(run_id)
    assert run.data.metrics == {"ok/a": 1.0, "ok/b": 3.0, "ok/d": 4.0}
    assert run.data.params == {"lr": "0.1"}
    assert logger.stats["dropped"] == 2  # "bad key!" and the missing file
    assert run.info.status == "FINISHED"
    assert "dropping" in caplog.text and "cannot change" in caplog.text
    logger.log_metrics({"late": 1.0})  # after close: ignored, no error


def test_close_restores_signal_handlers_and_excepthook(tracking_uri, run_id, tmp_path):
    import signal
    import sys

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sys.excepthook)
    logger = make_logger(tracking_uri, run_id, tmp_path, install_handlers=True)
    installed = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sys.excepthook)
    assert all(ours != theirs for ours, theirs in zip(installed, before, strict=True))
    logger.close()
    after = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sys.excepthook)
    assert after == before


def test_local_sqlite_store_keeps_the_run_directory_self_contained(monkeypatch, tmp_path):
    """Without a tracking server (laptop default) runs and artifacts live in the run dir."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    uri = resolve_tracking_uri(run_dir)
    run_id = start_run(uri, "local", "train")
    with make_logger(uri, run_id, tmp_path) as logger:
        logger.log_metrics({"loss": 2.0}, step=0)
        logger.log_text("hello", "samples/0.txt")
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [2.0]
    assert (
        run_dir / "mlartifacts" / run_id / "artifacts" / "samples" / "0.txt"
    ).read_text() == "hello"
