"""The tracking server goes away mid-run: training must not notice, and no metric may be lost.

The outage test stops and restarts its own server (own port and store), never the shared one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from xdlm.tracking import LocalMlflowServer, RunLogger, start_run
from xdlm.tracking.server import find_free_port

MAX_CALL_S = 0.005


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflowServer]:
    server = LocalMlflowServer(tmp_path_factory.mktemp("mlflow-outage"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fine_gil_switching() -> Iterator[None]:
    """Hand the GIL over every 0.5 ms instead of 5 ms.

    The worker thread runs Python code (building requests, writing the spill file); a caller
    waiting for the GIL meanwhile waits up to the interpreter's switch interval, which by default
    equals the 5 ms bound asserted here. That wait is the interpreter's, not the logger's.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)  # raising would fail the test: RunLogger must never raise
    return time.perf_counter() - start


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_metrics_logged_during_outage_are_delivered_after_restart(
    outage_server: LocalMlflowServer, tmp_path, fine_gil_switching
):
    uri, port = outage_server.url, outage_server.port
    run_id = start_run(uri, "outage", "train")
    logger = RunLogger(
        uri, run_id, spill_dir=tmp_path / "spill", install_handlers=False,
        max_queued_records=2000, max_backoff_s=1.0,
    )  # fmt: skip
    n_before, n_total = 50, 1550
    for step in range(n_before):
        logger.log_metrics({"loss": 1.0 / (step + 1), "tokens": 512.0 * step}, step=step)
    assert logger.flush(timeout=30)

    outage_server.stop()
    assert not outage_server.healthy()
    slowest = 0.0
    for step in range(n_before, n_total):  # ~1.5 s of training steps with the server gone
        slowest = max(
            slowest,
            timed(logger.log_metrics, {"loss": 1.0 / (step + 1), "tokens": 512.0 * step}, step),
        )
        if step % 250 == 0:
            slowest = max(slowest, timed(logger.log_text, f"sample at {step}", f"s/{step}.txt"))
            slowest = max(slowest, timed(logger.set_tags, {"last_step": step}))
            slowest = max(slowest, timed(logger.flush, timeout=0))
        time.sleep(0.001)
    assert slowest < MAX_CALL_S, f"a logging call blocked for {slowest * 1e3:.1f} ms"
    # The worker noticed the outage and moved the overflow (3000 metrics > cap 2000) to disk.
    assert wait_until(lambda: logger.stats["spilled"] > 0, timeout_s=10)
    assert logger.stats["failed_requests"] > 0
    assert not logger.flush(timeout=0.5)  # nothing can be delivered yet

    outage_server.start()  # same port, same store: the run is still there
    assert outage_server.port == port
    assert logger.flush(timeout=60)
    assert logger.close("FINISHED", timeout=30)

    client = MlflowClient(uri)
    for key in ("loss", "tokens"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(n_total)), f"{key}: {n_total - len(steps)} steps missing"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    sampled_steps = [step for step in range(n_before, n_total) if step % 250 == 0]
    assert run.data.tags["last_step"] == str(sampled_steps[-1])
    assert len(client.list_artifacts(run_id, "s")) == len(sampled_steps)
    assert not (tmp_path / "spill" / f"{run_id}.jsonl").exists()


def test_records_still_undelivered_at_close_are_replayed_by_the_next_logger(
    tracking_uri, experiment_name, tmp_path
):
    """Server unreachable until the process ends: the next logger of the run delivers it all.

    "Unreachable" is a port nobody listens on, so the shared server can serve the second half.
    """
    spill_dir = tmp_path / "spill"
    run_id = start_run(tracking_uri, experiment_name, "resume")
    unreachable = f"http://127.0.0.1:{find_free_port()}"
    logger = RunLogger(unreachable, run_id, spill_dir=spill_dir, install_handlers=False)
    for step in range(100):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.log_params({"optim": {"lr": 0.01}})
    logger.log_text("kept on disk", "notes.txt")
    assert not logger.close("FINISHED", timeout=1.0)  # nothing delivered: spilled, not lost
    assert (spill_dir / f"{run_id}.jsonl").exists()

    client = MlflowClient(tracking_uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # the end status is not replayed
    with RunLogger(tracking_uri, run_id, spill_dir=spill_dir, install_handlers=False) as resumed:
        assert resumed.flush(timeout=60)
        resumed.log_metrics({"loss": 100.0}, step=100)

    steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert steps == list(range(101))
    run = client.get_run(run_id)
    assert run.data.params == {"optim.lr": "0.01"}
    assert [a.path for a in client.list_artifacts(run_id)] == ["notes.txt"]
    assert run.info.status == "FINISHED"
    assert list(spill_dir.glob("*.jsonl")) == []
