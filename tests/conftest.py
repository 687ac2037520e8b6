"""Session-wide fixtures: one local Ray for every test that needs it, an S3 endpoint on loopback,
offline switches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

S3_BUCKET = "xdlm-test"
# PostgreSQL and the production MLflow server (PostgreSQL store, S3 artifacts): tests/services
pytest_plugins = ("tests.services.fixtures",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on loopback with one bucket; its address is exported
    through the standard AWS variables, so boto3, pyarrow and Ray workers all reach it."""
    port = free_port()
    # The venv's own moto: an older one elsewhere on PATH fails multipart uploads of pyarrow.
    exe = str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(os.environ.get("XDLM_MOTO_LOG", os.devnull), "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    import boto3

    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client("s3").create_bucket(Bucket=S3_BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    yield {"url": url, "bucket": S3_BUCKET}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """A real local Ray shared by all tests (starting one costs ~5 s and ~2 GB). It starts after
    the S3 endpoint so that its workers inherit the endpoint's environment."""
    import ray

    from xdlm.cluster.ray_session import ensure_ray

    ensure_ray(num_cpus=2, object_store_memory_mb=256)
    yield ray
    ray.shutdown()
