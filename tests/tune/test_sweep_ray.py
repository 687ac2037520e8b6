"""Sweeps on the shared local Ray (2 CPUs): ASHA early stopping with more trials than fit at
once, nested MLflow runs read back, a killed driver resumed, and the resource fail-fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xdlm.tune import layout
from xdlm.tune.runner import resume_sweep, run_sweep, trial_dirname
from xdlm.tune.settle import UNFINISHED, tune_verdicts

pytestmark = pytest.mark.slow

# 1 worker x 1.0 CPU + 0.2 for the trainable = 1.2 CPUs per trial: one trial at a time on 2 CPUs,
# so a stopped trial that kept its worker's CPU would leave the next trial unplaceable.
ONE_AT_A_TIME = {"num_workers": 1, "cpus_per_worker": 1.0, "trainable_cpus": 0.2}


def child_runs(client, parent_run_id: str, experiment_id: str):
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_asha_stops_weak_trials_and_later_trials_still_start(ray_session, write_sweep):
    from mlflow import MlflowClient

    # good, bad, good, bad learning rates one at a time: each bad one meets a good one's result at
    # the step-4 rung and is stopped; the trial after it still has to start and finish
    path = write_sweep(
        "asha", base_overrides=("train.steps=8",),
        space={"optim.lr": {"kind": "grid", "values": [1e-2, 1e-7, 1e-2, 1e-7]}},
        scheduler={"kind": "asha", "grace_period": 4, "reduction_factor": 2},
        resources=ONE_AT_A_TIME,
    )
    started = time.monotonic()
    outcome = run_sweep(path)
    print(f"asha sweep: {time.monotonic() - started:.0f} s")
    statuses = outcome.statuses
    assert len(statuses) == 4, statuses  # every trial started
    assert list(statuses.values()).count("stopped_early") >= 1, statuses
    assert list(statuses.values()).count("completed") >= 2, statuses
    ordered = [statuses[t] for t in sorted(statuses)]
    assert ordered[2] == "completed"  # the trial after a stopped one ran to the end
    state = layout.read_state(outcome.directory)
    assert state["max_concurrent_trials"] == 1

    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["xdlm.kind"] == "sweep"
    assert parent.data.params["metric"] == "val/nelbo"
    assert parent.data.metrics["sweep/trials_completed"] == ordered.count("completed")
    children = child_runs(client, outcome.parent_run_id, parent.info.experiment_id)
    assert len(children) == 4
    by_trial = {run.data.tags["xdlm.trial_id"]: run for run in children}
    assert set(by_trial) == set(statuses)
    for trial_id, run in by_trial.items():
        assert run.data.tags["xdlm.trial_status"] == statuses[trial_id]
        assert run.data.tags["xdlm.sweep"] == "asha"
        assert "val/nelbo" in run.data.metrics and "optim.lr" in run.data.params
        assert run.info.run_name == f"asha-{trial_id}"
        expected = "FINISHED" if statuses[trial_id] == "completed" else "KILLED"
        assert run.info.status == expected, (trial_id, run.info.status)
        if statuses[trial_id] == "completed":
            assert "gen/entropy_2steps" in run.data.metrics
            assert float(run.data.params["optim.lr"]) == 1e-2
            assert {"config", "final_metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        else:
            assert int(run.data.tags["xdlm.stopped_at_step"]) < 8
    best = [run for run in children if run.data.tags.get("xdlm.best_trial") == "true"]
    assert len(best) == 1 and best[0].info.run_id == parent.data.tags["xdlm.best_run_id"]
    report = {a.path for a in client.list_artifacts(outcome.parent_run_id, "report")}
    assert {"report/trials.md", "report/trials.csv", "report/pareto.png", "report/pareto.html"} <= report


def test_pbt_bottom_trial_continues_from_the_top_trials_checkpoint(ray_session, write_sweep):
    """Two trials at once, lr 3e-3 against 1e-7, synchronous PBT at step 4 of 8: the worse trial
    at step 4 clones the better one's step-4 checkpoint into a new segment run (mutated lr) and
    both finish; MLflow shows the lineage."""
    from mlflow import MlflowClient

    from xdlm.checkpoint import latest_checkpoint, read_checkpoint

    path = write_sweep("pbt", base_overrides=("train.steps=8",),
                       space={"optim.lr": {"kind": "grid", "values": [3e-3, 1e-7]}},
                       scheduler={"kind": "pbt", "perturbation_interval": 4, "synch": True})
    started = time.monotonic()
    outcome = run_sweep(path)
    print(f"pbt sweep: {time.monotonic() - started:.0f} s")
    assert sorted(outcome.statuses.values()) == ["completed", "completed"], outcome.statuses
    segments = layout.trial_segments(outcome.directory)
    assert sorted(len(runs) for runs in segments.values()) == [1, 2], segments
    cloner = next(t for t, runs in segments.items() if len(runs) == 2)
    donor = next(t for t in segments if t != cloner)
    (first_dir, first), (second_dir, second) = segments[cloner]
    assert second["segment"] == 1 and second_dir.name == f"pbt-{cloner}-pbt1"
    assert second["init_from"]["trial_id"] == donor and second["init_from"]["run_name"] == f"pbt-{donor}"
    assert second["init_from"]["step"] == 4
    assert second["params"]["optim.lr"] in (3e-3, 1e-7)  # the donor's value or its listed neighbour

    client = MlflowClient(outcome.tracking_uri)
    run_of = {d.name: json.loads((d / "xdlm_run.json").read_text())["mlflow_run_id"]
              for runs in segments.values() for d, _ in runs}

    def nelbo_at(run_name: str, step: int) -> float:
        # logged by rank 0 before the step's report reaches Tune, so before any pause (Tune's own
        # result.json is no witness: a paused and restored trial's file can lose earlier lines)
        return next(m.value for m in client.get_metric_history(run_of[run_name], "val/nelbo") if m.step == step)

    # PBT's rule: the clone was the worse of the two at step 4
    assert nelbo_at(first_dir.name, 4) > nelbo_at(f"pbt-{donor}", 4)
    segment_run = client.get_run(run_of[second_dir.name])
    assert segment_run.info.status == "FINISHED"
    assert segment_run.data.tags["xdlm.pbt.init_from"] == f"pbt-{donor}@step4"
    assert float(segment_run.data.params["optim.lr"]) == second["params"]["optim.lr"]
    # it went on from the donor's step 4, not from scratch, to the end
    assert [m.step for m in client.get_metric_history(segment_run.info.run_id, "train/loss")] == [5, 6, 7, 8]
    assert read_checkpoint(latest_checkpoint(second_dir))["counters"]["step"] == 8
    replaced = client.get_run(run_of[first_dir.name])
    assert replaced.info.status == "KILLED" and replaced.data.tags["xdlm.trial_status"] == "pbt_replaced"
    parent = client.get_run(outcome.parent_run_id)
    assert len(child_runs(client, outcome.parent_run_id, parent.info.experiment_id)) == 3
    from xdlm.tune.report import build_report

    notes = build_report(outcome.directory, log_to_mlflow=False).notes
    assert any(n.startswith("PBT:") and f"{cloner} from pbt-{donor}@step4 (segment 1)" in n for n in notes), notes


def kill_train_workers_started_after(since: float) -> int:
    """SIGKILL the Ray Train worker processes created after ``since`` (a node losing them)."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        try:
            if proc.info["create_time"] > since and "RayTrainWorker" in " ".join(proc.info["cmdline"] or []):
                proc.kill()
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


