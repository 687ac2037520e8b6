"""One writer per run.  Before issue 10 two ``xdlm train`` of one name both ran and mixed their
checkpoints: the "already exists" check and the write of the run record were seconds apart."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest

from xdlm.cluster.run_lock import LOCK_FILE, RunLocked, acquire


def _take(run_dir: str, barrier, results) -> None:
    barrier.wait()
    try:
        lock = acquire(run_dir, "raced")
        results.put("won")
        barrier.wait()  # hold it until everyone has tried
        lock.release()
    except RunLocked:
        results.put("refused")
        barrier.wait()


def test_only_one_of_several_racing_processes_gets_the_run(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_take, args=(str(tmp_path / "run"), barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["refused"] * 3 + ["won"]
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released


def test_the_refusal_names_the_holder_and_release_frees_the_name(tmp_path):
    lock = acquire(str(tmp_path / "run"), "busy")
    with pytest.raises(RunLocked, match=rf"being written by another process \(host {socket.gethostname()}, "
                                        rf"pid {os.getpid()}, since "):
        acquire(str(tmp_path / "run"), "busy")
    with pytest.raises(RunLocked):
        acquire(str(tmp_path / "run"), "busy", take_over=True)  # a live holder is never displaced
    lock.release()
    acquire(str(tmp_path / "run"), "busy").release()


def test_a_stale_lock_is_recognised_and_taken_over_only_when_asked(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "since": "then", "token": "x"}))
    with pytest.raises(RunLocked, match=rf"stale lock \(host .*pid {pid}.*that process is gone\); pass --take-over"):
        acquire(str(run), "crashed")
    lock = acquire(str(run), "crashed", take_over=True)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_the_lock_on_s3_is_a_conditional_write(s3_endpoint):
    run_dir = f"s3://{s3_endpoint['bucket']}/locks/run"
    lock = acquire(run_dir, "on-s3")
    with pytest.raises(RunLocked, match="being written by another process"):
        acquire(run_dir, "on-s3")
    lock.release()
    acquire(run_dir, "on-s3").release()


def test_a_second_training_of_the_same_name_is_refused_before_ray(tmp_path, capsys):
    """The CLI probe of issue 10: exit 2, one line naming the holder; nothing of Ray started."""
    import ray

    from xdlm.cli import main

    storage = tmp_path / "runs"
    lock = acquire(str(storage / "f1"), "f1")
    before = ray.is_initialized()
    code = main(["train", "jobs/quickstart.yaml", "name=f1", f"cluster.storage_path={storage}"])
    err = capsys.readouterr().err
    lock.release()
    assert code == 2 and "being written by another process" in err and f"pid {os.getpid()}" in err
    assert ray.is_initialized() == before
