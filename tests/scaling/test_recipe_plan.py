"""The recipe and ``xdlm scaling plan``: budgets hit by the trials the sweep runner will build,
sizes that grow, the memory estimate by hand, and bad input named by its flag."""

from __future__ import annotations

import math

import pytest
import yaml

from xdlm.cli import main
from xdlm.config import ConfigError, load_job, to_dict
from xdlm.errors import UserError
from xdlm.models import build_model, count_parameters, flops_per_token
from xdlm.scaling.plan import TAG_BUDGET, TAG_SIZE, make_plan
from xdlm.scaling.recipe import Rules, memory_bytes
from xdlm.tune.space import apply_params
from xdlm.tune.sweep import load_sweep

BASE = "jobs/markov_small.yaml"
QUICK = ("model.cond_dim=32",)


def trials_of(path):
    """Every (k, point) trial job exactly as the sweep runner builds it, from the written file."""
    sweep = load_sweep(path)
    base = to_dict(sweep.job)
    return [apply_params(base, {"diffusion.k": k, "job": point})
            for k in sweep.spec.space["diffusion.k"].values for point in sweep.spec.space["job"].values]


def test_plan_trials_hit_their_budgets_and_sizes_grow(tmp_path, capsys):
    out = tmp_path / "iso.yaml"
    budgets = [3e11, 1e12, 3e12]
    assert main(["scaling", "plan", "--base", BASE, "--budgets", ",".join(map(str, budgets)), "--sizes", "3",
                 "--k", "0,0.5", "--replicates", "2", "--out", str(out), "--workers", "1", *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "36 trials" in printed and "MiB" in printed  # 3 budgets x 3 sizes x 2 k x 2 replicates
    jobs = trials_of(out)
    assert len(jobs) == 18
    assert load_sweep(out).spec.search.replicates == 2
    by_budget: dict[float, list] = {}
    for job in jobs:
        budget = float(job.tracking.tags[TAG_BUDGET])
        # the platform's count, recomputed from the job the trial trains
        flops = flops_per_token(job.model, job.data.seq_len) * job.train.steps * job.train.global_batch * job.data.seq_len
        assert flops == pytest.approx(budget, rel=0.03)
        assert job.tracking.tags[TAG_SIZE] == f"L{job.model.n_layers}-D{job.model.hidden}"
        by_budget.setdefault(budget, []).append(job)
    assert sorted(by_budget) == budgets
    smallest = []
    for group in by_budget.values():
        sizes = [count_parameters(build_model(j.model, 9))["non_embedding"] for j in group[:3]]  # file order, one k
        assert sizes[0] < sizes[1] < sizes[2]
        smallest.append(sizes[0])
        assert all(j.optim.warmup_steps < j.train.steps for j in group)
    assert smallest == sorted(smallest)  # larger budgets never move to smaller models
    header = out.read_text().splitlines()[:6]
    assert any("xdlm scaling plan --base jobs/markov_small.yaml" in line for line in header)


def test_sizes_are_centred_on_the_compute_optimum():
    """A budget 1000x larger gets models sqrt(1000) ~ 32x larger (N* = sqrt(C / 6r))."""
    small = make_plan(BASE, [1e12], 1, [0.1], name="a", overrides=QUICK, workers=1)
    large = make_plan(BASE, [1e15], 1, [0.1], name="b", overrides=QUICK, workers=1)
    ratio = large.kept[0].non_embedding / small.kept[0].non_embedding
    assert 10 < ratio < 100
    for plan, budget in ((small, 1e12), (large, 1e15)):
        target = math.sqrt(budget / (6 * 20))
        assert abs(math.log(plan.kept[0].non_embedding / target)) < math.log(4)


def test_learning_rate_and_batch_rules():
    plan = make_plan(BASE, [1e12, 8e12], 2, [0.1], name="r", overrides=QUICK, workers=1)
    for c in plan.kept:
        assert c.lr == pytest.approx(2e-3 * 128 / c.model.hidden)  # lr_0 hidden_0 / hidden, base job's lr_0, hidden_0
    batches = {c.budget: c.global_batch for c in plan.kept}
    assert batches[1e12] == 64 and batches[8e12] == 128  # B_0 (C / C_0)^(1/3): 8x the budget, 2x the batch


def test_memory_estimate_by_hand():
    job = load_job(BASE, ["model.n_layers=2", "model.hidden=64", "model.n_heads=2"])
    params = count_parameters(build_model(job.model, 9))["total"]
    memory = memory_bytes(job.model, 9, micro_batch=4, seq_len=32, bf16=False, ema=True)
    assert memory["states"] == 20 * params  # 4 weights + 4 grads + 8 Adam + 4 EMA bytes per parameter
    per_layer = 4 * 32 * 64 * (34 + 5 * 2 * 32 / 64) * 4 / 2
    assert memory["activations"] == pytest.approx(2 * per_layer + 3 * 4 * 32 * 9 * 4)


def test_a_candidate_over_the_memory_is_dropped_with_its_reason(capsys):
    plan = make_plan(BASE, [3e12], 3, [0.0], name="m", overrides=QUICK, workers=1, memory_gib=0.02)
    assert [c.label for c in plan.kept] == ["L1-D32", "L2-D64"]
    assert len(plan.dropped) == 1 and "--memory-gib 0.02" in plan.dropped[0].dropped
    assert "dropped:" in plan.table()


@pytest.mark.parametrize(("argv", "flag"), [
    (["--budgets", ""], "--budgets"),
    (["--budgets", "1e5"], "--budgets"),  # too small for any size: fewer than min_steps steps
    (["--budgets", "1e12,-3"], "--budgets"),
    (["--budgets", "1e12", "--k", "0,1.5"], "--k"),
    (["--budgets", "1e12", "--k", ""], "--k"),
    (["--budgets", "1e12", "--sizes", "0"], "--sizes"),
    (["--budgets", "1e12", "--replicates", "0"], "--replicates"),
])
def test_bad_input_names_the_flag(tmp_path, capsys, argv, flag):
    out = tmp_path / "x.yaml"
    assert main(["scaling", "plan", "--base", BASE, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"error: {flag}" in err and "Traceback" not in err
    assert not out.exists()


def test_too_small_budget_says_why():
    with pytest.raises(UserError) as err:
        make_plan(BASE, [1e12, 1e6], 3, [0.0], name="s", overrides=QUICK)
    assert "--budgets: budget 1e+06 FLOPs fits no size" in str(err.value) and "steps" in str(err.value)


# -- the space's `job` entry: one grid point sets keys of several sections together ----------------
def test_job_entry_sets_keys_across_sections():
    base = to_dict(load_job(BASE))
    job = apply_params(base, {"job": {"model.n_layers": 2, "model.hidden": 64, "model.n_heads": 2,
                                      "train.steps": 77, "tracking.tags": {"xdlm.scaling.budget": "1e+12"}}})
    assert (job.model.n_layers, job.model.hidden, job.train.steps) == (2, 64, 77)
    assert job.model.max_seq_len == 32 and job.model.dropout == 0.0  # the rest of the base stays
    assert job.tracking.tags == {"xdlm.scaling.budget": "1e+12"}


@pytest.mark.parametrize(("point", "message"), [
    ({"cluster.num_workers": 4}, "space.cluster.num_workers: 'cluster' is set by the sweep"),
    ({"tracking.experiment": "x"}, "space.tracking.experiment: 'tracking' is set by the sweep"),
    ({"train.seed": 3}, "space.job: train.seed cannot be set in a point"),
    ({"model.widht": 3}, "unknown config key 'widht'"),
    ({}, "space.job: each value must be a non-empty mapping"),
])
def test_job_entry_refuses_what_a_space_may_not_set(point, message):
    with pytest.raises(ConfigError) as err:
        apply_params(to_dict(load_job(BASE)), {"job": point})
    assert message in str(err.value)


@pytest.mark.parametrize("path", ["sweeps/scaling_quick.yaml", "sweeps/scaling_paper.yaml"])
def test_the_committed_scaling_sweeps_validate(path):
    sweep = load_sweep(path)
    points = sweep.spec.space["job"].values
    budgets = {p["tracking.tags"][TAG_BUDGET] for p in points}
    assert len(budgets) >= 3 and len(sweep.spec.space["diffusion.k"].values) >= 2
    assert len(points) >= 9
    for job in trials_of(path)[: len(points)]:
        flops = flops_per_token(job.model, job.data.seq_len) * job.train.steps * job.train.global_batch * job.data.seq_len
        assert flops == pytest.approx(float(job.tracking.tags[TAG_BUDGET]), rel=0.03)


def test_rules_default_to_the_base_job():
    rules = Rules.from_job(load_job(BASE), [1e12, 1e13])
    assert (rules.aspect, rules.head_dim, rules.batch_0, rules.budget_0, rules.lr_0) == (32, 32, 64, 1e12, 2e-3)
    assert yaml.safe_load("a: 1")  # yaml is what plan writes with


def test_depth_step_spreads_the_sizes():
    plan = make_plan(BASE, [1e13], 3, [0.0], name="d", overrides=QUICK, workers=1, depth_step=2)
    assert [c.model.n_layers for c in plan.kept] in ([1, 3, 5], [2, 4, 6], [3, 5, 7])
    with pytest.raises(UserError, match="--depth-step: must be >= 1"):
        make_plan(BASE, [1e13], 3, [0.0], name="d", overrides=QUICK, depth_step=0)
