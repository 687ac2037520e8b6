"""A decay branch on a real local Ray and MLflow store: it starts bit-exactly from its parent's
checkpoint, shown by the stronger statement that parent-then-branch equals the wsd run of the
branch's length trained straight through (weights, EMA, AdamW moments, step, data position),
and it is tagged with its parent and horizon."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from xdlm.checkpoint import latest_checkpoint, read_checkpoint, scan
from xdlm.cli import main
from xdlm.config import load_job
from xdlm.scaling.branches import run_branches
from xdlm.train.launch import run_training

pytestmark = pytest.mark.slow


def tiny(tmp_path, name, *overrides):
    return load_job("jobs/markov_small.yaml", [
        f"name={name}", "model.n_layers=1", "model.hidden=32", "model.n_heads=1", "model.cond_dim=16",
        "train.global_batch=8", "train.micro_batch=8", "train.log_every=1", "train.eval_every=100",
        "train.eval_batches=1", "train.checkpoint_every=100", "train.keep_checkpoints=1",
        "optim.lr_schedule=wsd", "optim.decay_fraction=0.25", "optim.warmup_steps=2", "optim.lr=1e-2",
        "cluster.num_workers=1", "cluster.cpus_per_worker=1", "cluster.max_failures=0",
        f"cluster.storage_path={tmp_path / 'runs'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "data.markov.validation_sequences=16", "eval.sample_steps=[2]", "eval.num_samples=2",
        "tracking.log_samples=0", "tracking.tags={xdlm.scaling.budget: '1e9'}", *overrides])


def same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    else:
        assert a == b


def test_branch_equals_the_straight_wsd_run_and_is_tagged(ray_session, tmp_path, capsys):
    # parent: 8 steps, keeps the start of horizon 0.5 (T_h = 4, S_h = 4 - round(0.25 * 4) = 3)
    parent = run_training(tiny(tmp_path, "parent", "train.steps=8", "train.branch_horizons=[0.5]"))
    assert sorted(c.step for c in scan(parent.run_dir)[0]) == [3, 8]  # kept through keep_checkpoints=1

    (branch, outcome), = run_branches("parent", [0.5], storage_path=str(tmp_path / "runs"))
    assert (branch.name, branch.start_step, branch.steps) == ("parent-h0.5", 3, 4)
    straight = run_training(tiny(tmp_path, "straight", "train.steps=4"), tracking=False)

    a = read_checkpoint(latest_checkpoint(outcome.run_dir))
    b = read_checkpoint(latest_checkpoint(straight.run_dir))
    assert (a["counters"]["step"], a["counters"]["tokens"]) == (b["counters"]["step"], b["counters"]["tokens"]) \
        == (4, 4 * 8 * 32)  # (wall time, also counted, differs)
    for key in ("model", "ema", "optimizer", "data"):
        same(a[key], b[key])
    start = read_checkpoint(next(c.uri for c in scan(parent.run_dir)[0] if c.step == 3))
    assert not torch.equal(start["model"]["output_head.weight"], a["model"]["output_head.weight"])  # it trained

    client = MlflowClient(outcome.tracking_uri)
    tags = client.get_run(outcome.run_id).data.tags
    assert tags["xdlm.branch.parent_run_id"] == parent.run_id == tags["mlflow.parentRunId"]
    assert (tags["xdlm.branch.parent"], tags["xdlm.branch.horizon"], tags["xdlm.branch.start_step"]) == (
        "parent", "0.5", "3")
    assert "xdlm.scaling.budget" not in tags  # the parent's study tags describe the parent
    assert client.get_run(outcome.run_id).info.run_name == "parent-h0.5"
    lrs = [m.value for m in client.get_metric_history(outcome.run_id, "train/lr")]
    assert len(lrs) == 1  # one step, 3 -> 4

    # again: already trained, skipped; a horizon without its checkpoint: exit 2 naming the option
    assert run_branches("parent", [0.5], storage_path=str(tmp_path / "runs"))[0][1] is None
    capsys.readouterr()
    assert main(["scaling", "branches", "parent", "--at", "0.75", "--storage-path", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at step 4 for horizon 0.75" in err and "[3, 8]" in err and "train.branch_horizons" in err