def test_failed_trials_are_retried_from_their_checkpoint_up_to_the_limit(ray_session, write_sweep):
    """trial_max_failures=1, one trial at a time: the first trial loses its worker once and is
    retried from its checkpoint to the end; the second loses it twice and ends as an error while
    the sweep goes on. The workers are really killed (SIGKILL), as a lost node would lose them."""
    import threading

    from mlflow import MlflowClient

    from xdlm.checkpoint import latest_checkpoint, read_checkpoint

    path = write_sweep("retry", base_overrides=("train.steps=8",), trial_max_failures=1, resources=ONE_AT_A_TIME,
                       space={"diffusion.k": {"kind": "grid", "values": [0.0, 1.0]}})
    kills_wanted = [1, 2]  # per trial, in start order
    kills: list[tuple[str, int]] = []
    stop = threading.Event()

    def killer(sweep_dir: Path) -> None:
        handled = 0
        while not stop.is_set():
            starts = layout.read_starts(sweep_dir) if sweep_dir.exists() else []
            if len(starts) > handled:
                start = starts[handled]
                handled += 1
                order = list(dict.fromkeys(s["trial_id"] for s in starts))
                trial_index = order.index(start["trial_id"])
                if sum(1 for t, _ in kills if t == start["trial_id"]) >= kills_wanted[min(trial_index, 1)]:
                    continue
                # wait until Tune holds a checkpoint of this start (a pointer in the trial's Tune dir)
                tune_dir = sweep_dir / layout.TUNE_DIR / start["trial_id"]
                while not stop.is_set():
                    fresh = [p for p in tune_dir.glob("checkpoint_*") if p.stat().st_mtime > start["time"]]
                    if fresh and kill_train_workers_started_after(start["time"]):
                        kills.append((start["trial_id"], time.time()))
                        break
                    time.sleep(0.2)
            time.sleep(0.2)

    sweep_dir = path.parent / "runs" / "sweeps" / "retry"
    thread = threading.Thread(target=killer, args=(sweep_dir,), daemon=True)
    thread.start()
    try:
        outcome = run_sweep(path)
    finally:
        stop.set()
        thread.join(timeout=10)
    first, second = list(dict.fromkeys(s["trial_id"] for s in layout.read_starts(outcome.directory)))
    assert [t for t, _ in kills] == [first, second, second], kills
    assert outcome.statuses == {first: "completed", second: "error"}
    starts = layout.read_starts(outcome.directory)
    assert [s["resumed_run"] for s in starts if s["trial_id"] == first] == [False, True]
    assert [s["resumed_run"] for s in starts if s["trial_id"] == second] == [False, True]  # 1 retry, no more
    first_dir = outcome.directory / layout.TRIALS_DIR / f"retry-{first}"
    assert read_checkpoint(latest_checkpoint(first_dir))["counters"]["step"] == 8

    client = MlflowClient(outcome.tracking_uri)
    runs = {run.data.tags["xdlm.trial_id"]: run for run in child_runs(
        client, outcome.parent_run_id, client.get_run(outcome.parent_run_id).info.experiment_id)}
    assert runs[first].info.status == "FINISHED" and runs[second].info.status == "FAILED"
    assert runs[second].data.tags["xdlm.trial_status"] == "error"
    # the retry went on from a checkpoint (the first is at step 2), not from scratch, to the end
    history = client.get_metric_history(runs[first].info.run_id, "train/loss")
    killed_at_ms = next(t for trial, t in kills if trial == first) * 1000
    after_retry = sorted(m.step for m in history if m.timestamp > killed_at_ms)
    assert after_retry and after_retry[0] >= 3 and after_retry[-1] == 8, after_retry
    assert set(range(after_retry[0], 9)) <= set(after_retry)


