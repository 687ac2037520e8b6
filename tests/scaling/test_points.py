"""Reading a scaling study back from a real MLflow store (sqlite in tmp_path): points, exclusions,
and the bad inputs that must be refused with a message naming what is missing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from xdlm.errors import UserError
from xdlm.scaling.points import load_study

SEQ, BATCH, WARMUP = 64, 32, 10
LAWS = {0.0: dict(E=1.7, A=200.0, alpha=0.34, B=600.0, beta=0.28),
        0.5: dict(E=1.7, A=330.0, alpha=0.37, B=1320.0, beta=0.32),
        1.0: dict(E=1.7, A=300.0, alpha=0.34, B=900.0, beta=0.28)}
"""Planted L(N, D) = E + A/N^alpha + B/D^beta per k, one source (E = its entropy rate 1.7):
k = 0.5 starts worse than k = 0 and overtakes it near C = 2e16; k = 1 is worse than k = 0 throughout."""
ENTROPY = 1.7
BUDGETS = (1e15, 1e16, 1e17)


def planted(law: dict, n, d):
    return law["E"] + law["A"] / np.asarray(n) ** law["alpha"] + law["B"] / np.asarray(d) ** law["beta"]


def optimal_n(law: dict, c: float) -> float:
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    return g * (c / 6) ** (b / (a + b))


def log_run(client: MlflowClient, experiment_id: str, name: str, *, k: float, n: float, d_final: float,
            law: dict | None, budget: float | None, size: str, noise: float = 0.0, rng=None, status="FINISHED",
            sweep: str | None = "scaling_test", evals: int = 8, params: dict | None = None,
            loss_override: float | None = None, parent: str | None = None, entropy: float | None = None,
            horizon: float | None = None) -> str:
    tags = {"xdlm.k": str(k), "xdlm.scaling.size": size}
    if budget is not None:
        tags["xdlm.scaling.budget"] = str(budget)
    if sweep:
        tags["xdlm.sweep"] = sweep
    if parent:
        tags["xdlm.branch.parent_run_id"] = parent
        tags["xdlm.branch.horizon"] = str(horizon)
    rng = rng if rng is not None else np.random.default_rng(0)
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    per_step = SEQ * BATCH
    last = max(int(round(d_final / per_step)), WARMUP + evals)
    steps = np.unique(np.linspace(last / evals, last, evals).astype(int))
    metrics, ts = [], 0
    for s in steps:
        d = float(s * per_step)
        value = planted(law, n, d) * math.exp(noise * rng.standard_normal()) if law else 3.0
        if loss_override is not None and s == steps[-1]:
            value = loss_override
        metrics += [Metric("val/nelbo", value, ts, int(s)), Metric("tokens", d, ts, int(s)),
                    Metric("flops", 6 * n * d, ts, int(s)), Metric("flops_with_embedding", 6 * (n + 1e4) * d, ts, int(s))]
    if entropy is not None:
        metrics.append(Metric("val/entropy_rate", entropy, ts, int(steps[-1])))
    all_params = {"params.non_embedding": str(int(n)), "params.total": str(int(n + 1e4)),
                  "optim.warmup_steps": str(WARMUP), "train.steps": str(last), "train.global_batch": str(BATCH),
                  "data.seq_len": str(SEQ), "data.source": "markov", "diffusion.k": str(k), **(params or {})}
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(a, b) for a, b in all_params.items()],
                     tags=[RunTag(a, b) for a, b in tags.items()])
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def make_study(uri: str, experiment: str = "scaling", noise: float = 0.005, seed: int = 0, ks=(0.0, 0.5),
               budgets=BUDGETS, sweep: str | None = "scaling_test", entropy: float | None = None) -> dict:
    """An IsoFLOP grid (5 sizes around each budget's optimum) per k, following ``LAWS``."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(experiment)
    rng = np.random.default_rng(seed)
    ids = {}
    for k in ks:
        for c in budgets:
            centre = optimal_n(LAWS[k], c)
            for j, factor in enumerate((0.25, 0.5, 1.0, 2.0, 4.0)):
                n = centre * factor
                name = f"k{k:g}-C{c:.0e}-s{j}"
                ids[name] = log_run(client, experiment_id, name, k=k, n=n, d_final=c / (6 * n), law=LAWS[k],
                                    budget=c, size=f"s{j}", noise=noise, rng=rng, sweep=sweep,
                                    entropy=ENTROPY if entropy is None else entropy)
    return {"client": client, "experiment_id": experiment_id, "ids": ids}


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_points_carry_the_contract_and_exclusions_name_their_reason(uri):
    store = make_study(uri, ks=(0.0,), budgets=(1e15, 1e16))
    client, exp = store["client"], store["experiment_id"]
    log_run(client, exp, "failed", k=0.0, n=1e5, d_final=1e7, law=LAWS[0.0], budget=1e13, size="s9",
            status="FAILED", rng=np.random.default_rng(0))
    log_run(client, exp, "nan", k=0.0, n=1e5, d_final=1e7, law=LAWS[0.0], budget=1e13, size="s9",
            loss_override=float("nan"), rng=np.random.default_rng(0))
    log_run(client, exp, "other-data", k=0.0, n=1e5, d_final=1e7, law=LAWS[0.0], budget=1e13, size="s9",
            params={"data.seq_len": "128"}, rng=np.random.default_rng(0))
    warm = client.create_run(exp, run_name="warm", tags={"xdlm.sweep": "scaling_test", "xdlm.k": "0"})
    client.log_batch(warm.info.run_id, metrics=[Metric("val/nelbo", 5.0, 0, 5)],
                     params=[Param("optim.warmup_steps", "10"), Param("params.non_embedding", "1000")])
    client.set_terminated(warm.info.run_id, "FINISHED")
    study = load_study(uri, "scaling_test")
    assert study.kind == "sweep" and len(study.points) == 10
    reasons = {e.name: e.reason for e in study.excluded}
    assert reasons["failed"].startswith("diverged (run FAILED)")
    assert reasons["nan"].startswith("diverged (non-finite")
    assert reasons["warm"].startswith("still in warm-up")
    assert reasons["other-data"].startswith("other experiment mixed in (data.seq_len=128")
    p = study.points[0]
    assert p.c == pytest.approx(6 * p.n * p.d) and p.c_with_embedding > p.c and p.budget in (1e15, 1e16)
    assert p.curve_d.size >= 4 and study.entropy_rate == pytest.approx(ENTROPY)
    assert load_study(uri, "scaling").kind == "experiment"  # the experiment's name works too


def test_older_runs_parameter_metrics_and_computed_tokens(uri):
    client = MlflowClient(uri)
    exp = client.create_experiment("old")
    run = client.create_run(exp, run_name="old", tags={"xdlm.k": "0.1"})
    client.log_batch(run.info.run_id, metrics=[Metric("params/non_embedding", 2e5, 0, 0), Metric("val/nelbo", 4.0, 0, 50)],
                     params=[Param("train.global_batch", "8"), Param("data.seq_len", "16"), Param("model.n_layers", "2"),
                             Param("model.hidden", "64")])
    client.set_terminated(run.info.run_id, "FINISHED")
    (point,) = load_study(uri, "old").points
    assert point.n == 2e5 and point.d == 50 * 8 * 16
    assert point.c == pytest.approx(point.d * (6 * 2e5 + 12 * 2 * 64 * 16))  # = xdlm.models.flops_per_token


def test_bad_inputs_are_refused_with_what_is_missing(uri):
    client = MlflowClient(uri)
    with pytest.raises(UserError, match="no sweep .* and no MLflow experiment named 'nothing'"):
        load_study(uri, "nothing")
    exp = client.create_experiment("all_failed")
    for i in range(3):
        log_run(client, exp, f"f{i}", k=0.0, n=1e5, d_final=1e7, law=LAWS[0.0], budget=1e13, size="s0",
                status="FAILED", sweep="dead")
    with pytest.raises(UserError, match="all 3 runs diverged"):
        load_study(uri, "dead")
    other = client.create_experiment("elsewhere")
    log_run(client, other, "stray", k=0.0, n=1e5, d_final=1e7, law=LAWS[0.0], budget=1e13, size="s0",
            sweep="dead", rng=np.random.default_rng(0))
    with pytest.raises(UserError, match="runs of another experiment mixed in"):
        load_study(uri, "dead")
    log_run(client, other, "second-sweep", k=0.0, n=1e5, d_final=1e7, law=LAWS[0.0], budget=1e13, size="s0",
            sweep="another", rng=np.random.default_rng(0))
    with pytest.raises(UserError, match="mixes the runs of several sweeps"):
        load_study(uri, "elsewhere")


def test_several_sweeps_of_one_study_are_pooled(uri):
    """``A,B``: a grid extended by a second sweep (a size added at one budget) is read as one study;
    a misspelled second name is refused rather than silently fitted on the first sweep alone."""
    made = make_study(uri, ks=(0.0,), budgets=BUDGETS[:2], sweep="grid")
    client = made["client"]
    log_run(client, made["experiment_id"], "extra", k=0.0, n=1e3, d_final=1e8, law=LAWS[0.0], budget=BUDGETS[2],
            size="s9", sweep="grid_extra", entropy=ENTROPY)
    alone = load_study(uri, "grid")
    pooled = load_study(uri, "grid,grid_extra")
    assert len(pooled.points) == len(alone.points) + 1
    assert {p.size for p in pooled.points} - {p.size for p in alone.points} == {"s9"}
    with pytest.raises(UserError, match="sweep 'grid_extr' .*no runs tagged"):
        load_study(uri, "grid,grid_extr")
