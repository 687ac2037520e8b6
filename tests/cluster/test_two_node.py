"""``xdlm submit`` against a real two-node Ray cluster (tests/cluster/conftest.py), reached only
through the Jobs and state APIs, tracking to the production stack (an MLflow server on PostgreSQL
with its artifacts in the S3 bucket, tests/services). The quickstart (``quickstart_job``, submitted
once per session) spreads its 2 workers over both nodes; its run is found through MLflow's REST
API, its artifacts and checkpoints as objects in the bucket. A two-trial sweep puts a trial on each
node; its parent run and trials are in the same store (a sweep keeps its state, and so its trials'
checkpoints, on a shared filesystem: here a local directory). Two real faults: the second node
killed mid-run (Ray Train restarts from the last checkpoint once the node is back) and the driver
stopped with ``xdlm jobs stop`` (its actors end, ``--resume`` continues from storage). Both
faulted runs end with the quickstart's weights, bit for bit: same job, same seed."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import torch

from tests.cluster.stack import (
    QUICKSTART,
    TWO_NODE_QUICKSTART,
    TWO_NODE_STEPS,
    bucket_keys,
    find_run,
    metric_history,
    run_artifact_prefix,
    search_runs,
)
from tests.train.conftest import without_clock
from xdlm.checkpoint import RUN_RECORD, latest_checkpoint, read_checkpoint, scan
from xdlm.cli import main

pytestmark = pytest.mark.slow
STEPS = TWO_NODE_STEPS


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


def final_state_s3(storage: str, name: str, tmp_path: Path) -> dict:
    """The newest complete checkpoint's state, downloaded from the bucket."""
    newest = scan(f"{storage}/{name}")[0][0]
    bucket, _, key = newest.uri.removeprefix("s3://").partition("/")
    boto3.client("s3").download_file(bucket, f"{key}/state.pt", str(tmp_path / "state.pt"))
    return torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=False)


def assert_same_weights(a: dict, b: dict) -> None:
    assert without_clock(a["counters"]) == without_clock(b["counters"])
    assert a["counters"]["step"] == STEPS
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def wait_for_checkpoint(run_dir: Path, after: int = 0, timeout_s: float = 120) -> int:
    """The step of the newest complete checkpoint of a run on local storage, once there is one
    past step ``after``."""
    deadline = time.monotonic() + timeout_s
    while True:
        complete = scan(str(run_dir))[0] if run_dir.is_dir() else []
        if complete and complete[0].step > after:
            return complete[0].step
        assert time.monotonic() < deadline, f"no checkpoint past step {after} within {timeout_s:.0f} s"
        time.sleep(0.2)


def test_the_quickstart_spreads_over_both_nodes_and_is_tracked_to_postgres_and_the_bucket(
        two_nodes, quickstart_job, production_mlflow, s3_endpoint):
    job, url, bucket = quickstart_job, production_mlflow.url, s3_endpoint["bucket"]
    assert f"job {job['job']}: SUCCEEDED" in job["out"] and "step" in job["out"]  # the followed log came through
    nodes = worker_nodes(two_nodes, job["job"])
    assert len(nodes) == 2 and nodes == job["nodes"]

    # the run through the MLflow REST API: FINISHED, its params, every step's loss, the evaluation
    run = find_run(url, job["name"])
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["train.steps"] == str(STEPS) and params["cluster.storage_path"] == job["storage"]
    assert params["cluster.num_workers"] == "2"
    assert [s for s, _ in metric_history(url, run_id, "train/loss")] == list(range(1, STEPS + 1))
    assert [s for s, _ in metric_history(url, run_id, "val/nelbo")] == [STEPS]

    # its artifacts are objects in the bucket, where the server put them, and nowhere else
    prefix = run_artifact_prefix(run, production_mlflow.artifact_prefix)
    artifacts = {k.removeprefix(prefix) for k in bucket_keys(bucket, prefix)}
    assert {"config/job.yaml", "final_metrics.json", "data_summary.json"} <= artifacts, artifacts
    assert any(a.startswith("logs/driver_") for a in artifacts), artifacts
    server_dir = production_mlflow.server.artifacts_dir
    assert not (server_dir.exists() and any(server_dir.iterdir()))
    s3 = boto3.client("s3")
    assert f"name: {job['name']}" in s3.get_object(Bucket=bucket, Key=f"{prefix}config/job.yaml")["Body"].read().decode()

    # its checkpoints are whole in the bucket, the newest at the last step (retention keeps 3), and
    # the run record points at the MLflow run
    key = job["storage"].removeprefix(f"s3://{bucket}/") + "/" + job["name"]
    complete, broken = scan(f"{job['storage']}/{job['name']}")
    assert [c.step for c in complete] == [STEPS, STEPS - 3, STEPS - 6] and not broken
    names = {k.rsplit("/", 1)[1] for k in bucket_keys(bucket, f"{key}/{complete[0].name}/")}
    assert {"state.pt", "job.yaml", "manifest.json"} <= names, names
    record = json.loads(s3.get_object(Bucket=bucket, Key=f"{key}/{RUN_RECORD}")["Body"].read())
    assert record["mlflow_run_id"] == run_id and record["tracking_uri"] == url
    print(f"\nquickstart on two nodes: {job['seconds']:.0f} s from submit to SUCCEEDED", file=sys.stderr)


