"""Data integrity end to end on a real Ray (issue 10): a resume starts from the newest complete
checkpoint on storage even when Ray's record is older; a non-finite loss ends the run FAILED with
no non-finite checkpoint; and a drill that kills the driver at random points, many times, after
which every resume continues from the newest complete checkpoint with no step logged twice or
lost in MLflow, and the final weights equal an uninterrupted run's, bit for bit."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train.conftest import without_clock
from xdlm.checkpoint import latest_checkpoint, read_checkpoint, scan
from xdlm.errors import RunFailed
from xdlm.train.launch import run_training

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def final_state(run_dir) -> dict:
    return read_checkpoint(latest_checkpoint(run_dir))


def test_resume_uses_a_complete_checkpoint_that_ray_never_recorded(ray_session, small_job, capsys):
    """Before: Ray's record decided, so a checkpoint that was whole on storage but not recorded
    (SIGTERM during the report) was ignored and the run silently retrained those steps."""
    straight = run_training(small_job("train.steps=6", name="ref"), tracking=False)
    run_training(small_job("train.steps=2", name="unrecorded"), tracking=False)
    run_dir = Path(small_job(name="unrecorded").run_dir())
    step4 = next(c for c in scan(straight.run_dir)[0] if c.step == 4)
    # the step-4 checkpoint this run would have written (training is deterministic), on storage only
    shutil.copytree(step4.uri, run_dir / "checkpoint_9999-12-31_23-59-59.999999")
    capsys.readouterr()
    resumed = run_training(small_job("train.steps=6", name="unrecorded"), resume=True, tracking=False)
    assert "resuming run 'unrecorded' from step 4" in capsys.readouterr().out
    a, b = final_state(straight.run_dir), final_state(resumed.run_dir)
    assert without_clock(b["counters"]) == without_clock(a["counters"])
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def test_a_non_finite_loss_ends_the_run_failed_without_a_non_finite_checkpoint(ray_session, small_job):
    """Before: optim.lr=inf trained to a FINISHED run with NaN checkpoints (inf is now refused at
    validation; a huge finite lr still diverges at run time)."""
    from mlflow import MlflowClient

    job = small_job("optim.lr=1e30", "optim.grad_clip=0", "train.steps=12", "train.checkpoint_every=1",
                    name="diverges")
    with pytest.raises(RunFailed, match=r"run 'diverges' stopped at step \d+: "):
        run_training(job)
    for stored in scan(job.run_dir())[0]:
        state = read_checkpoint(stored.uri)
        assert all(torch.isfinite(v).all() for v in state["model"].values()), stored.name
    client = MlflowClient(f"sqlite:///{Path(job.cluster.storage_path) / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("xdlm").experiment_id],
                             "attributes.run_name = 'diverges'")[0]
    reason = run.data.tags["xdlm.failure"]
    assert run.info.status == "FAILED" and ("non-finite" in reason or "no longer finite" in reason), reason
    assert_failure_artifacts(client, run.info.run_id, reason)


def assert_failure_artifacts(client, run_id: str, expected: str) -> None:
    """A FAILED run's traceback and driver log are artifacts; the traceback names the failure."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with open(client.download_artifacts(run_id, "failure/traceback.txt", tmp)) as f:
            assert expected in f.read()
        logs = [a.path for a in client.list_artifacts(run_id, "logs")]
        assert len(logs) == 1 and logs[0].startswith("logs/driver_"), logs
        with open(client.download_artifacts(run_id, logs[0], tmp)) as f:
            assert "xdlm: run failed:" in f.read()


def test_an_exception_in_a_worker_ends_the_run_failed_with_the_exception_traceback_and_log(ray_session, small_job):
    from mlflow import MlflowClient

    job = small_job("train.steps=3", name="raises")
    with pytest.raises(Exception, match="injected in the loop"):
        run_training(job, fault={"at_step": 1, "raise": "injected in the loop"})
    client = MlflowClient(f"sqlite:///{Path(job.cluster.storage_path) / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("xdlm").experiment_id],
                                "attributes.run_name = 'raises'")
    assert run.info.status == "FAILED"
    assert run.data.tags["xdlm.failure"] == "RuntimeError: injected in the loop (worker rank 1)"
    assert_failure_artifacts(client, run.info.run_id, "injected in the loop")


