"""``xdlm scaling fit`` end to end on a real sqlite MLflow store filled with runs of a planted law."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.scaling.test_points import LAWS, log_run, make_study
from xdlm.cli import main
from xdlm.scaling.analysis import run_analysis


def test_scaling_fit_end_to_end(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    make_study(uri, ks=(0.0, 0.5))
    rc = main(["scaling", "fit", "scaling_test", "--tracking-uri", uri, "--bootstrap", "30",
               "--target-flops", "1e19", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "## k = 0.5" in out and "N*(C)" in out and "surface L(N, D)" in out
    assert "k=0 vs k=0.5 (compute): k=0.5 overtakes k=0" in out
    assert "fitted floor E =" in out and "entropy rate h = 1.7000" in out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id],
                                filter_string="tags.`xdlm.kind` = 'scaling_analysis'")
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["xdlm.scaling.sweep"] == "scaling_test" and tags["xdlm.scaling.runs_used"] == "30"
    assert len(tags["xdlm.scaling.run_ids"].split(",")) == 30
    exponent = metrics["k0/n_opt/exponent"]
    assert metrics["k0/n_opt/exponent_lo"] <= exponent <= metrics["k0/n_opt/exponent_hi"]
    assert abs(exponent - 0.28 / 0.62) < 0.05 * 0.28 / 0.62  # the planted beta/(alpha+beta)
    assert run.data.params["bootstrap"] == "30"
    local = client.download_artifacts(run.info.run_id, "scaling", str(tmp_path / "dl"))
    names = {p.name for p in (tmp_path / "dl" / "scaling").iterdir()}
    assert {"fit.json", "fit.md", "isoflop.png", "isoflop.html", "curves.png", "curves.html"} <= names, names
    html = (tmp_path / "dl" / "scaling" / "isoflop.html").read_text()
    # plotly.js inline; the bundle itself names cdn.plot.ly as a topojson default, never as a script source
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000
    assert (tmp_path / "dl" / "scaling" / "isoflop.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "dl" / "scaling" / "fit.json").read_text())
    assert len(saved["runs_used"]) == 30 and saved["crossovers"][0]["inside"] is True
    assert local


def test_scaling_fit_bad_input_exits_2(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).create_experiment("empty")
    assert main(["scaling", "fit", "nothing", "--tracking-uri", uri, "--no-log"]) == 2
    assert "no sweep (tag xdlm.sweep) and no MLflow experiment named 'nothing'" in capsys.readouterr().err


def test_decay_branches_in_the_store_make_the_anytime_curve(tmp_path):
    """Runs tagged xdlm.branch.parent_run_id / xdlm.branch.horizon are read back as the parent's
    L(D) curve: the fit uses the branches' end points (planted E' = E + A/N^alpha), not the parent's
    own evaluations, which are logged 30 % above the law; they also enter the surface."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = make_study(uri, ks=(0.0,), budgets=(1e15, 1e16), noise=0.002)
    client, exp = store["client"], store["experiment_id"]
    n, d_total = 2e6, 4e8
    law = LAWS[0.0]
    parent = log_run(client, exp, "k0-parent", k=0.0, n=n, d_final=d_total, law={**law, **{key: law[key] * 1.3 for key in ("E", "A", "B")}},
                     budget=None, size="s2")
    rng = np.random.default_rng(1)
    for h in (0.125, 0.25, 0.375, 0.5, 0.75, 1.0):
        log_run(client, exp, f"k0-parent-h{h:g}", k=0.0, n=n, d_final=h * d_total, law=law, budget=None,
                size="s2", noise=0.002, rng=rng, parent=parent, horizon=h)
    analysis = run_analysis("scaling_test", uri, bootstrap=30, log=False, out_dir=str(tmp_path / "out"))
    (kf,) = analysis.fits
    curve = kf.curve
    assert curve["kind"] == "decay branches" and curve["run_id"] == parent and curve["points"] == 6
    assert sorted(p.horizon for p in kf.points if p.is_branch) == [0.125, 0.25, 0.375, 0.5, 0.75, 1.0]
    planted_floor = law["E"] + law["A"] / n ** law["alpha"]
    assert curve["E"].contains(planted_floor), curve["E"]
    assert curve["E"].value == pytest.approx(planted_floor, rel=0.1) and curve["beta"].contains(law["beta"])
    assert "decay branches" in analysis.table()
    saved = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert sum(p["branch_of"] == parent for p in saved["fits"][0]["points"]) == 6
