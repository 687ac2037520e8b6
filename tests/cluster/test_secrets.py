"""Credentials never end up in what a run wrote. Recognisable fake secrets (an AWS secret key, an
MLflow password; tests/cluster/conftest.py PLANTED) are in the environment of both nodes of the
two-node cluster, so of the submitted job's driver and of every Ray Train worker, and in the
submitting process's environment too; the cluster's Ray auth token is real. The session's
quickstart job (``quickstart_job``: submitted with ``xdlm submit``, tracked to PostgreSQL + S3,
checkpoints in the bucket) is then searched everywhere it left something: the job as Ray recorded
it (runtime_env, entrypoint, metadata), its logs (``xdlm jobs logs`` and Ray's log files of its
driver and workers on both nodes), the MLflow run (params, tags, metric names), every artifact
object, every checkpoint object (weights included) with the run record and job file, and what the
submitting process printed."""

from __future__ import annotations

import boto3

from tests.cluster.stack import PLANTED, PLANTED_SECRETS, bucket_keys, find_run, run_artifact_prefix
from xdlm.cli import main


def test_no_credential_reaches_anything_a_submitted_run_wrote(two_nodes, quickstart_job, production_mlflow,
                                                              s3_endpoint, capsys, monkeypatch):
    from ray.job_submission import JobSubmissionClient

    bucket, job_id, name = s3_endpoint["bucket"], quickstart_job["job"], quickstart_job["name"]
    token = two_nodes.token_file.read_text().strip()
    secrets = [*PLANTED_SECRETS, token]
    # planted for real: each node's raylet, which starts the job's driver and workers, holds them
    environs = two_nodes.raylet_environs()
    assert len(environs) == 2
    assert all(env.get(key) == value for env in environs for key, value in PLANTED.items())

    texts = {"what `xdlm submit --follow` printed": quickstart_job["out"]}
    info = JobSubmissionClient(two_nodes.address, headers=two_nodes.headers()).get_job_info(job_id)
    assert info.runtime_env and info.runtime_env.get("env_vars"), info.runtime_env  # there is something to search
    texts["the job as Ray recorded it (runtime_env, entrypoint, metadata)"] = repr(info)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(two_nodes.token_file))
    assert main(["jobs", "logs", job_id, "--address", two_nodes.address]) == 0
    texts["xdlm jobs logs"] = capsys.readouterr().out
    assert name in texts["xdlm jobs logs"]
    files = two_nodes.job_log_files(job_id)
    assert any(f.name.startswith("job-driver-") for f in files)
    assert len({f.parents[2] for f in files if f.name.startswith("worker-")}) >= 2  # workers' logs of both nodes
    for path in files:
        texts[str(path)] = path.read_bytes().decode("latin-1")

    run = find_run(production_mlflow.url, name)
    texts["the MLflow run (params, tags, metric names)"] = str(run)
    s3 = boto3.client("s3")
    artifact_keys = bucket_keys(bucket, run_artifact_prefix(run, production_mlflow.artifact_prefix))
    checkpoint_keys = bucket_keys(bucket, f"{quickstart_job['storage'].removeprefix(f's3://{bucket}/')}/{name}/")
    assert any("/logs/driver_" in k for k in artifact_keys) and any(k.endswith("xdlm_run.json") for k in checkpoint_keys)
    assert any(k.endswith("/state.pt") for k in checkpoint_keys)
    for key in artifact_keys + checkpoint_keys:
        texts[key] = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("latin-1")
    assert len(texts) >= 15
    leaks = [(secret[:12] + "...", where) for where, text in texts.items() for secret in secrets if secret in text]
    assert not leaks, leaks
