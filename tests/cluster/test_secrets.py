"""Credentials never end up in what a run writes: recognisable fake secrets are planted in the
driver's environment (an AWS secret key, an MLflow password) beside the real Ray auth token of
the session cluster, a short run is tracked to the production stack, and everything the run
wrote is searched: params, tags, metric names, every artifact object, the checkpoint bucket
objects (weights included), the run record and job file, and what the driver printed."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3

from tests.cluster.stack import (
    QUICKSTART,
    bucket_keys,
    find_run,
    run_artifact_prefix,
    short_quickstart,
)
from xdlm.cli import main

AWS_SECRET = "xdlmFAKEsecretAWS0123456789abcdefXYZ"
MLFLOW_PASSWORD = "xdlmFAKEmlflowPassword42"


def test_no_credential_reaches_anything_the_run_wrote(production_mlflow, ray_session, s3_endpoint, tmp_path_factory,
                                                      monkeypatch, capsys):
    url, bucket = production_mlflow.url, s3_endpoint["bucket"]
    secrets = [AWS_SECRET, MLFLOW_PASSWORD]
    token_file = Path.home() / ".ray" / "auth_token"
    if token_file.is_file() and token_file.read_text().strip():
        secrets.append(token_file.read_text().strip())  # the live cluster's own token
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # moto takes any key
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "xdlm")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)  # the server runs without auth
    name = f"secrets-{uuid.uuid4().hex[:6]}"
    rc = main(["train", QUICKSTART, *short_quickstart(str(tmp_path_factory.mktemp("cache")), steps=3), f"name={name}",
               f"tracking.tracking_uri={url}", f"cluster.storage_path=s3://{bucket}/ckpt"])
    out, err = capsys.readouterr()
    assert rc == 0, out[-3000:] + err[-3000:]

    run = find_run(url, name)
    assert run["info"]["status"] == "FINISHED"
    texts = {"stdout": out, "stderr": err, "run (params, tags, metric names)": str(run)}
    s3 = boto3.client("s3")
    prefix = run_artifact_prefix(run, production_mlflow.artifact_prefix)
    artifact_keys = bucket_keys(bucket, prefix)
    checkpoint_keys = bucket_keys(bucket, f"ckpt/{name}/")
    assert any("/logs/driver_" in k for k in artifact_keys) and any(k.endswith("xdlm_run.json") for k in checkpoint_keys)
    assert any(k.endswith("/state.pt") for k in checkpoint_keys)
    for key in artifact_keys + checkpoint_keys:
        texts[key] = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("latin-1")
    assert len(texts) >= 10
    leaks = [(secret[:12] + "...", where) for where, text in texts.items() for secret in secrets if secret in text]
    assert not leaks, leaks
