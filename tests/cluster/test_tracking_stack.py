"""PostgreSQL behind the production MLflow server (tests/services: PostgreSQL store, S3 artifacts)
restarted mid-run: the quickstart on the session Ray neither crashes nor stalls, and every metric
is in the store afterwards, read back through MLflow's REST API and counted. (The quickstart
tracked to this stack and read back from it, artifacts and checkpoints in the bucket, is
tests/cluster/test_two_node.py's, on the two-node cluster.)"""

from __future__ import annotations

import threading
import time
import uuid

import requests

from tests.cluster.stack import (
    QUICKSTART,
    find_run,
    metric_history,
    short_quickstart,
)
from xdlm.cli import main


def test_postgres_restarted_mid_run_loses_nothing_and_stalls_nothing(production_mlflow, ray_session, s3_endpoint,
                                                                     tmp_path_factory, capsys):
    """PostgreSQL behind the server goes down for 3 s while rank 0 logs every step: the server
    answers 5xx meanwhile, the logger keeps the records and retries, training goes on."""
    url, steps = production_mlflow.url, 400
    name = f"pgrestart-{uuid.uuid4().hex[:6]}"
    args = ["train", QUICKSTART, *short_quickstart(str(tmp_path_factory.mktemp("cache")), steps=steps),
            f"name={name}", "cluster.num_workers=1", "cluster.cpus_per_worker=1", "train.micro_batch=8",
            f"train.eval_every={steps}", f"train.checkpoint_every={steps}", "tracking.log_samples=0",
            f"tracking.tracking_uri={url}", f"cluster.storage_path=s3://{s3_endpoint['bucket']}/ckpt"]
    result: dict = {}
    started = time.monotonic()
    driver = threading.Thread(target=lambda: result.update(rc=main(args)), daemon=True)
    driver.start()

    deadline = time.monotonic() + 120
    while True:  # wait until training is well under way, then pull the database away
        assert driver.is_alive() and time.monotonic() < deadline, "training did not start"
        try:
            run_id = find_run(url, name)["info"]["run_id"]
            if len(metric_history(url, run_id, "train/loss")) >= 5:
                break
        except (AssertionError, requests.RequestException):
            pass
        time.sleep(0.5)
    log_offset = production_mlflow.server.log_path.stat().st_size
    down_at = time.time() * 1000
    production_mlflow.postgres.stop()
    time.sleep(3.0)
    up_at = time.time() * 1000
    production_mlflow.postgres.start()
    driver.join(timeout=240)
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert not driver.is_alive(), "training stalled"
    assert result.get("rc") == 0, out[-3000:]

    run = find_run(url, name)
    assert run["info"]["status"] == "FINISHED"
    with open(production_mlflow.server.log_path, "rb") as log:  # the outage did reach the server
        log.seek(log_offset)
        assert b"OperationalError" in log.read()
    loss = metric_history(url, run_id, "train/loss")
    assert [s for s, _ in loss] == list(range(1, steps + 1)), "steps lost or logged twice"
    for key in ("train/lr", "train/grad_norm", "tokens", "flops"):
        assert len(metric_history(url, run_id, key)) == steps, key
    # training went on while the database was down: steps were logged (timestamped) in the outage
    reply = requests.get(f"{url}/api/2.0/mlflow/metrics/get-history",
                         params={"run_id": run_id, "metric_key": "train/loss"}, timeout=30).json()
    during = [m for m in reply["metrics"] if down_at <= int(m["timestamp"]) <= up_at]
    assert len(during) >= 5, f"only {len(during)} steps logged during the 3 s outage: training stalled"
    print(f"postgres restart: {len(during)} steps trained while it was down, run took {elapsed:.0f} s")
    assert elapsed < 150
