"""Preflight and the CLI's exit codes: every mistake a user can make in a request is found
before Ray starts or anything is written, and ends with exit status 2 and one line.

Each case reproduced a late failure or a traceback on the code before issue 10 (the docstring of
each test says what it did)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from xdlm.cli import main
from xdlm.config import load_job
from xdlm.errors import UserError
from xdlm.train.preflight import (
    check_data,
    check_evaluator,
    check_local_capacity,
    check_ray_address,
    check_storage,
    check_tracking_uri,
    preflight,
)

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "jobs/quickstart.yaml")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_storage_path_that_is_a_file(tmp_path):
    """Used to fail inside Ray's storage setup, after Ray had started."""
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(UserError, match=r"cluster.storage_path: .* is a file"):
        check_storage(str(afile))
    with pytest.raises(UserError, match=r"cluster.storage_path: cannot create .* is a file"):
        check_storage(str(afile / "runs"))
    check_storage(str(tmp_path / "new" / "runs"))  # creatable: fine, and nothing was created
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: no unwritable directory to try")
def test_storage_path_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match="not writable"):
        check_storage(str(locked / "runs"))


def test_s3_without_credentials(monkeypatch, tmp_path):
    """Used to print a botocore traceback (NoCredentialsError) after Ray had started."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UserError, match="needs S3 credentials"):
        check_storage("s3://bucket/xdlm")


def test_s3_bucket_that_does_not_exist(s3_endpoint):
    check_storage(f"s3://{s3_endpoint['bucket']}/xdlm")
    with pytest.raises(UserError, match=r"bucket 'no-such-bucket' is not usable \(S3 answered 404\)"):
        check_storage("s3://no-such-bucket/xdlm")


def test_tracking_uri_that_is_not_one_and_a_server_that_is_down(tmp_path):
    """Used to raise a raw MlflowException after Ray had started."""
    with pytest.raises(UserError, match="is not a tracking URI"):
        check_tracking_uri("mlflow-at-home", "tracking.tracking_uri")
    port = closed_port()
    with pytest.raises(UserError, match=rf"the MLflow server at http://127.0.0.1:{port} is not reachable"):
        check_tracking_uri(f"http://127.0.0.1:{port}", "tracking.tracking_uri")
    check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db", "tracking.tracking_uri")


def test_missing_data_files_and_a_cache_dir_that_is_a_file(tmp_path):
    """Both used to fail inside the workers (after Ray and the MLflow run had started)."""
    job = load_job(QUICKSTART, ["data.source=text", f"data.data_files=[{tmp_path}/nope.txt]"])
    with pytest.raises(UserError, match=r"data.data_files: missing files: .*nope.txt"):
        check_data(job.data)
    afile = tmp_path / "cache"
    afile.write_text("x")
    job = load_job(QUICKSTART, [f"data.cache_dir={afile}"])
    with pytest.raises(UserError, match=r"data.cache_dir: .* is a file"):
        check_data(job.data)


def test_evaluator_paths(tmp_path):
    """eval.evaluator=/nonexistent used to train every step first, then fail."""
    with pytest.raises(UserError, match="eval.evaluator: /nonexistent does not exist"):
        check_evaluator("/nonexistent")
    with pytest.raises(UserError, match="neither an xdlm checkpoint nor a Hugging Face config.json"):
        check_evaluator(str(tmp_path))
    check_evaluator("gpt2-large")  # a hub name: needs a network later, not a local path now
    check_evaluator(None)


def test_ray_addresses():
    """A bad address used to hang in ray.init or fail with a Ray traceback."""
    with pytest.raises(UserError, match="must look like ray://HOST:10001"):
        check_ray_address("headnode")
    port = closed_port()
    with pytest.raises(UserError, match=rf"nothing answers at ray://127.0.0.1:{port}"):
        check_ray_address(f"ray://127.0.0.1:{port}")
    check_ray_address("auto")


def test_more_workers_than_this_machine_has():
    job = load_job(QUICKSTART, [f"cluster.num_workers={4 * (os.cpu_count() or 1)}", "cluster.cpus_per_worker=1",
                                f"train.global_batch={32 * 4 * (os.cpu_count() or 1)}"])
    with pytest.raises(UserError, match="this machine has"):
        check_local_capacity(job)


def test_preflight_of_the_quickstart_passes(tmp_path):
    job = load_job(QUICKSTART, [f"cluster.storage_path={tmp_path}/runs", f"data.cache_dir={tmp_path}/cache"])
    preflight(job, f"sqlite:///{tmp_path}/runs/mlflow.db", None)
    assert list(tmp_path.iterdir()) == []  # preflight writes nothing


# -- the CLI: exit 2 and one line, before Ray ------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["storage-file", "list-job", "evaluator", "tracking-down"])
def test_train_refusals_exit_2_before_ray(case, tmp_path, capsys):
    """Each used to start Ray (or print a traceback) before failing."""
    import ray

    afile = tmp_path / "file"
    afile.write_text("x")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    argv = {
        "storage-file": [QUICKSTART, f"cluster.storage_path={afile}"],
        "list-job": [str(listed)],
        "evaluator": [QUICKSTART, "eval.evaluator=/nonexistent", f"cluster.storage_path={tmp_path}/runs"],
        "tracking-down": [QUICKSTART, f"tracking.tracking_uri=http://127.0.0.1:{closed_port()}",
                          f"cluster.storage_path={tmp_path}/runs"],
    }[case]
    started_before = ray.is_initialized()
    code, err = run_cli(capsys, "train", *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("xdlm train: error: ") and "Traceback" not in err
    assert ray.is_initialized() == started_before  # no Ray was started for a refused request
    assert not (tmp_path / "runs").exists()


def test_eval_and_sample_refusals_exit_2(tmp_path, capsys):
    """Each used to print a traceback (or, for --max-batches 0, report PPL 1.0 with exit 0)."""
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    cases = [
        (["eval", str(not_a_run)], "no checkpoint"),
        (["sample", str(not_a_run)], "no checkpoint"),
        (["eval", str(tmp_path / "missing")], "neither a directory nor a run name"),
        (["sample", str(not_a_run), "--num-samples", "-1"], "--num-samples"),
        (["eval", str(not_a_run), "--max-batches", "0"], "--max-batches must be >= 1"),
        (["eval", str(not_a_run), "--json", str(tmp_path / "no" / "dir" / "m.json")], "--json: cannot write"),
    ]
    for argv, message in cases:
        code, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_rays_checkpoint_record_has_the_name_the_driver_deletes():
    """The driver deletes Ray Train's private list of a run's checkpoints before each fit (it
    resumes from storage itself, and its retention deletes checkpoints that list names). No
    public API names the file: if Ray renames it, this fails instead of resumes breaking."""
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    from xdlm.train.launch import RAY_CHECKPOINT_RECORD

    assert CHECKPOINT_MANAGER_SNAPSHOT_FILENAME == RAY_CHECKPOINT_RECORD


def test_a_resume_of_a_run_whose_checkpoints_are_all_incomplete_is_refused_before_ray(tmp_path):
    """Issue 10: a resume that finds no complete checkpoint for a run that has checkpoints is an
    error, never a fresh start; the run's lock is released again."""
    import json

    import ray

    from xdlm.checkpoint import RUN_RECORD, NoCompleteCheckpoint
    from xdlm.cluster.run_lock import LOCK_FILE
    from xdlm.config import to_dict
    from xdlm.train.launch import run_training

    job = load_job(QUICKSTART, [f"cluster.storage_path={tmp_path}/runs", "name=torn"])
    run_dir = Path(job.run_dir())
    (run_dir / "checkpoint_2026-01-01_00-00-00.000000").mkdir(parents=True)
    (run_dir / "checkpoint_2026-01-01_00-00-00.000000" / "state.pt").write_bytes(b"torn")
    (run_dir / RUN_RECORD).write_text(json.dumps({"name": "torn", "mlflow_run_id": None, "job": to_dict(job)}))
    before = ray.is_initialized()
    with pytest.raises(NoCompleteCheckpoint, match="has checkpoints but none is complete"):
        run_training(job, resume=True, tracking=False)
    assert ray.is_initialized() == before and not (run_dir / LOCK_FILE).exists()


def test_tracking_flush_of_a_run_that_does_not_exist_exits_2(tmp_path, capsys):
    code, err = run_cli(capsys, "tracking", "flush", "nope", "--storage-path", str(tmp_path))
    assert code == 2 and "no run record" in err