def test_fault_drill_kills_the_driver_at_random_points(ray_session, small_job, tmp_path):
    """Five drivers killed (SIGKILL) at random moments: during steps, evaluations, checkpoint
    writes and reports; each next one resumes (--resume --take-over: the dead driver's lock is
    stale).  Then the run finishes; MLflow holds every step exactly once."""
    from mlflow import MlflowClient

    steps = 24
    overrides = [f"train.steps={steps}", "train.checkpoint_every=3", "train.eval_every=3",
                 f"data.cache_dir={small_job().data.cache_dir}"]
    job = small_job(*overrides, name="drill")
    straight = run_training(small_job(*overrides, name="drill-ref"), tracking=False)
    base = [str(ROOT / "jobs/quickstart.yaml")] + job_overrides(job)
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    rng = random.Random(10)
    resumed_from = []
    for attempt in range(5):
        before = [c.step for c in scan(job.run_dir())[0]]
        args = [sys.executable, "-m", "xdlm.cli", "train", *base] + (["--resume", "--take-over"] if attempt else [])
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(rng.uniform(8, 20))
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0]
        if attempt and before:
            resumed_from.append((before[0], out))
            assert f"from step {before[0]} " in out, out[-3000:]
        time.sleep(4)  # Ray tears down the dead driver's workers
    final = subprocess.run([sys.executable, "-m", "xdlm.cli", "train", *base, "--resume", "--take-over"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]

    a, b = final_state(straight.run_dir), final_state(job.run_dir())
    assert without_clock(b["counters"]) == without_clock(a["counters"])
    assert (a["counters"]["step"], a["counters"]["tokens"]) == (steps, steps * 8 * 32)
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    client = MlflowClient(f"sqlite:///{Path(job.cluster.storage_path) / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("xdlm").experiment_id],
                             "attributes.run_name = 'drill'")[0]
    assert run.info.status == "FINISHED"
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(logged) == list(range(1, steps + 1)), logged  # none twice, none lost
    evals = [m.step for m in client.get_metric_history(run.info.run_id, "val/nelbo")]
    assert sorted(evals) == list(range(3, steps + 1, 3)), evals
    assert len(resumed_from) >= 2  # the drill did interrupt runs that had checkpoints


def job_overrides(job) -> list[str]:
    """The small job as CLI overrides (the subprocess drivers load it like a user would)."""
    from xdlm.config import to_dict

    flat = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, dict):
                flat.append(f"{prefix}{key}={{}}")
            elif value is not None:
                text = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
                flat.append(f"{prefix}{key}={text}")

    walk(to_dict(job), "")
    return flat


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB filesystem (tmpfs): smaller than one checkpoint of the small job."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): needs root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_ends_the_run_failed_with_one_line_and_no_checkpoint(ray_session, small_job, tiny_disk, tmp_path):
    """Before: a full disk left a truncated state.pt that looked like a checkpoint, eval/sample
    crashed on it with EOFError, and the MLflow run stayed RUNNING."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    job = small_job(f"cluster.storage_path={tiny_disk}", f"tracking.tracking_uri={uri}", name="full")
    with pytest.raises(RunFailed, match=r"^run 'full': out of space writing to .* \(No space left on device\)"):
        run_training(job)
    assert scan(job.run_dir())[0] == []  # whatever was copied is not a checkpoint
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("xdlm").experiment_id], "attributes.run_name = 'full'")[0]
    assert run.info.status == "FAILED" and "out of space" in run.data.tags["xdlm.failure"]
    assert_failure_artifacts(client, run.info.run_id, "No space left on device")