def test_killed_driver_resumes_without_rerunning_finished_trials(ray_session, write_sweep, tmp_path):
    path = write_sweep("resumable", space={"diffusion.k": {"kind": "grid", "values": [0.0, 0.5, 1.0]}},
                       resources=ONE_AT_A_TIME)
    directory = tmp_path / "runs" / "sweeps" / "resumable"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "platform")}
    driver = subprocess.Popen(
        [sys.executable, "-c", f"from xdlm.tune.runner import run_sweep; run_sweep({str(path)!r})"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "driver.log", "w"),
        start_new_session=True,
    )
    def mid_training() -> bool:
        """One trial finished and the next one has a checkpoint but is not done."""
        runs = [p for p in (directory / layout.TRIALS_DIR).glob("*") if p.is_dir()]
        done = [p for p in runs if (p / layout.DONE_MARKER).exists()]
        return bool(done) and any(list(p.glob("checkpoint_*")) for p in runs if p not in done)

    deadline = time.monotonic() + 240
    try:
        while not mid_training():
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finished_before = {p.parent.name: p.stat().st_mtime_ns
                       for p in directory.glob(f"{layout.TRIALS_DIR}/*/{layout.DONE_MARKER}")}
    starts_before = layout.read_starts(directory)
    assert 1 <= len(finished_before) < 3

    outcome = resume_sweep("resumable", storage_path=str(tmp_path / "runs"))

    assert sorted(outcome.statuses.values()) == ["completed"] * 3, outcome.statuses
    for run_dir, mtime in finished_before.items():  # finished trials were not trained again
        assert (directory / layout.TRIALS_DIR / run_dir / layout.DONE_MARKER).stat().st_mtime_ns == mtime
    starts = layout.read_starts(directory)
    finished_ids = {name.removeprefix("resumable-") for name in finished_before}
    assert [s for s in starts if s["trial_id"] in finished_ids] == \
        [s for s in starts_before if s["trial_id"] in finished_ids]
    assert len([s for s in starts if s["trial_id"] in finished_ids]) == len(finished_ids)
    # the trial the dead driver was training resumes its own Ray Train run (from its checkpoint)
    interrupted = {s["trial_id"] for s in starts_before} - finished_ids
    assert interrupted
    for trial_id in interrupted:
        assert any(s["trial_id"] == trial_id and s["resumed_run"] for s in starts[len(starts_before):])

    from mlflow import MlflowClient

    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = child_runs(client, outcome.parent_run_id, parent.info.experiment_id)
    assert sorted(run.info.status for run in children) == ["FINISHED"] * 3
    assert json.loads((directory / layout.SWEEP_STATE_FILE).read_text())["parent_run_id"] == outcome.parent_run_id


