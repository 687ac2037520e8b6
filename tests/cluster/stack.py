"""Shared by the production-stack tests: the quickstart job cut to seconds (on the session Ray and
on the two-node cluster), and reading a run back the way an outside tool would: MLflow's REST API
and the bucket's objects."""

from __future__ import annotations

from pathlib import Path

import boto3
import requests

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "jobs/quickstart.yaml")


def short_quickstart(cache_dir: str, steps: int = 6, log_every: int = 1) -> list[str]:
    """jobs/quickstart.yaml cut to seconds: 300 kB of the stdlib, a 2-layer model, 2 workers at
    half a CPU each, a checkpoint every 3 steps."""
    return ["data.max_train_bytes=300000", "data.max_eval_bytes=40000", "data.bpe_train_bytes=300000",
            "data.vocab_size=512", "data.seq_len=32", f"data.cache_dir={cache_dir}", "data.eval_sets=[]",
            "model.size=custom", "model.n_layers=2", "model.hidden=64", "model.n_heads=2", "model.max_seq_len=64",
            "model.cond_dim=32", "optim.warmup_steps=2", f"train.steps={steps}", "train.global_batch=8",
            "train.micro_batch=4", f"train.log_every={log_every}", f"train.eval_every={min(3, steps)}",
            f"train.checkpoint_every={min(3, steps)}", "train.eval_batches=1", "train.precision=fp32",
            "cluster.num_workers=2", "cluster.cpus_per_worker=0.5", "cluster.max_failures=0",
            "eval.sample_steps=[2]", "eval.num_samples=2", "tracking.log_samples=1",
            "tracking.system_metrics_interval_s=0"]


#: fake credentials in the two-node cluster's environment and the submitting process's
#: (tests/cluster/conftest.py); moto takes any key, the MLflow server runs without auth
PLANTED = {"AWS_SECRET_ACCESS_KEY": "xdlmFAKEsecretAWS0123456789abcdefXYZ", "MLFLOW_TRACKING_USERNAME": "xdlm",
           "MLFLOW_TRACKING_PASSWORD": "xdlmFAKEmlflowPassword42"}
PLANTED_SECRETS = (PLANTED["AWS_SECRET_ACCESS_KEY"], PLANTED["MLFLOW_TRACKING_PASSWORD"])

#: the quickstart on the two-node cluster (tests/cluster/conftest.py): 1 layer x 32, 2 workers x 1
#: CPU (one per node), a checkpoint every 3 steps, one evaluation at the end. 24 steps (~4 s of
#: training) leave the fault test room to stop or kill between two checkpoints before the end.
TWO_NODE_STEPS = 24
TWO_NODE_QUICKSTART = [
    f"train.steps={TWO_NODE_STEPS}", "train.checkpoint_every=3", f"train.eval_every={TWO_NODE_STEPS}",
    "train.log_every=1", "train.global_batch=8", "train.micro_batch=4", "train.eval_batches=1",
    "optim.warmup_steps=2", "data.source=stdlib-docs", "data.max_train_bytes=300000", "data.max_eval_bytes=40000",
    "data.bpe_train_bytes=300000", "data.vocab_size=512", "data.seq_len=32", "data.eval_sets=[]",
    "model.size=custom", "model.n_layers=1", "model.hidden=32", "model.n_heads=2", "model.max_seq_len=64",
    "model.cond_dim=32", "eval.sample_steps=[2]", "eval.num_samples=2", "tracking.log_samples=0",
    "tracking.system_metrics_interval_s=0", "cluster.num_workers=2", "cluster.cpus_per_worker=1",
    "cluster.max_failures=2"]


def api(url: str, endpoint: str, **params) -> dict:
    """GET ``/api/2.0/mlflow/<endpoint>``, raising on an HTTP error."""
    reply = requests.get(f"{url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    reply.raise_for_status()
    return reply.json()


def find_run(url: str, name: str, experiment: str = "xdlm") -> dict:
    """The one run named ``name``, through runs/search (as a dashboard or script would)."""
    runs = search_runs(url, f"attributes.run_name = '{name}'", experiment)
    assert len(runs) == 1, f"{len(runs)} runs named {name!r}"
    return runs[0]


def search_runs(url: str, filter_string: str, experiment: str = "xdlm") -> list[dict]:
    """Every run of ``experiment`` that matches ``filter_string`` (runs/search)."""
    experiment_id = api(url, "experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
    reply = requests.post(f"{url}/api/2.0/mlflow/runs/search", timeout=30, json={
        "experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000})
    reply.raise_for_status()
    return reply.json().get("runs", [])


def metric_history(url: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every (step, value) of a metric, all pages of metrics/get-history."""
    points, token = [], None
    while True:
        params = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        if token:
            params["page_token"] = token
        body = api(url, "metrics/get-history", **params)
        points += [(int(m["step"]), float(m["value"])) for m in body.get("metrics", [])]
        token = body.get("next_page_token")
        if not token:
            return sorted(points)


def bucket_keys(bucket: str, prefix: str) -> list[str]:
    keys, token = [], None
    client = boto3.client("s3")
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def run_artifact_prefix(run: dict, stack_prefix: str) -> str:
    """The bucket prefix of a run's proxied artifacts: ``mlflow-artifacts:/<exp>/<run>/artifacts``
    maps to ``<stack_prefix>/<exp>/<run>/artifacts/``."""
    uri = run["info"]["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:/"), uri
    return f"{stack_prefix}/{uri.removeprefix('mlflow-artifacts:/').strip('/')}/"
