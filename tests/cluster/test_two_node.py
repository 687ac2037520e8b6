"""``xdlm submit`` against a real two-node Ray cluster (tests/cluster/conftest.py), reached only
through the Jobs and state APIs: a 2-worker job spreads over both nodes and logs to a tracking
server whose artifacts are in the S3 bucket, with its checkpoints in the bucket; a two-trial
sweep puts a trial on each node; and two real faults: the second node killed mid-run (Ray Train
restarts from the last checkpoint once the node is back) and the driver stopped with
``xdlm jobs stop`` (its actors end, ``--resume`` continues from storage). Both faulted runs end
with the uninterrupted run's weights, bit for bit."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from tests.train.conftest import without_clock
from xdlm.checkpoint import latest_checkpoint, read_checkpoint, scan
from xdlm.cli import main

pytestmark = pytest.mark.slow
STEPS = 12
# the quickstart cut to seconds: 1 layer x 32 on 300 kB of pydoc English, 2 workers x 1 CPU (one
# per node), a checkpoint every 3 steps, one evaluation at the end
SHORT = [f"train.steps={STEPS}", "train.checkpoint_every=3", f"train.eval_every={STEPS}", "train.log_every=1",
         "train.global_batch=8", "train.micro_batch=4", "train.eval_batches=1", "optim.warmup_steps=2",
         "data.source=stdlib-docs", "data.max_train_bytes=300000", "data.max_eval_bytes=40000",
         "data.bpe_train_bytes=300000", "data.vocab_size=512", "data.seq_len=32", "data.eval_sets=[]",
         "model.size=custom", "model.n_layers=1", "model.hidden=32", "model.n_heads=2", "model.max_seq_len=64",
         "model.cond_dim=32", "eval.sample_steps=[2]", "eval.num_samples=2", "tracking.log_samples=0",
         "tracking.system_metrics_interval_s=0", "cluster.num_workers=2", "cluster.cpus_per_worker=1",
         "cluster.max_failures=2"]


@pytest.fixture
def xdlm(two_nodes, capsys, monkeypatch):
    """``xdlm ARGS --address <the cluster>`` in this process, with the cluster's token file."""
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(two_nodes.token_file))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main([*argv, "--address", two_nodes.address])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def job_of(out: str) -> str:
    return out.split(" as job ")[1].split()[0]


def worker_nodes(cluster, job_id: str) -> set[str]:
    return {a["node_id"] for a in cluster.job_actors(job_id) if a["class_name"] == "RayTrainWorker" and a["node_id"]}


@pytest.fixture(scope="module")
def shared(tmp_path_factory, s3_endpoint):
    """A data cache every job shares (built once, by the first job) and a tracking server whose
    artifact root is in the S3 bucket (SQLite store: the PostgreSQL one is tests/services')."""
    from xdlm.tracking.server import LocalMlflowServer

    root = tmp_path_factory.mktemp("two-node")
    server = LocalMlflowServer(root / "mlflow", artifacts_destination=f"s3://{s3_endpoint['bucket']}/mlflow")
    server.start()
    try:
        yield {"cache": str(root / "cache"), "runs": root / "runs", "server": server,
               "bucket": s3_endpoint["bucket"]}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference(two_nodes, shared):
    """The uninterrupted run, submitted with ``--follow``: tracked on the server, checkpoints in
    the bucket. Module-scoped: the fault tests compare their weights with its."""
    import pytest as _pytest

    mp = _pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_TOKEN_PATH", str(two_nodes.token_file))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = f"ref-{uuid.uuid4().hex[:6]}"
    storage = f"s3://{shared['bucket']}/two-node"
    import contextlib
    import io

    out = io.StringIO()
    start = time.monotonic()
    try:
        with contextlib.redirect_stdout(out):
            rc = main(["submit", "jobs/quickstart.yaml", *SHORT, f"data.cache_dir={shared['cache']}",
                       f"cluster.storage_path={storage}", f"tracking.tracking_uri={shared['server'].url}",
                       "--name", name, "--python", sys.executable, "--address", two_nodes.address, "--follow"])
    finally:
        mp.undo()
    text = out.getvalue()
    assert rc == 0, text[-4000:]
    return {"name": name, "job": job_of(text), "out": text, "storage": storage, "seconds": time.monotonic() - start}


