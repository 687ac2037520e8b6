"""Sweep specs are checked before anything starts: fast, no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from xdlm.config import ConfigError, load_job, to_dict
from xdlm.eval import metric_names
from xdlm.tune.metrics import check_metric, final_metrics
from xdlm.tune.space import apply_params
from xdlm.tune.spec import load_spec
from xdlm.tune.sweep import load_sweep

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml")))
def test_the_repository_sweeps_are_valid(name):
    sweep = load_sweep(REPO / "sweeps" / f"{name}.yaml")
    assert sweep.spec.name == name and sweep.spec.space


def test_quick_k_searches_the_four_k(write_sweep):
    sweep = load_sweep(REPO / "sweeps" / "quick_k.yaml")
    assert sweep.spec.space["diffusion.k"].values == [0.0, 0.1, 0.5, 1.0]
    assert sweep.job.model.size == "tiny" and sweep.job.cluster.num_workers == 1


def test_pbt_lr_builds_the_population_based_scheduler():
    from ray.tune.schedulers import PopulationBasedTraining

    from xdlm.tune.algorithms import build_scheduler

    spec, job = (sweep := load_sweep(REPO / "sweeps" / "pbt_lr.yaml")).spec, sweep.job
    scheduler = build_scheduler(spec, job)
    assert isinstance(scheduler, PopulationBasedTraining)
    assert scheduler._perturbation_interval == 50 and scheduler._time_attr == "step"
    assert list(scheduler._hyperparam_mutations) == ["optim.lr"]
    assert job.train.eval_every % job.train.checkpoint_every == 0


def test_overrides_and_resources_reach_the_base_job(write_sweep):
    sweep = load_sweep(write_sweep(), ["search.num_samples=3", "budget.trial_tokens=512"])
    spec, job = sweep.spec, sweep.job
    assert spec.search.num_samples == 3
    assert job.cluster.num_workers == 1 and job.cluster.cpus_per_worker == 0.8
    assert job.train.steps == 2  # 512 tokens / (8 x 32 tokens per step)


@pytest.mark.parametrize(("spec", "overrides", "message"), [
    ({}, ["scheduler.kindd=asha"], r"unknown key 'scheduler.kindd'; allowed keys here: kind, time_attr"),
    ({"space": {"diffusion.k": {"kind": "grid", "vals": [0]}}}, [], r"unknown key 'space.diffusion.k.vals'"),
    ({"space": {"diffusion.kk": {"kind": "grid", "values": [0]}}}, [],
     r"space.diffusion.kk: unknown config key 'kk' in diffusion; allowed: k, schedule"),
    ({"space": {}}, [], r"space: is empty"),
    ({"space": {"diffusion.k": {"kind": "grid", "values": []}}}, [], r"space.diffusion.k.values: kind grid needs"),
    ({"space": {"diffusion.k": {"kind": "normal", "values": [0]}}}, [], r"space.diffusion.k.kind: must be one of grid"),
    ({"space": {"diffusion.k": {"kind": "grid", "values": [0, 2]}}}, [],
     r"diffusion.k=2.*diffusion.k: must be in \[0, 1\]"),
    ({"space": {"optim.lr": {"kind": "loguniform", "low": 0, "high": 1e-3}}}, [], r"space.optim.lr.low: .*needs low > 0"),
    ({"space": {"optim.lr": {"kind": "quniform", "low": 1e-4, "high": 1e-3}}}, [], r"space.optim.lr.q: .*needs a step"),
    ({"space": {"cluster.num_workers": {"kind": "grid", "values": [1, 2]}}}, [], r"'cluster' is set by the sweep"),
    ({"space": {"diffusion.schedule_params.w": {"kind": "grid", "values": [2.0]}}}, [],
     r"diffusion.schedule_params.*unexpected keyword argument 'w'|diffusion.schedule_params"),
    ({"search": {"algorithm": "optuna"}}, [], r"grid is not supported by search.algorithm=optuna; use choice"),
    ({"metric": "val/loss"}, [], r"metric: no trial reports 'val/loss'; during training: val/nelbo"),
    ({"metric": "gen/entropy_2steps", "scheduler": {"kind": "asha"}}, [], r"only reported when a trial finishes"),
    ({"scheduler": {"kind": "pbt"}}, [], r"scheduler.mutations: 'optim.lr' is not in space .*space has: diffusion.k"),
    ({"scheduler": {"kind": "pbt", "mutations": ["diffusion.k"]}}, [], r"'diffusion.k' cannot change mid-run"),
    ({"scheduler": {"kind": "pbt"}, "space": {"optim.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2}}}, [],
     r"search.num_samples: PBT needs a population of at least 2 trials; .* give 1"),
    ({"scheduler": {"kind": "pbt"}, "space": {"optim.lr": {"kind": "grid", "values": [1e-3, 1e-2]}}},
     ["base.overrides=[train.checkpoint_every=4,train.eval_every=2]"],
     r"train.checkpoint_every: PBT clones .* train.eval_every \(2\) must be a multiple of train.checkpoint_every \(4\)"),
    ({"scheduler": {"kind": "pbt", "perturbation_interval": 6},
      "space": {"optim.lr": {"kind": "grid", "values": [1e-3, 1e-2]}}}, [],
     r"perturbation_interval: 6 must be below the trials' length 6"),
    ({"scheduler": {"kind": "pbt"}, "search": {"algorithm": "optuna"},
      "space": {"optim.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2}}}, [],
     r"search.algorithm: optuna cannot be combined with scheduler.kind=pbt"),
    ({"scheduler": {"kind": "pbt", "quantile_fraction": 0.75},
      "space": {"optim.lr": {"kind": "grid", "values": [1e-3, 1e-2]}}}, [],
     r"scheduler.quantile_fraction: must be in \(0, 0.5\]"),
    ({"scheduler": {"kind": "asha", "grace_period": 6}}, [], r"grace_period: 6 must be below the trials' length 6"),
    ({"mode": "minimum"}, [], r"mode: must be one of min, max"),
    ({"resources": {"trainable_cpus": 0}}, [], r"resources.trainable_cpus: must be > 0"),
    ({"name": "a b"}, [], r"name: must be letters"),
])
def test_bad_specs_fail_before_anything_starts(write_sweep, spec, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(write_sweep(**spec), overrides)


def test_metrics_reported_only_at_the_end_are_fine_with_fifo(write_sweep):
    sweep = load_sweep(write_sweep(metric="gen/entropy_2steps"))
    assert sweep.spec.scheduler.kind == "fifo"


def test_a_sweep_metric_is_named_as_training_names_it():
    """The names a sweep accepts are the ones training logs (xdlm.eval.metric_names); a backbone
    the sampler cannot draw from reports no generation metrics, so a sweep cannot ask for them."""
    job = load_job(None, ["data.eval_sets=[stdlib-test]", "eval.sample_steps=[8]", "eval.evaluator=gpt2"])
    assert final_metrics(job) == [metric_names.UNIGRAM_PPL, "zeroshot/stdlib-test/nelbo", "zeroshot/stdlib-test/ppl",
                                  "gen/entropy_8steps", "gen/ppl_8steps"]
    causal = load_job(None, ["model.backbone=causal_dit", "data.eval_sets=[]", "eval.sample_steps=[8]"])
    assert final_metrics(causal) == [metric_names.UNIGRAM_PPL]
    with pytest.raises(ConfigError, match=r"no trial reports 'gen/entropy_8steps'"):
        check_metric("gen/entropy_8steps", causal, early_stopping=False)


def test_the_spec_alone_is_checked_without_the_base_job(write_sweep):
    """load_spec checks the spec's own fields; the value k=2 only fails against the job (load_sweep)."""
    path = write_sweep(space={"diffusion.k": {"kind": "grid", "values": [0, 2]}})
    assert load_spec(path).space["diffusion.k"].values == [0, 2]
    with pytest.raises(ConfigError, match=r"diffusion.k: must be in \[0, 1\]"):
        load_sweep(path)
    not_a_mapping = path.with_name("list.yaml")
    not_a_mapping.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"top level of a sweep file must be a mapping"):
        load_spec(not_a_mapping)