def test_replicates_train_with_their_own_seeds_and_the_report_pools_them(ray_session, write_sweep):
    """k in {0, 1} x 2 replicates, 2 trials at a time: each replicate trains with its own seeds, its
    run is tagged with its configuration and replicate, and the parent run gets the means."""
    from mlflow import MlflowClient

    path = write_sweep("reps", base_overrides=("train.steps=4", "train.seed=7", "data.seed=3"),
                       search={"replicates": 2})
    started = time.monotonic()
    outcome = run_sweep(path)
    print(f"replicates sweep: {time.monotonic() - started:.0f} s")
    assert sorted(outcome.statuses.values()) == ["completed"] * 4, outcome.statuses

    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    children = child_runs(client, outcome.parent_run_id, parent.info.experiment_id)
    seen = {}
    for run in children:
        tags, params = run.data.tags, run.data.params
        replicate = int(tags["xdlm.sweep.replicate"])
        assert (int(params["train.seed"]), int(params["data.seed"])) == (7 + replicate, 3 + replicate)
        assert "xdlm.sweep.param.xdlm.replicate" not in tags
        seen.setdefault((tags["xdlm.sweep.config_id"], params["diffusion.k"]), set()).add(replicate)
    assert sorted(seen.values(), key=sorted) == [{0, 1}, {0, 1}] and len({c for c, _ in seen}) == 2
    best = parent.data.tags["xdlm.best_config_id"]
    assert parent.data.tags["xdlm.best_resolved"] in ("true", "false")
    assert parent.data.metrics["best/replicates"] == 2
    assert parent.data.metrics[f"configs/{best}/val/nelbo/mean"] == pytest.approx(parent.data.metrics["best/val/nelbo"])
    assert f"configs/{best}/val/nelbo/ci_low" in parent.data.metrics
    assert sum(run.data.tags.get("xdlm.best_config") == "true" for run in children) == 2
    text = (outcome.directory / layout.REPORT_DIR / "trials.md").read_text()
    assert "±" in text and "Best on the mean val/nelbo" in text


def test_a_sweep_that_cannot_place_one_trial_fails_fast(ray_session, write_sweep, tmp_path):
    path = write_sweep("too-big", resources={"num_workers": 4, "cpus_per_worker": 1.0},
                       base_overrides=("train.global_batch=32",))
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"one trial needs 4.2 CPUs .* the cluster has 2 CPUs and 0 GPUs, so no "
                                         r"trial can start"):
        run_sweep(path)
    assert time.monotonic() - started < 15
    assert not (tmp_path / "runs" / "sweeps" / "too-big").exists()


def test_tune_verdicts_read_a_real_result_grid(ray_session, tmp_path):
    """Tune's verdict on a finished, an errored and an interrupted trial, read from a real
    ResultGrid through public API. The interrupt is Tune's own Ctrl-C path (it also listens for
    SIGUSR1); after it, the trial objects behind the ResultGrid say TERMINATED for the trial that
    was running, so reading them would report it stopped early instead of resumable."""
    from ray import tune

    def trainable(config):
        if config["what"] == "fail":
            raise RuntimeError("boom")
        tune.report({"step": 1})
        if config["what"] == "interrupt":
            os.kill(config["driver_pid"], signal.SIGUSR1)
            time.sleep(60)  # torn down by Tune when it stops the experiment

    results = tune.Tuner(
        tune.with_resources(trainable, {"CPU": 1}),
        param_space={"what": tune.grid_search(["finish", "fail", "interrupt"]), "driver_pid": os.getpid()},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=layout.TUNE_DIR, storage_path=str(tmp_path), verbose=0),
    ).fit()
    what = {Path(result.path).name: result.config["what"] for result in results}
    verdicts = {what[trial_id]: verdict for trial_id, verdict in tune_verdicts(results).items()}
    assert set(verdicts) == {"finish", "fail", "interrupt"}
    assert verdicts["finish"].status == "TERMINATED" and verdicts["finish"].error is None
    assert verdicts["finish"].last["step"] == 1
    assert verdicts["fail"].status == "ERROR" and "boom" in str(verdicts["fail"].error)
    assert verdicts["interrupt"].status in UNFINISHED and verdicts["interrupt"].last["step"] == 1
