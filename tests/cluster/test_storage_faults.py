"""Checkpoints on an S3 endpoint that fails a fraction of requests (a fault-injecting proxy in
front of moto, tests/services/faulty_proxy.py): whatever fails, the "latest" checkpoint a resume
would pick is always whole and loads; never a half-written one.

Checkpoint directories are uploaded with Ray Train's own upload function, as a worker's
``ray.train.report`` does (no Ray needed: seconds instead of a training run)."""

from __future__ import annotations

import tempfile
import uuid

import pyarrow.fs as pafs
import pytest
import torch

from tests.cluster.stack import bucket_keys
from tests.services.faulty_proxy import FAULT_KINDS, FaultyProxy
from xdlm.checkpoint import open_newest, read_checkpoint, scan, write_checkpoint
from xdlm.train.loop import checkpoint_landed

# what ray.train.report(checkpoint=...) calls to copy a worker's checkpoint directory to storage
from ray.train.v2._internal.execution.storage import _upload_to_fs_path  # noqa: E402  isort: skip


@pytest.fixture
def proxy(s3_endpoint):
    with FaultyProxy(s3_endpoint["url"]) as p:
        yield p


def proxied(proxy: FaultyProxy) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=proxy.url.removeprefix("http://"), scheme="http",
                             region="us-east-1")


def upload_checkpoint(fs, run_path: str, step: int, mb: float = 6.0) -> str:
    """Write a checkpoint of ``step`` locally (weights of ``mb`` MB: above the multipart
    threshold, so the upload is several requests) and upload it as Ray does."""
    name = f"checkpoint_2026-01-01_00-00-{step:02d}.000000"
    with tempfile.TemporaryDirectory() as tmp:
        weights = torch.full((int(mb * 2**20 / 4),), float(step))
        write_checkpoint(tmp, {"model": {"w": weights}, "counters": {"step": step}}, f"step: {step}\n")
        _upload_to_fs_path(tmp, fs, f"{run_path}/{name}")
    return name


def assert_latest_is_whole(run_uri: str, at_least: int) -> int:
    """The checkpoint a resume picks is complete, passes its checksums, loads, and is no older
    than the newest upload that reported success; returns its step."""
    with open_newest(run_uri) as found:
        assert found is not None
        directory, stored = found
        state = read_checkpoint(directory)
    assert state["counters"]["step"] == stored.step >= at_least
    assert torch.equal(state["model"]["w"], torch.full_like(state["model"]["w"], float(stored.step)))
    return stored.step


def test_an_upload_cut_mid_way_is_never_a_checkpoint(proxy, s3_endpoint):
    run_path = f"{s3_endpoint['bucket']}/faults-{uuid.uuid4().hex[:6]}/run"
    run_uri = f"s3://{run_path}"
    fs = proxied(proxy)
    upload_checkpoint(fs, run_path, step=2)
    # every request that carries the weights is cut half-way through its body (retries too)
    proxy.configure(fail_rate=1.0, kinds=("reset",), match=lambda method, path: "state.pt" in path
                    and method in ("PUT", "POST"))
    with pytest.raises(OSError):
        upload_checkpoint(fs, run_path, step=4)
    assert proxy.stats["reset"] >= 1
    complete, broken = scan(run_uri)
    assert [c.step for c in complete] == [2]
    landed = [k.rsplit("/", 1)[1] for k in bucket_keys(s3_endpoint["bucket"], run_path.split("/", 1)[1] + "/")
              if "-04." in k]
    assert "state.pt" not in landed  # an upload cut mid-way shows no object at all
    if "manifest.json" in landed:  # Ray copies in no particular order: the manifest may be there
        assert [p.endswith(" is missing") for p in broken.values()] == [True], broken
    assert assert_latest_is_whole(run_uri, at_least=2) == 2


def landed(bucket: str, run_key: str, step: int) -> bool:
    """All of a checkpoint's files are on storage (read from moto directly: the truth)."""
    names = {k.rsplit("/", 1)[1] for k in bucket_keys(bucket, f"{run_key}/checkpoint_2026-01-01_00-00-{step:02d}.")}
    return {"state.pt", "job.yaml", "manifest.json"} <= names


def test_checkpoints_under_random_faults_leave_a_whole_latest(proxy, s3_endpoint, seed=1):
    """Eight checkpoints uploaded while 35 % of writes fail in every way the proxy knows. Ray's
    upload (pyarrow.fs.copy_files 25) can report success with a file missing; the manifest makes
    such a checkpoint invisible, so after each upload the latest is exactly the newest one whose
    files all landed, and it loads."""
    bucket, run_key = s3_endpoint["bucket"], f"faults-{uuid.uuid4().hex[:6]}/run"
    run_uri = f"s3://{bucket}/{run_key}"
    fs = proxied(proxy)
    proxy.configure(fail_rate=0.35, seed=seed, kinds=FAULT_KINDS, methods={"PUT", "POST"})
    raised, silently_lost, whole = [], [], []
    for step in range(1, 9):
        try:
            upload_checkpoint(fs, f"{bucket}/{run_key}", step, mb=6.0 if step % 4 == 0 else 1.0)
            ok = True
        except OSError:
            raised.append(step)
            ok = False
        if landed(bucket, run_key, step):
            whole.append(step)
        elif ok:
            silently_lost.append(step)
        # what rank 0 checks after each report: a silent loss is caught and named
        problem = checkpoint_landed(run_uri, step)
        assert (problem is None) == (step in whole), (step, problem)
        if whole:
            assert assert_latest_is_whole(run_uri, at_least=whole[-1]) == whole[-1]
    print(f"seed {seed}: {proxy.faults()} faults {dict(proxy.stats)}; whole {whole}, upload raised "
          f"{raised}, reported success but incomplete {silently_lost}")
    assert proxy.faults() >= 8 and whole