def test_bundled_values_set_several_keys_and_replace_schedule_params(write_sweep):
    job = load_sweep(write_sweep(space={"diffusion": {"kind": "grid", "values": [
        {"schedule": "polynomial", "schedule_params": {"w": 2.0}},
        {"schedule": "geometric", "schedule_params": {"sigma_min": 1e-3, "sigma_max": 10.0}},
    ]}}, base_overrides=("diffusion.schedule_params={eps: 1e-3}",))).job
    geometric = apply_params(to_dict(job), {"diffusion": {"schedule": "geometric",
                                                          "schedule_params": {"sigma_max": 10.0}}})
    assert geometric.diffusion.schedule_params == {"sigma_max": 10.0}  # no stale eps
    hidden = apply_params(to_dict(job), {"model.hidden": 128.0})
    assert hidden.model.hidden == 128 and isinstance(hidden.model.hidden, int)


def test_missing_base_job_file_is_named(write_sweep):
    with pytest.raises(ConfigError, match=r"base.job: job file 'jobs/nope.yaml' not found"):
        load_sweep(write_sweep(base={"job": "jobs/nope.yaml"}))


def test_the_cli_reports_a_bad_spec_without_a_traceback(write_sweep, capsys):
    from xdlm.cli import main

    assert main(["sweep", str(write_sweep()), "metric=val/loss"]) == 2
    assert "xdlm sweep: error: metric: no trial reports 'val/loss'" in capsys.readouterr().err
    assert main(["sweep", "report", "never-ran", "--storage", str(write_sweep().parent)]) == 2
    assert "no sweep named 'never-ran'" in capsys.readouterr().err


