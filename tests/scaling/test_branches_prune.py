"""Retention never deletes a checkpoint kept for a decay branch, and a branch cannot be planned
from a checkpoint that is not there (no Ray: planning happens before any worker starts)."""

from __future__ import annotations

import pytest
import torch

from xdlm.checkpoint import prune, scan, write_checkpoint
from xdlm.checkpoint.store import branch_steps
from xdlm.config import load_job, to_yaml
from xdlm.errors import UserError
from xdlm.scaling.branches import Parent, branch_job, plan_branches

BASE = "jobs/markov_small.yaml"


def make_run(run_dir, steps, job_yaml):
    run_dir.mkdir(parents=True)
    (run_dir / "job.yaml").write_text(job_yaml)
    for i, step in enumerate(steps):
        write_checkpoint(run_dir / f"checkpoint_2026-01-01_00-00-{i:02d}.000000",
                         {"counters": {"step": step}, "w": torch.zeros(4)}, job_yaml)
    return run_dir


def test_prune_keeps_the_branch_starts(tmp_path):
    # train.steps 100, decay_fraction 0.2, horizons 0.25 and 0.5: branch starts at steps 20 and 40
    job = load_job(BASE, ["train.steps=100", "optim.decay_fraction=0.2", "train.branch_horizons=[0.25,0.5]"])
    run = make_run(tmp_path / "run", [10, 20, 30, 40, 50, 100], to_yaml(job))
    assert branch_steps(str(run)) == {20, 40}
    prune(str(run), keep=1)
    assert sorted(c.step for c in scan(str(run))[0]) == [20, 40, 100]


def test_prune_without_branches_and_with_an_unreadable_job_file(tmp_path):
    plain = make_run(tmp_path / "plain", [10, 20, 30], to_yaml(load_job(BASE)))
    prune(str(plain), keep=1)
    assert [c.step for c in scan(str(plain))[0]] == [30]
    broken = make_run(tmp_path / "broken", [10, 20, 30], "train: {steps: [oops\n")
    assert prune(str(broken), keep=1) == []  # cannot tell what is kept: delete nothing
    assert len(scan(str(broken))[0]) == 3


def parent(tmp_path, steps_kept, *overrides) -> Parent:
    job = load_job(BASE, ["name=p", "train.steps=100", "optim.lr_schedule=wsd", "optim.decay_fraction=0.2",
                          *overrides])
    run = make_run(tmp_path / "p", steps_kept, to_yaml(job))
    return Parent("p", str(run), "run-id", "sqlite:///x.db", job, scan(str(run))[0])


def test_branches_start_at_the_decay_starts_of_their_horizons(tmp_path):
    p = parent(tmp_path, [20, 40, 80, 100])
    branches = plan_branches(p, [0.25, 0.5, 1.0])
    assert [(b.name, b.steps, b.start_step) for b in branches] == [("p-h0.25", 25, 20), ("p-h0.5", 50, 40),
                                                                  ("p-h1", 100, 80)]
    job = branch_job(p, branches[0], overrides=["optim.min_lr_ratio=0.0"])
    assert (job.name, job.train.steps, job.optim.lr_schedule, job.optim.min_lr_ratio) == ("p-h0.25", 25, "wsd", 0.0)
    assert job.cluster.storage_path == str(tmp_path) and job.tracking.tracking_uri == "sqlite:///x.db"


def test_a_missing_checkpoint_names_the_steps_there_and_the_option(tmp_path):
    p = parent(tmp_path, [20, 100])
    with pytest.raises(UserError) as err:
        plan_branches(p, [0.25, 0.5])
    message = str(err.value)
    assert "no checkpoint at step 40 for horizon 0.5" in message and "[20, 100]" in message
    assert "train.branch_horizons=[0.25,0.5]" in message
    with pytest.raises(UserError, match="no checkpoint at step 15 for horizon 0.25"):
        plan_branches(p, [0.25], decay_fraction=0.4)  # another decay fraction needs other starts


@pytest.mark.parametrize(("horizons", "decay", "message"), [
    ([], None, "--at: give at least one horizon"),
    ([1.5], None, "--at: horizons are fractions"),
    ([0.01], None, "decays none"),
    ([0.5], 0.0, "--decay-fraction: must be in (0, 1]"),
])
def test_bad_requests(tmp_path, horizons, decay, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        plan_branches(parent(tmp_path, [20, 100]), horizons, decay)


def test_a_decaying_parent_cannot_be_branched_and_frozen_sections_stay(tmp_path):
    with pytest.raises(UserError, match="optim.lr_schedule=cosine"):
        plan_branches(parent(tmp_path, [20, 100], "optim.lr_schedule=cosine"), [0.25])
    p = parent(tmp_path / "b", [20, 100])
    with pytest.raises(UserError, match="keeps the parent's model"):
        branch_job(p, plan_branches(p, [0.25])[0], overrides=["model.hidden=64"])
