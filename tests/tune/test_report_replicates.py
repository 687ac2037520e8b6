"""The sweep report with replicates, from synthetic trial records (no Ray, no training): trials
grouped per configuration, mean ± 95 % interval per metric column, the best and the frontier
decided on the means and marked resolved or not, error bars in the plots, aggregated metrics on
the MLflow parent run."""

from __future__ import annotations

import json

import pytest

from xdlm.config import JobConfig, to_dict
from xdlm.eval import metric_names
from xdlm.tracking.runs import make_client, start_run
from xdlm.tune import layout
from xdlm.tune.replicates import REPLICATE_KEY, identity
from xdlm.tune.report import build_report
from xdlm.tune.spec import SweepSpec, spec_to_dict

STEPS = 8
# k -> (val NELBO, generative PPL at 8 steps) per replicate: k = 0 and 0.5 overlap on NELBO; k = 1 is
# clearly worse on NELBO and clearly better on generation (a resolved frontier point)
RESULTS = {
    0.0: [(6.00, 90.0), (6.30, 95.0), (5.90, 92.0)],
    0.5: [(6.10, 91.0), (6.40, 96.0), (6.05, 93.0)],
    1.0: [(7.00, 40.0), (7.05, 41.0), (6.95, 42.0)],
}


@pytest.fixture
def sweep_dir(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = start_run(uri, "sweeps", "rep")
    job = JobConfig()
    job.eval.sample_steps = [STEPS]
    job.eval.evaluator = "runs/ar_evaluator"  # generative PPL on the y axis: no data needed here
    spec = SweepSpec(name="rep")
    layout.write_state(tmp_path, {"name": "rep", "sweep_dir": str(tmp_path), "base_job": to_dict(job),
                                  "tracking_uri": uri, "experiment": "sweeps", "parent_run_id": parent,
                                  "spec": {**spec_to_dict(spec), "space": {"diffusion.k": {"kind": "grid"}}}})
    n = 0
    for k, replicates in RESULTS.items():
        for r, (nelbo, gen_ppl) in enumerate(replicates):
            trial_id = f"t_{n:05d}"
            run_dir = tmp_path / layout.TRIALS_DIR / layout.trial_run_name("rep", trial_id)
            config = {"diffusion.k": k, REPLICATE_KEY: r}
            layout.write_trial_info(run_dir, {"trial_id": trial_id, "segment": 0, "params": config, "init_from": None})
            layout.write_done(run_dir, {"trial_id": trial_id, "run_id": None, "params": config,
                                        "started_at": 0.0, "finished_at": 60.0,
                                        "metrics": {metric_names.nelbo(): nelbo, metric_names.ppl(): 2.718 ** nelbo,
                                                    metric_names.generative_ppl(STEPS): gen_ppl, "tokens": 1000.0}})
            n += 1
    # a fourth configuration whose only trial did not finish: listed, not counted
    run_dir = tmp_path / layout.TRIALS_DIR / layout.trial_run_name("rep", "t_00099")
    layout.write_trial_info(run_dir, {"trial_id": "t_00099", "segment": 0,
                                      "params": {"diffusion.k": 0.9, REPLICATE_KEY: 0}, "init_from": None})
    return tmp_path, uri, parent


def test_report_pools_replicates_and_says_what_is_not_resolved(sweep_dir):
    directory, uri, parent = sweep_dir
    report = build_report(directory, log_to_mlflow=True)
    text = report.text()
    k0 = identity({"diffusion.k": 0.0}).config_id

    assert [c.label for c in report.configs] == ["k=0.0", "k=0.5", "k=1.0", "k=0.9"]
    assert [c.n for c in report.configs] == [3, 3, 3, 0]
    assert report.best.config_id == k0 and report.best.resolved is False
    assert "Best on the mean val/nelbo: k=0.0; not resolved at this budget" in text
    assert "k=0.0 *best, not resolved*" in text and "| 3/3 |" in text and "| 0/1 |" in text
    assert "6.067 ± 0.5" in text  # mean and half-width of k = 0's NELBO (hand: 4.303 * 0.2082 / sqrt 3 = 0.517)
    assert "| rep " in text  # the trial table shows the replicate
    # frontier on the means: k = 0 (x) and k = 1 (y) are on it; k = 0.5 is dominated by k = 0 but not resolved
    assert report.frontier == ["k=0.0 (not resolved)", "k=1.0"]
    k05 = identity({"diffusion.k": 0.5}).config_id
    assert report.placements[k05].on_frontier is False and report.placements[k05].resolved is False
    assert any("k=0.5 is dominated on the means by k=0.0, but not resolved" in n for n in report.notes)

    points = json.loads((directory / "report" / "pareto.json").read_text())["points"]
    by_label = {p["label"]: p for p in points}
    assert by_label["k=1.0"]["resolved"] is True and by_label["k=1.0"]["replicates"] == 3
    assert by_label["k=0.0"]["x"]["ci_low"] < by_label["k=0.0"]["x"]["mean"] < by_label["k=0.0"]["x"]["ci_high"]
    html = (directory / "report" / "pareto.html").read_text()
    assert '"error_x"' in html and '"error_y"' in html
    assert (directory / "report" / "pareto.png").stat().st_size > 0
    assert "k=0.0" in (directory / "report" / "configs.csv").read_text()

    run = make_client(uri).get_run(parent)
    assert run.data.metrics[f"configs/{k0}/val/nelbo/mean"] == pytest.approx(6.0666667)
    assert run.data.metrics[f"configs/{k0}/val/nelbo/ci_low"] < 6.0666667 < run.data.metrics[f"configs/{k0}/val/nelbo/ci_high"]
    assert run.data.metrics[f"configs/{k0}/replicates"] == 3
    assert run.data.tags[f"xdlm.sweep.config.{k0}"] == "k=0.0"
    assert run.data.tags["xdlm.best_config_id"] == k0 and run.data.tags["xdlm.best_resolved"] == "false"


def test_one_replicate_reports_means_without_intervals_and_says_so(sweep_dir):
    directory, _, _ = sweep_dir
    for run_dir in (directory / layout.TRIALS_DIR).iterdir():  # keep replicate 0 only
        if json.loads((run_dir / layout.TRIAL_FILE).read_text())["params"][REPLICATE_KEY] != 0:
            for path in run_dir.iterdir():
                path.unlink()
            run_dir.rmdir()
    report = build_report(directory, log_to_mlflow=False)
    text = report.text()
    assert report.best.resolved is None and "*best?*" in text and "±" not in text
    assert any(n.startswith("one replicate per configuration") for n in report.notes)
    assert any("whether the frontier is resolved is unknown" in n for n in report.notes)