def test_an_override_yaml_cannot_parse_is_a_one_line_error_naming_it(write_sweep, capsys):
    """An unquoted list item holding brackets (``[a,eval.sample_steps=[2]]``) is not YAML: one
    line naming the override and where it breaks, exit 2; quoted, the same items load."""
    from xdlm.cli import main

    bad = "base.overrides=[train.steps=6,eval.sample_steps=[2]]"
    with pytest.raises(ConfigError, match=r"^override 'base\.overrides=\[.*: the value is not valid YAML "
                                          r"\(.* at character 34 of the value\); quote a list item"):
        load_sweep(write_sweep(), [bad])
    with pytest.raises(ConfigError, match=r"^override 'eval.sample_steps=\[2': .* at the end of the value"):
        load_job(REPO / "jobs" / "markov_small.yaml", ["eval.sample_steps=[2"])
    assert main(["sweep", str(write_sweep()), bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xdlm sweep: error: override {bad!r}: the value is not valid YAML")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    sweep = load_sweep(write_sweep(), ["base.overrides=[train.steps=6,'eval.sample_steps=[2]']"])
    assert sweep.job.train.steps == 6 and list(sweep.job.eval.sample_steps) == [2]


def test_a_sweep_state_file_with_missing_keys_is_a_one_line_error(tmp_path, capsys):
    """Issue 10: this printed a KeyError traceback."""
    import json

    from xdlm.cli import main
    from xdlm.tune import layout

    directory = tmp_path / "sweeps" / "torn"
    directory.mkdir(parents=True)
    (directory / layout.SWEEP_STATE_FILE).write_text(json.dumps({"name": "torn"}))
    assert main(["sweep", "report", "torn", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lacks sweep_dir, base_job" in err and "Traceback" not in err
    assert main(["sweep", "--resume", "torn", "--storage", str(tmp_path)]) == 2