def final_state_s3(storage: str, name: str, tmp_path: Path) -> dict:
    """The newest complete checkpoint's state, downloaded from the bucket."""
    import boto3

    newest = scan(f"{storage}/{name}")[0][0]
    bucket, _, key = newest.uri.removeprefix("s3://").partition("/")
    boto3.client("s3").download_file(bucket, f"{key}/state.pt", str(tmp_path / "state.pt"))
    return torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=False)


def assert_same_weights(a: dict, b: dict) -> None:
    assert without_clock(a["counters"]) == without_clock(b["counters"])
    assert a["counters"]["step"] == STEPS
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def test_the_quickstart_spreads_over_both_nodes_and_is_tracked_with_checkpoints_in_the_bucket(
        two_nodes, shared, reference, xdlm):
    import boto3
    import requests

    out = reference["out"]
    assert f"job {reference['job']}: SUCCEEDED" in out and "step" in out  # the followed log came through
    nodes = worker_nodes(two_nodes, reference["job"])
    assert len(nodes) == 2 and nodes == {n["node_id"] for n in two_nodes.nodes() if n["state"] == "ALIVE"}

    # the run through the MLflow REST API: FINISHED, every step's loss, the final evaluation
    api = f"{shared['server'].url}/api/2.0/mlflow"
    exp = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "xdlm"}, timeout=10).json()
    found = requests.post(f"{api}/runs/search", json={"experiment_ids": [exp["experiment"]["experiment_id"]],
                          "filter": f"attributes.run_name = '{reference['name']}'"}, timeout=10).json()["runs"]
    assert len(found) == 1 and found[0]["info"]["status"] == "FINISHED"
    run_id = found[0]["info"]["run_id"]
    history = requests.get(f"{api}/metrics/get-history", params={"run_id": run_id, "metric_key": "train/loss",
                           "max_results": 1000}, timeout=10).json()["metrics"]
    assert sorted(m["step"] for m in history) == list(range(1, STEPS + 1))
    assert "val/nelbo" in {m["key"] for m in found[0]["data"]["metrics"]}
    # its artifacts are objects in the bucket, under the server's artifact root
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=shared["bucket"], Prefix="mlflow/")
            .get("Contents", [])]
    assert any(run_id in k and k.endswith("config/job.yaml") for k in keys), keys[:20]
    assert any(run_id in k and "/logs/driver_" in k for k in keys)
    # and its checkpoints are complete in the bucket, the newest at the last step (retention keeps 3)
    assert [c.step for c in scan(f"{reference['storage']}/{reference['name']}")[0]] == [12, 9, 6]


def test_a_two_trial_sweep_puts_a_trial_on_each_node(two_nodes, shared, xdlm, tmp_path):
    tiny = ["train.steps=3", "train.global_batch=8", "train.micro_batch=8", "train.eval_every=3",
            "train.checkpoint_every=3", "train.eval_batches=1", "optim.warmup_steps=1", "model.n_layers=1",
            "model.hidden=32", "model.n_heads=2", "data.markov.validation_sequences=16", "eval.sample_steps=[2]",
            "eval.num_samples=2", "tracking.log_samples=0", "tracking.system_metrics_interval_s=0"]
    name = f"sw-{uuid.uuid4().hex[:6]}"
    rc, out, err = xdlm("submit", "sweeps/synthetic_k.yaml", f"name={name}", "search.replicates=1",
                        "space={diffusion.k: {kind: grid, values: [0.0, 1.0]}}", "base.overrides=[" + ",".join(repr(t) for t in tiny) + "]",
                        f"storage_path={tmp_path}", "budget.trial_time_s=null", "--python", sys.executable, "--no-wait")
    assert rc == 0, err
    job_id = job_of(out)
    rc, out, err = xdlm("jobs", "logs", job_id, "--follow")  # streams until the sweep ends
    assert "SUCCEEDED" in err, out[-3000:] + err
    seen = worker_nodes(two_nodes, job_id)  # DEAD by now; the state API keeps where they ran
    assert len(seen) == 2, f"the trials' workers ran on {len(seen)} node(s)"


