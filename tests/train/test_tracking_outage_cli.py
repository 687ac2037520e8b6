"""A tracking outage never decides a run's outcome (issue 10).  Before: after training, an
unguarded ``get_run`` made the CLI exit 1 with a traceback, and spilled metrics were delivered
only by a later ``xdlm train --resume``."""

from __future__ import annotations

import json

from xdlm.checkpoint import RUN_RECORD
from xdlm.cli import main
from xdlm.tracking.logger import RunLogger
from xdlm.tracking.runs import make_client, start_run
from xdlm.train.launch import final_metrics_from_mlflow


def test_final_metrics_with_the_tracker_down_is_empty_not_an_error(capsys):
    assert final_metrics_from_mlflow("http://127.0.0.1:9", "no-run") == {}
    assert "the run itself finished" in capsys.readouterr().out


def test_tracking_flush_delivers_a_spill_without_training(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = start_run(uri, "xdlm", "spilled", {})
    run_dir = tmp_path / "runs" / "spilled"
    spill = run_dir / "mlflow_spill"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_RECORD).write_text(json.dumps({"name": "spilled", "mlflow_run_id": run_id, "tracking_uri": uri}))
    # a logger whose server is unreachable spills everything it was given
    down = RunLogger("http://127.0.0.1:9", run_id, spill_dir=spill, install_handlers=False)
    down.log_metrics({"train/loss": 1.5}, step=7)
    down.close(status=None, timeout=0.5)
    assert any(spill.iterdir())

    assert main(["tracking", "flush", "spilled", "--storage-path", str(tmp_path / "runs")]) == 0
    assert "delivered" in capsys.readouterr().out
    history = make_client(uri).get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(7, 1.5)]
