"""What the sweep tells MLflow after ``Tuner.fit``: Tune's verdict per trial against runs in a real
SQLite MLflow store. The verdicts are given as the data ``tune_verdicts`` reads from a ResultGrid
(status, error, last report), so each case is exact rather than left to scheduling luck; reading
them from a real ResultGrid is tested in test_sweep_ray.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from xdlm.checkpoint import RUN_RECORD
from xdlm.tracking.runs import make_client, start_run
from xdlm.tune import layout
from xdlm.tune.settle import TuneVerdict, settle_trials


@pytest.fixture
def sweep(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = start_run(uri, "sweeps", "s")
    state = {"sweep_dir": str(tmp_path), "tracking_uri": uri, "parent_run_id": parent}

    def add_trial(trial_id: str, run_status: str, done_metrics: dict | None = None, segment: int = 0,
                  params: dict | None = None) -> str:
        name = layout.trial_run_name("s", trial_id, segment)
        run_id = start_run(uri, "sweeps", name, parent_run_id=parent)
        if run_status != "RUNNING":
            make_client(uri).set_terminated(run_id, status=run_status)
        run_dir = tmp_path / layout.TRIALS_DIR / name
        run_dir.mkdir(parents=True)
        (run_dir / RUN_RECORD).write_text(json.dumps({"mlflow_run_id": run_id}))
        layout.write_trial_info(run_dir, {"trial_id": trial_id, "segment": segment,
                                          "params": params if params is not None else {"optim.lr": trial_id},
                                          "init_from": None})
        if done_metrics is not None:
            layout.write_done(run_dir, {"metrics": done_metrics})
        return run_id

    return state, add_trial, make_client(uri)


def test_tune_verdict_overrides_what_a_torn_down_trial_wrote(sweep):
    state, add_trial, client = sweep
    runs = {
        # a trial ASHA stopped whose fit() raised while its actor went: the run says FAILED
        "a": add_trial("a", "FAILED"),
        # a stopped trial whose process died before it could say anything
        "b": add_trial("b", "RUNNING"),
        "c": add_trial("c", "FINISHED", {"val/nelbo": 5.0}),
        "d": add_trial("d", "FINISHED", {"val/nelbo": 4.0}),
        # a trial that really failed: Tune has its error, and a FAILED run stays FAILED
        "e": add_trial("e", "FAILED"),
        # PBT: the first segment was torn down when the trial cloned "d"; the second finished
        "f0": add_trial("f", "FAILED"),
        "f": add_trial("f", "FINISHED", {"val/nelbo": 4.5}, segment=1),
    }
    verdicts = {
        "a": TuneVerdict("TERMINATED", last={"step": 4}),
        "b": TuneVerdict("TERMINATED", last={"step": 2}),
        "c": TuneVerdict("TERMINATED"),
        "d": TuneVerdict("TERMINATED"),
        "e": TuneVerdict("ERROR", RuntimeError("boom")),
        "f": TuneVerdict("TERMINATED"),
    }
    spec = SimpleNamespace(name="s", metric="val/nelbo", mode="min")
    outcome = settle_trials(state, spec, verdicts)

    assert outcome.statuses == {"a": "stopped_early", "b": "stopped_early", "c": "completed",
                                "d": "completed", "e": "error", "f": "completed"}
    expected = {"a": "KILLED", "b": "KILLED", "c": "FINISHED", "d": "FINISHED", "e": "FAILED", "f": "FINISHED",
                "f0": "KILLED"}
    for key, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.info.status == expected[key], key
        assert run.data.tags["xdlm.trial_status"] == outcome.statuses.get(key, "pbt_replaced")
        assert run.data.tags["xdlm.trial_id"] == key[0]
    assert client.get_run(runs["a"]).data.tags["xdlm.stopped_at_step"] == "4"
    assert outcome.best_trial_id == "d"
    assert client.get_run(runs["d"]).data.tags["xdlm.best_trial"] == "true"
    assert "xdlm.best_trial" not in client.get_run(runs["c"]).data.tags
    parent = client.get_run(state["parent_run_id"])
    assert parent.data.tags["xdlm.best_run_id"] == runs["d"]
    assert parent.data.metrics["sweep/trials_stopped_early"] == 2
    assert parent.data.metrics["sweep/trials_completed"] == 3
    assert parent.data.metrics["best/val/nelbo"] == 4.0
    assert not outcome.interrupted


def test_an_interrupted_sweep_leaves_its_unfinished_trials_resumable(sweep):
    """Ctrl-C: a running trial (saved by Tune as PENDING) and one PBT had paused are interrupted,
    not stopped early; one that never started makes the sweep interrupted too."""
    state, add_trial, client = sweep
    runs = {"a": add_trial("a", "RUNNING"), "b": add_trial("b", "RUNNING"),
            "c": add_trial("c", "FINISHED", {"val/nelbo": 4.0})}
    verdicts = {"a": TuneVerdict("PENDING", last={"step": 2}), "b": TuneVerdict("PAUSED"),
                "c": TuneVerdict("TERMINATED"), "d": TuneVerdict("PENDING")}
    outcome = settle_trials(state, SimpleNamespace(name="s", metric="val/nelbo", mode="min"), verdicts)

    assert outcome.statuses == {"a": "interrupted", "b": "interrupted", "c": "completed"}
    assert outcome.interrupted
    for key in ("a", "b"):
        run = client.get_run(runs[key])
        assert run.info.status == "KILLED" and "xdlm.stopped_at_step" not in run.data.tags
    assert client.get_run(state["parent_run_id"]).data.metrics["sweep/trials_interrupted"] == 2