def test_killing_the_second_node_mid_run_restarts_from_the_last_checkpoint(two_nodes, shared, reference, xdlm,
                                                                            tmp_path):
    """The node that holds worker 1 is killed (its raylet, agents and workers: SIGKILL to the
    whole node). A 2-worker x 1-CPU job cannot fit on the head alone, so the node joins again (as
    an autoscaler would replace it) and Ray Train restarts the group from the last checkpoint."""
    name = f"kill-{uuid.uuid4().hex[:6]}"
    runs = shared["runs"]
    rc, out, err = xdlm("submit", "jobs/quickstart.yaml", *SHORT, f"data.cache_dir={shared['cache']}",
                        f"cluster.storage_path={runs}", f"tracking.tracking_uri={shared['server'].url}",
                        "--name", name, "--python", sys.executable, "--no-wait")
    assert rc == 0, err
    job_id = job_of(out)
    run_dir = runs / name
    deadline = time.monotonic() + 120
    while not (run_dir.is_dir() and scan(str(run_dir))[0]):  # the first checkpoint is whole
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    at_kill = scan(str(run_dir))[0][0].step
    killed = time.monotonic()
    two_nodes.kill_node2()
    time.sleep(3)  # the head notices (fast health checks) and Train sees worker 1 gone
    two_nodes.start_node2()
    rejoined = time.monotonic() - killed
    rc, logs, err = xdlm("jobs", "logs", job_id, "--follow")
    assert "SUCCEEDED" in err, logs[-4000:]
    assert_same_weights(read_checkpoint(latest_checkpoint(run_dir)), final_state_s3(
        reference["storage"], reference["name"], tmp_path))
    print(f"\nnode kill: checkpoint at step {at_kill} when killed; node back after {rejoined:.1f} s; "
          f"run total {time.monotonic() - killed:.1f} s after the kill", file=sys.stderr)


def test_a_stopped_job_ends_its_actors_and_resumes_from_storage(two_nodes, shared, reference, xdlm, tmp_path):
    name = f"stop-{uuid.uuid4().hex[:6]}"
    runs = shared["runs"]
    args = ["jobs/quickstart.yaml", *SHORT, f"data.cache_dir={shared['cache']}", f"cluster.storage_path={runs}",
            f"tracking.tracking_uri={shared['server'].url}", "--name", name, "--python", sys.executable]
    rc, out, err = xdlm("submit", *args, "--no-wait")
    assert rc == 0, err
    job_id = job_of(out)
    run_dir = runs / name
    deadline = time.monotonic() + 120
    while not (run_dir.is_dir() and scan(str(run_dir))[0]):
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    start = time.monotonic()
    rc, out, err = xdlm("jobs", "stop", job_id)
    stop_s = time.monotonic() - start
    assert rc == 0 and "none of its actors is left" in out, out + err
    assert not [a for a in two_nodes.job_actors(job_id) if a["state"] != "DEAD" and not a.get("is_detached")]
    assert two_nodes.free_cpus() == 2.0  # both workers' CPUs are free again
    last = scan(str(run_dir))[0][0].step
    assert last < STEPS

    rc, out, err = xdlm("submit", *args, "--resume", "--follow")
    assert rc == 0, out[-4000:] + err
    assert f"resuming run '{name}' from step {last} " in out
    assert_same_weights(read_checkpoint(latest_checkpoint(run_dir)), final_state_s3(
        reference["storage"], reference["name"], tmp_path))
    print(f"\ndriver stop: stopped in {stop_s:.1f} s at checkpoint step {last}; resumed from it", file=sys.stderr)
