"""How a training process ends decides how its run ends: SIGTERM -> KILLED, crash -> FAILED."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from mlflow import MlflowClient

CHILD = textwrap.dedent(
    """
    import sys, time
    from xdlm.tracking import RunLogger, start_run

    uri, experiment, spill_dir, mode = sys.argv[1:5]
    run_id = start_run(uri, experiment, "train")
    logger = RunLogger(uri, run_id, spill_dir=spill_dir)  # installs the handlers
    print(run_id, flush=True)
    step = 0
    while True:
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        step += 1
        if step == 20:
            assert logger.flush(timeout=30)
            print("ready", flush=True)
            if mode == "raise":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            if mode == "exit":
                sys.exit(0)  # never closed: atexit ends it
        time.sleep(0.005)
    """
)


def read_line(process: subprocess.Popen, timeout_s: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not ready:
        process.kill()
        pytest.fail(f"child printed nothing within {timeout_s} s")
    return process.stdout.readline().strip()


@pytest.mark.parametrize(
    ("mode", "expected_status", "expected_returncode"),
    [
        ("sigterm", "KILLED", -signal.SIGTERM),
        ("raise", "FAILED", 1),
        ("exit", "FINISHED", 0),
    ],
)
def test_run_status_follows_process_end(
    tracking_uri, experiment_name, tmp_path, mode, expected_status, expected_returncode
):
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, tracking_uri, experiment_name, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = read_line(process, timeout_s=60)
        assert read_line(process, timeout_s=60) == "ready"
        if mode == "sigterm":
            time.sleep(0.2)  # a few more steps logged after the flush
            process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert returncode == expected_returncode, stderr

    client = MlflowClient(tracking_uri)
    assert client.get_run(run_id).info.status == expected_status, stderr
    steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert steps == list(range(len(steps))) and len(steps) >= 20  # everything logged arrived


def test_a_signal_during_close_cuts_the_wait_short_and_is_passed_on_after_the_spill(tmp_path):
    """SIGTERM while close() waits for an unreachable server: stop waiting, spill, then die.

    The signal reaches our handler through one installed on top of it (as launchers do); the
    handler it replaced must run only once the records are safe on disk.
    """
    from xdlm.tracking import RunLogger
    from xdlm.tracking.server import find_free_port

    unreachable = f"http://127.0.0.1:{find_free_port()}"
    passed_on = []
    previous = signal.signal(
        signal.SIGTERM, lambda signum, frame: passed_on.append(logger.spill_path.exists())
    )
    try:
        logger = RunLogger(unreachable, "run-closing", spill_dir=tmp_path, install_handlers=True)
        ours = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda signum, frame: ours(signum, frame))
        logger.log_metrics({"loss": 1.0}, step=0)
        sigterm = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        sigterm.start()
        started = time.monotonic()
        assert not logger.close("FINISHED", timeout=60)
        assert time.monotonic() - started < 10, "close waited on after the signal"
        sigterm.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert passed_on == [True]  # passed on once, after the spill file was written
    assert '"loss"' in logger.spill_path.read_text()
