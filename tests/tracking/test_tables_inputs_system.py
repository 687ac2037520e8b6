"""RunLogger's tables, dataset inputs and system metrics on a real sqlite MLflow store, including
the way back through the spill file (what an outage does to them)."""

from __future__ import annotations

import json
import time

import pytest
from mlflow import MlflowClient

from xdlm.tracking.logger import RunLogger
from xdlm.tracking.records import dataset_input
from xdlm.tracking.runs import start_run
from xdlm.tracking.spill import SpillFile
from xdlm.tracking.system_metrics import SystemMetrics


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, start_run(uri, "e", "r")


def read_table(client: MlflowClient, run_id: str, path: str, tmp_path) -> list[dict]:
    with open(client.download_artifacts(run_id, path, str(tmp_path))) as f:
        table = json.load(f)
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def test_tables_append_and_dataset_inputs_arrive_also_through_the_spill_file(store, tmp_path):
    uri, run_id = store
    spill = tmp_path / "spill"
    first = RunLogger(uri, run_id, spill_dir=spill, install_handlers=False)
    first.log_table({"step": [1], "text": ["a"]}, "samples.json")
    first.log_inputs([dataset_input("src/train", "d1", json.dumps({"uri": "/x"}), "local",
                                    {"num_tokens": 10, "tokenizer_hash": "bpe-1"}, "training")])
    assert first.close(status=None)
    # records a logger could not deliver wait in the run's spill file (JSON lines); the next
    # logger of the run replays them
    SpillFile(first.spill_path).append([("table", {"step": [2, 2], "text": ["b", "c"]}, "samples.json")])
    second = RunLogger(uri, run_id, spill_dir=spill, install_handlers=False)
    assert second.close(status=None)
    client = MlflowClient(uri)
    assert read_table(client, run_id, "samples.json", tmp_path) == [
        {"step": 1, "text": "a"}, {"step": 2, "text": "b"}, {"step": 2, "text": "c"}]
    run = client.get_run(run_id)
    assert "samples.json" in run.data.tags["mlflow.loggedArtifacts"]
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.name == "src/train" and json.loads(logged.dataset.profile)["num_tokens"] == 10
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "training")]


def test_system_metrics_are_sampled_and_the_last_sample_published_at_stop(store, tmp_path):
    uri, run_id = store
    logger = RunLogger(uri, run_id, spill_dir=tmp_path / "spill", install_handlers=False)
    system = SystemMetrics(logger, uri, run_id, interval_s=0.3)
    assert system.start()
    time.sleep(1.2)
    started = time.monotonic()
    system.stop()
    assert time.monotonic() - started < 2  # never waits on more than one sample
    assert logger.close(status=None)
    client = MlflowClient(uri)
    history = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(history) >= 2 and [m.step for m in history] == list(range(len(history)))
    assert client.get_metric_history(run_id, "system/system_memory_usage_megabytes")[0].value > 0
    assert not SystemMetrics(logger, uri, run_id, interval_s=0).start()  # 0 disables