def test_a_two_trial_sweep_puts_a_trial_on_each_node_and_is_tracked_to_postgres_and_the_bucket(
        two_nodes, production_mlflow, s3_endpoint, xdlm, tmp_path):
    url, bucket = production_mlflow.url, s3_endpoint["bucket"]
    tiny = ["train.steps=3", "train.global_batch=8", "train.micro_batch=8", "train.eval_every=3",
            "train.checkpoint_every=3", "train.log_every=1", "train.eval_batches=1", "optim.warmup_steps=1",
            "model.n_layers=1", "model.hidden=32", "model.n_heads=2", "data.markov.validation_sequences=16",
            "eval.sample_steps=[2]", "eval.num_samples=2", "tracking.log_samples=0",
            "tracking.system_metrics_interval_s=0", f"tracking.tracking_uri={url}"]
    name = f"sw-{uuid.uuid4().hex[:6]}"
    rc, out, err = xdlm("submit", "sweeps/synthetic_k.yaml", f"name={name}", "search.replicates=1",
                        "space={diffusion.k: {kind: grid, values: [0.0, 1.0]}}",
                        "base.overrides=[" + ",".join(repr(t) for t in tiny) + "]",
                        f"storage_path={tmp_path}", "budget.trial_time_s=null", "--python", sys.executable, "--no-wait")
    assert rc == 0, err
    assert f"at {url} (the sweep's parent run and its trials)" in out
    job_id = job_of(out)
    rc, out, err = xdlm("jobs", "logs", job_id, "--follow")  # streams until the sweep ends
    assert "SUCCEEDED" in err, out[-3000:] + err
    seen = worker_nodes(two_nodes, job_id)  # DEAD by now; the state API keeps where they ran
    assert len(seen) == 2, f"the trials' workers ran on {len(seen)} node(s)"

    # the parent run and its two trials, through the REST API
    parent = find_run(url, name)
    assert parent["info"]["status"] == "FINISHED"
    trials = search_runs(url, f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'")
    assert len(trials) == 2 and {t["info"]["status"] for t in trials} == {"FINISHED"}
    ks = sorted(float({p["key"]: p["value"] for p in t["data"]["params"]}["diffusion.k"]) for t in trials)
    assert ks == [0.0, 1.0]
    s3 = boto3.client("s3")
    for trial in trials:
        run_id, run_name = trial["info"]["run_id"], trial["info"]["run_name"]
        assert [s for s, _ in metric_history(url, run_id, "train/loss")] == [1, 2, 3]
        assert [s for s, _ in metric_history(url, run_id, "val/nelbo")] == [3]
        # the trial's artifacts in the bucket; its checkpoints on the sweep's filesystem
        prefix = run_artifact_prefix(trial, production_mlflow.artifact_prefix)
        assert f"name: {run_name}" in s3.get_object(Bucket=bucket, Key=f"{prefix}config/job.yaml")["Body"].read().decode()
        complete, broken = scan(str(tmp_path / "sweeps" / name / "trials" / run_name))
        assert [c.step for c in complete] == [3] and not broken
    parent_artifacts = {k.removeprefix(run_artifact_prefix(parent, production_mlflow.artifact_prefix))
                        for k in bucket_keys(bucket, run_artifact_prefix(parent, production_mlflow.artifact_prefix))}
    assert {"sweep/spec.yaml", "sweep/base_job.yaml"} <= parent_artifacts, parent_artifacts
    assert any(a.startswith("report/") for a in parent_artifacts), parent_artifacts


def test_a_stopped_job_resumes_from_storage_and_survives_losing_a_node(two_nodes, quickstart_job, production_mlflow,
                                                                      xdlm, tmp_path):
    """Two real faults on one run (a job start costs ~30 s here, so they share one):

    1. once the first checkpoint is whole the driver is stopped with ``xdlm jobs stop``: the
       job's actors end and both CPUs are free again;
    2. ``xdlm submit --resume`` continues from that checkpoint, and once it has written one more
       the node that holds worker 1 is killed (SIGKILL to the whole node: raylet, agents and
       workers). A 2-worker x 1-CPU group cannot fit on the head alone, so the node joins again
       (as an autoscaler would replace it) and Ray Train restarts the group, which resumes from
       the newest checkpoint on storage. (Killed while Ray Train is still starting the group, not
       yet training, the run fails instead: Ray 2.60 counts that as a controller error, which it
       never retries; ``--resume`` recovers it.)

    The run then ends with the quickstart's weights, bit for bit."""
    name = f"fault-{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / name
    args = [QUICKSTART, *TWO_NODE_QUICKSTART, f"data.cache_dir={quickstart_job['cache']}",
            f"cluster.storage_path={tmp_path}", f"tracking.tracking_uri={production_mlflow.url}", "--name", name,
            "--python", sys.executable]
    rc, out, err = xdlm("submit", *args, "--no-wait")
    assert rc == 0, err
    job_id = job_of(out)
    wait_for_checkpoint(run_dir)
    start = time.monotonic()
    rc, out, err = xdlm("jobs", "stop", job_id)
    stop_s = time.monotonic() - start
    assert rc == 0 and "none of its actors is left" in out, out + err
    assert not [a for a in two_nodes.job_actors(job_id) if a["state"] != "DEAD" and not a.get("is_detached")]
    # both workers' CPUs are free again (the resource view can lag the actors' deaths a little)
    deadline = time.monotonic() + 20
    while two_nodes.free_cpus() != 2.0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert two_nodes.free_cpus() == 2.0
    last = scan(str(run_dir))[0][0].step
    assert last < STEPS

    rc, out, err = xdlm("submit", *args, "--resume", "--no-wait")
    assert rc == 0, out[-4000:] + err
    resumed = job_of(out)
    at_kill = wait_for_checkpoint(run_dir, after=last)
    killed, old_node = time.monotonic(), two_nodes.node2_id
    two_nodes.kill_node2()
    time.sleep(3)  # the head notices (fast health checks) and Train sees worker 1 gone
    new_node = two_nodes.start_node2()
    rejoined = time.monotonic() - killed
    rc, logs, err = xdlm("jobs", "logs", resumed, "--follow")
    assert "SUCCEEDED" in err, logs[-4000:]
    assert f"resuming run '{name}' from step {last} " in logs
    # the kill hit the running group: Ray Train started a second one, with a worker on the new node
    assert logs.count("Attempting to start training worker group") >= 2, logs[-4000:]
    assert {old_node, new_node} <= worker_nodes(two_nodes, resumed)
    assert_same_weights(read_checkpoint(latest_checkpoint(run_dir)), final_state_s3(
        quickstart_job["storage"], quickstart_job["name"], tmp_path))
    print(f"\ndriver stop: stopped in {stop_s:.1f} s at checkpoint step {last}; node killed in the resumed run "
          f"at checkpoint step {at_kill}: back after {rejoined:.1f} s, run done {time.monotonic() - killed:.1f} s "
          "after the kill", file=sys.stderr)
