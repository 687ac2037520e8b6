"""Checkpoint files: a write killed at any moment never leaves something that reads as a
checkpoint, and a complete older one stays readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from xdlm.checkpoint import (
    STATE_FILE,
    has_checkpoint,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)

WRITER = textwrap.dedent("""
    import sys, torch
    from xdlm.checkpoint import write_checkpoint
    # ~400 MB: long enough to be killed in the middle of torch.save
    state = {"model": {"w": torch.ones(100_000_000)}, "counters": {"step": 2}}
    write_checkpoint(sys.argv[1], state, "name: big\\n")
""")


def _kill_mid_write(directory: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)])
    tmp = directory / (STATE_FILE + ".tmp")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if tmp.exists() and tmp.stat().st_size > 1_000_000:
            break
        if proc.poll() is not None:
            pytest.fail("the writer finished before it could be killed mid-write")
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("the writer never started writing")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_writer_killed_mid_write_leaves_no_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    good = run_dir / "checkpoint_2026-01-01_00-00-00.000001"
    write_checkpoint(good, {"counters": {"step": 1}}, "name: run\n")
    torn = run_dir / "checkpoint_2026-01-01_00-00-00.000002"
    _kill_mid_write(torn)

    assert (torn / (STATE_FILE + ".tmp")).exists() and not (torn / STATE_FILE).exists()
    with pytest.raises(FileNotFoundError, match="incomplete write"):
        read_checkpoint(torn)
    assert not has_checkpoint(torn)
    assert latest_checkpoint(run_dir) == good  # the newer, torn one is invisible
    assert read_checkpoint(good)["counters"] == {"step": 1}


def test_overwriting_a_checkpoint_in_place_keeps_the_old_one_until_the_new_one_is_whole(tmp_path):
    directory = tmp_path / "checkpoint"
    write_checkpoint(directory, {"counters": {"step": 1}}, "name: run\n")
    _kill_mid_write(directory)
    assert read_checkpoint(directory)["counters"] == {"step": 1}


def test_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "counters": {"step": 3, "tokens": 12}}
    write_checkpoint(tmp_path, state, "name: run\n")
    back = read_checkpoint(tmp_path)
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["counters"] == state["counters"]
    assert (tmp_path / "job.yaml").read_text() == "name: run\n"
