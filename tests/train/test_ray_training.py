"""End to end on a real local Ray: 2-worker DDP runs, MLflow contents, exact resume, a worker
killed mid-run, and the refusals that must happen before any worker starts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.train.conftest import without_clock
from xdlm.checkpoint import RUN_RECORD, latest_checkpoint, read_checkpoint
from xdlm.config import ConfigError
from xdlm.train.launch import run_training

pytestmark = pytest.mark.slow


def final_state(run_dir: str) -> dict:
    return read_checkpoint(latest_checkpoint(run_dir))


def test_two_worker_run_is_tracked_in_mlflow(ray_session, small_job):
    from mlflow.tracking import MlflowClient

    from xdlm.models import build_model, count_parameters

    job = small_job("tracking.system_metrics_interval_s=1", name="tracked")
    outcome = run_training(job)
    state = final_state(outcome.run_dir)
    assert (state["counters"]["step"], state["counters"]["tokens"]) == (6, 6 * 8 * 32)
    assert state["counters"]["wall_time_s"] > 0
    assert len(state["data"]) == 2  # both workers' data positions are in the checkpoint
    # keep_checkpoints=3 of the ones at steps 2, 4, 6
    assert len([p for p in Path(outcome.run_dir).glob("checkpoint_*") if p.is_dir()]) == 3

    client = MlflowClient(outcome.tracking_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    for key in ("train/loss", "train/loss_smooth", "val/nelbo", "val/ppl", "train/lr", "train/grad_norm", "tokens",
                "flops", "flops_with_embedding", "wall_time_s", "train/tokens_per_s", "val/unigram_ppl",
                "gen/entropy_2steps", "system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert key in run.data.metrics, key
    assert "step" not in run.data.metrics and not any(k.startswith("params/") for k in run.data.metrics)
    history = client.get_metric_history(outcome.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    assert [m.step for m in client.get_metric_history(outcome.run_id, "val/nelbo")] == [3, 6]
    # every evaluation record has the accounting at its own step: val/* can be charted against them
    accounting = {key: {m.step: m.value for m in client.get_metric_history(outcome.run_id, key)}
                  for key in ("tokens", "flops", "flops_with_embedding", "wall_time_s")}
    for key in [k for k in run.data.metrics if k.startswith("val/")]:
        for m in client.get_metric_history(outcome.run_id, key):
            assert all(m.step in accounting[x] for x in accounting), (key, m.step)
    assert accounting["tokens"][6] == 6 * 8 * 32
    assert accounting["flops_with_embedding"][6] > accounting["flops"][6] > 0
    wall = [accounting["wall_time_s"][s] for s in sorted(accounting["wall_time_s"])]
    assert wall == sorted(wall) and wall[0] > 0

    params, tags = run.data.params, run.data.tags
    assert params["diffusion.k"] == "0.1" and params["model.hidden"] == "64" and params["model.n_layers"] == "2"
    vocab = json.loads(open(client.download_artifacts(outcome.run_id, "data_summary.json")).read())["vocab_size"]
    counts = count_parameters(build_model(job.model, vocab))
    assert int(params["params.total"]) == counts["total"] > int(params["params.non_embedding"]) == counts["non_embedding"]
    assert params["system.device_type"] == "cpu" and params["system.device_count"] == "2"
    assert tags["xdlm.k"] == "0.1" and tags["xdlm.schedule"] == "loglinear"
    assert tags["xdlm.final_checkpoint"].startswith(outcome.run_dir)
    assert "Final validation perplexity" in tags["mlflow.note.content"] and "unigram baseline" in tags["mlflow.note.content"]
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.user"]

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"stdlib-docs/train", "stdlib-docs/validation"}
    train = inputs["stdlib-docs/train"]
    assert [t.value for t in train.tags if t.key == "mlflow.data.context"] == ["training"]
    profile = json.loads(train.dataset.profile)
    assert profile["tokenizer_hash"].startswith("bpe-") and profile["num_tokens"] > 0

    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"config", "samples.json", "final_metrics.json", "figures", "logs"} <= artifacts
    with open(client.download_artifacts(outcome.run_id, "samples.json")) as f:
        table = json.load(f)
    assert table["columns"] == ["step", "sampler_steps", "k", "index", "text"]
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    # step 3: tracking.log_samples=1 at the fewest steps; step 6: eval.num_samples=2 per eval.sample_steps
    assert [(r["step"], r["sampler_steps"], r["index"]) for r in rows] == [(3, 2, 0), (6, 2, 0), (6, 2, 1)]
    assert all(r["k"] == 0.1 and r["text"] for r in rows)
    assert "samples.json" in tags["mlflow.loggedArtifacts"]  # what the UI's evaluation view lists
    figures = {a.path for a in client.list_artifacts(outcome.run_id, "figures")}
    assert figures == {"figures/curves.png", "figures/curves.html"}
    with open(client.download_artifacts(outcome.run_id, "figures/curves.html")) as f:
        html = f.read()
    assert '<script src="http' not in html and len(html) > 1_000_000  # plotly.js inline: opens offline


def test_resume_is_bit_exact(ray_session, small_job):
    """Stopped at step n and resumed to 2n == an uninterrupted run to 2n, bit for bit."""
    # the uninterrupted run evaluates at every step, the other every 3: evaluation changes nothing
    straight = run_training(small_job("train.steps=6", "train.eval_every=1", name="straight"), tracking=False)
    first = small_job("train.steps=3", name="resumed")
    run_training(first, tracking=False)
    assert final_state(first.run_dir())["counters"]["step"] == 3
    resumed = run_training(small_job("train.steps=6", name="resumed"), resume=True, tracking=False)
    a, b = final_state(straight.run_dir), final_state(resumed.run_dir)
    assert without_clock(b["counters"]) == without_clock(a["counters"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"], strict=True):
        assert torch.equal(x, y)
    assert a["data"] == b["data"]


def test_killed_worker_recovers_from_the_last_checkpoint(ray_session, small_job, tmp_path):
    marker = tmp_path / "killed.txt"
    job = small_job("cluster.max_failures=1", name="chaos")
    outcome = run_training(job, tracking=False, fault={"at_step": 4, "marker": str(marker)})
    assert marker.read_text().startswith("killed rank 1 at step 4")
    assert final_state(outcome.run_dir)["counters"]["step"] == 6


def test_refusals_happen_before_any_worker_starts(ray_session, small_job):
    job = small_job(name="guarded")
    run_training(job, tracking=False)
    record = Path(job.run_dir()) / RUN_RECORD
    before = record.read_text()
    checkpoints = sorted(p.name for p in Path(job.run_dir()).glob("checkpoint_*/"))

    with pytest.raises(ConfigError, match="already exists.*pass --resume"):
        run_training(small_job(name="guarded"), tracking=False)
    with pytest.raises(ConfigError, match=r"different configuration.*model.hidden: 64 -> 128"):
        run_training(small_job("model.hidden=128", name="guarded"), resume=True, tracking=False)
    with pytest.raises(ConfigError, match="no run named 'ghost'"):
        run_training(small_job(name="ghost"), resume=True, tracking=False)
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"needs 8 CPUs \(8 workers x 1\).*has 2 CPUs and 0 GPUs"):
        run_training(small_job("cluster.num_workers=8", "cluster.cpus_per_worker=1", "train.global_batch=16",
                               name="too-big"), tracking=False)
    assert time.monotonic() - started < 10  # fails fast, never waits for resources
    # nothing was overwritten
    assert record.read_text() == before
    assert sorted(p.name for p in Path(job.run_dir()).glob("checkpoint_*/")) == checkpoints
    assert not (Path(job.cluster.storage_path) / "too-big").exists()
    assert json.loads(before)["job"]["model"]["hidden"] == 64


def test_checkpoints_to_s3_and_resume_from_there(ray_session, small_job, s3_endpoint, tmp_path):
    import boto3

    prefix = f"s3://{s3_endpoint['bucket']}/runs"
    tracking = f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    first = small_job("train.steps=2", f"cluster.storage_path={prefix}", tracking, name="on-s3")
    run_training(first)
    resumed = run_training(small_job("train.steps=4", f"cluster.storage_path={prefix}", tracking, name="on-s3"),
                           resume=True)
    assert resumed.checkpoint.startswith(f"{prefix}/on-s3/checkpoint_")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=s3_endpoint["bucket"], Prefix="runs/on-s3/")["Contents"]]
    assert "runs/on-s3/xdlm_run.json" in keys
    assert "runs/on-s3/xdlm_lock.json" not in keys  # released at the end
    states = sorted(k for k in keys if k.endswith("/state.pt"))
    assert len(states) == 2  # checkpoints at steps 2 and 4
    body = boto3.client("s3").get_object(Bucket=s3_endpoint["bucket"], Key=states[-1])["Body"].read()
    (tmp_path / "state.pt").write_bytes(body)
    assert torch.load(tmp_path / "state.pt", weights_only=False)["counters"]["step"] == 4


def test_time_budget_stops_every_worker_with_a_checkpoint(ray_session, small_job):
    """train.max_time_s: all ranks agree to stop (no deadlock), and the stop leaves a checkpoint."""
    job = small_job("train.steps=100000", "train.max_time_s=3", "train.eval_every=1000",
                    "train.checkpoint_every=1000", name="budget")
    outcome = run_training(job, tracking=False)
    step = final_state(outcome.run_dir)["counters"]["step"]
    assert 1 <= step < 100000


def test_deepspeed_zero2_trains_checkpoints_and_resumes(ray_session, small_job):
    """train.deepspeed passes through to deepspeed.initialize (ZeRO-2 over gloo on the CPU): every
    rank writes its optimizer shard into the same checkpoint, and a resume loads them back."""
    zero = "train.deepspeed={zero_optimization: {stage: 2}}"
    first = run_training(small_job(zero, "train.steps=2", name="zero2"), tracking=False)
    shards = sorted(p.name for p in (latest_checkpoint(first.run_dir) / "deepspeed").iterdir())
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in shards
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt" in shards
    resumed = run_training(small_job(zero, "train.steps=4", name="zero2"), resume=True, tracking=False)
    state = final_state(resumed.run_dir)
    assert state["counters"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    with pytest.raises(ConfigError, match="train.deepspeed"):
        run_training(small_job("train.steps=6", name="zero2"), resume=True, tracking=False)


def checkpoint_at_step(run_dir: str, step: int) -> Path:
    for directory in sorted(Path(run_dir).glob("checkpoint_*")):
        if read_checkpoint(directory)["counters"]["step"] == step:
            return directory
    raise AssertionError(f"no checkpoint at step {step} in {run_dir}")


def test_a_run_started_from_another_runs_checkpoint_continues_it(ray_session, small_job):
    """PBT's exploit step: a new run from a donor's step-4 checkpoint. With the donor's
    hyperparameters it is the donor continued, bit for bit; with another lr the schedule goes on
    at step 4 with the new base lr."""
    from mlflow.tracking import MlflowClient

    from xdlm.train.optim import lr_multiplier

    donor = run_training(small_job(name="donor"), tracking=False)
    at_4 = str(checkpoint_at_step(donor.run_dir, 4))

    same = run_training(small_job(name="same-hparams"), tracking=False, init_checkpoint=at_4)
    a, b = final_state(donor.run_dir), final_state(same.run_dir)
    assert without_clock(b["counters"]) == without_clock(a["counters"])
    assert (a["counters"]["step"], a["counters"]["tokens"]) == (6, 6 * 8 * 32)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"], strict=True):
        assert torch.equal(x, y)
    assert a["data"] == b["data"]

    job = small_job("optim.lr=1e-3", "optim.weight_decay=0.05", name="new-lr")
    outcome = run_training(job, init_checkpoint=at_4)
    state = final_state(outcome.run_dir)
    group = state["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == 1e-3 and group["weight_decay"] == 0.05
    assert state["scheduler"]["base_lrs"] == [1e-3]
    assert group["lr"] == pytest.approx(1e-3 * lr_multiplier(6, job.optim, 6), rel=1e-12)
    client = MlflowClient(outcome.tracking_uri)
    assert [m.step for m in client.get_metric_history(outcome.run_id, "train/loss")] == [5, 6]
    logged = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "train/lr")}
    donor_lr = 3e-3 * lr_multiplier(4, small_job().optim, 6)
    assert all(value < donor_lr / 2 for value in logged.values()), (logged, donor_lr)

    with pytest.raises(ValueError, match="init_checkpoint: no complete checkpoint at"):
        run_training(small_job(name="nowhere"), tracking=False, init_checkpoint=str(Path(donor.run_dir) / "nope"))
