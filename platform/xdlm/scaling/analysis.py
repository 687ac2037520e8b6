"""``xdlm scaling fit``: read a study from MLflow, fit every k, compare the k, report and record.

The report is a printed table (fits with intervals, a crossover verdict per pair of k, the fitted
floor against the entropy rate on a known source), ``fit.json`` / ``fit.md`` and figures (PNG and
offline HTML) in ``--out``, and one MLflow analysis run in the study's experiment (tag
``xdlm.kind = scaling_analysis``) holding the numbers as metrics, the settings as params, the
runs it used as tags and every file as an artifact under ``scaling/``.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param

from xdlm.errors import UserError
from xdlm.eval import metric_names
from xdlm.scaling import crossover, figures
from xdlm.scaling import fit as fits
from xdlm.scaling.intervals import CONFIDENCE, Interval
from xdlm.scaling.points import ANALYSIS_KIND, Exclusion, Study, load_study
from xdlm.scaling.study_fit import LAWS, KFit, fit_k
from xdlm.tracking.runs import make_client, start_run

TAG_LIMIT = 5000
"""Longest tag value written (MLflow stores 5000-8000 characters depending on the backend)."""
LAW_LABELS = {"n_opt": "N*(C)", "d_opt": "D*(C)", "l_opt": "L*(C) - E"}


@dataclass
class Analysis:
    study: Study
    fits: list[KFit]
    crossovers: list[crossover.Crossover]
    settings: dict
    files: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None

    def table(self) -> str:
        return report_text(self)


def _fmt(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


def report_text(a: Analysis) -> str:
    s = a.study
    used = sum(len(f.points) for f in a.fits)
    lines = [f"# Scaling fit: {s.kind} {s.target} ({used} runs used, {len(s.excluded)} excluded); loss {s.metric}; "
             f"{CONFIDENCE:.0%} bootstrap percentile intervals ({a.settings['bootstrap']} replicates)", ""]
    for kf in a.fits:
        lines += [f"## k = {kf.k:g}", ""]
        if kf.minima:
            lines += ["| budget | FLOPs | sizes | N* | D* | L* |", "|---|---|---|---|---|---|"]
            lines += [f"| {m['budget']:.3g} | {m['compute']:.3g} | {', '.join(m['sizes'])} | {m['n_opt']:.3g} | "
                      f"{m['d_opt']:.3g} | {m['l_opt']:.4g} |" for m in kf.minima]
            target = a.settings.get("target_flops")
            lines += ["", "| law | exponent e | coefficient c |"
                      + (f" at C = {target:.3g} |" if target else ""), "|---|---|---|" + ("---|" if target else "")]
            for law in LAWS:
                row = (f"| {LAW_LABELS[law]} | {kf.numbers[f'{law}/exponent'].text()} | "
                       f"{kf.numbers[f'{law}/coefficient'].text('{:.3g}')} |")
                lines.append(row + (f" {kf.numbers[f'target/{law}'].text('{:.4g}')} |" if target else ""))
            floor = (f"E = {kf.numbers['l_opt/floor'].text()}, the surface's floor" if kf.anchored
                     else "E = 0: the surface's floor is not below every minimum")
            lines += ["", f"L*(C) = E + c C^e with {floor}; N*(C), D*(C) = c C^e", ""]
        sn = {key.split("/", 1)[1]: v for key, v in kf.numbers.items() if key.startswith("surface/")}
        lines.append("surface L(N, D) = E + A/N^alpha + B/D^beta: " + ", ".join(
            f"{key} = {sn[key].text()}" for key in ("E", "A", "alpha", "B", "beta")))
        lines.append(f"  implied N* ~ C^{sn['n_opt_exponent'].text()}, D* ~ C^{sn['d_opt_exponent'].text()} "
                     "(beta/(alpha+beta), alpha/(alpha+beta))")
        if kf.curve:
            c = kf.curve
            lines.append(f"training curve L(D) = E + B/D^beta of {c['run']} ({c['size']}, {c['points']} points, "
                         f"{c['kind']}): E = {c['E'].text()}, B = {c['B'].text()}, beta = {c['beta'].text()}")
        if kf.holdout:
            h = kf.holdout
            lines.append(f"held-out budget {h['budget']:.3g} (fitted on the others): L* predicted "
                         f"{h['l_opt']['predicted'].text()} vs measured {_fmt(h['l_opt']['measured'].value)} "
                         f"({'inside' if h['l_opt']['predicted'].contains(h['l_opt']['measured'].value) else 'outside'} "
                         f"the interval); N* predicted {h['n_opt']['predicted'].text('{:.3g}')} vs measured "
                         f"{h['n_opt']['measured'].value:.3g}")
        if kf.loo:
            spread = ", ".join(f"{LAW_LABELS[law]} e in [{min(r[law] for r in kf.loo):.3g}, "
                               f"{max(r[law] for r in kf.loo):.3g}]" for law in LAWS)
            lines.append(f"leave-one-budget-out ({len(kf.loo)} refits): {spread}")
        if s.entropy_rate is not None:
            lines.append(floor_line(kf, s))
        if kf.failed_replicates:
            lines.append(f"({kf.failed_replicates} of {a.settings['bootstrap']} replicates were dropped: a non-convex "
                         "parabola or a surface floor above an IsoFLOP minimum)")
        lines += [f"note: {n}" for n in kf.notes] + [""]
    lines += ["## Crossovers", ""]
    lines += [f"- {c.verdict()}" for c in a.crossovers] or ["- one value of k: nothing to compare"]
    if s.excluded:
        lines += ["", "## Excluded", ""] + [f"- {e.name}: {e.reason}" for e in s.excluded]
    return "\n".join(lines).rstrip() + "\n"


def floor_line(kf: KFit, s: Study) -> str:
    e = kf.numbers["surface/E"]
    line = f"fitted floor E = {e.text()} vs the source's entropy rate h = {s.entropy_rate:.4f}"
    line += f" ({'inside' if e.contains(s.entropy_rate) else 'outside'} the interval)"  # type: ignore[arg-type]
    if s.true_nll is not None:
        line += (f"; exact NLL/token of the validation sequences (the reachable floor at this length) "
                 f"{s.true_nll:.4f} ({'inside' if e.contains(s.true_nll) else 'outside'})")
    if kf.curve:
        line += f"; L(D) floor {kf.curve['E'].text()}"
    return line


def frontiers(kf: KFit) -> tuple[fits.Frontier, list[fits.Frontier]]:
    """L*(C) of ``kf``: the point estimate and one per bootstrap replicate."""
    keys = ("l_opt/floor", "l_opt/coefficient", "l_opt/exponent")
    point = fits.Frontier(*(kf.numbers[key].value for key in keys))
    reps = np.stack([kf.replicates[key] for key in keys], 1) if kf.replicates else np.zeros((0, 3))
    return point, [fits.Frontier(*map(float, r)) for r in reps if np.all(np.isfinite(r))]


def _compare(axis: str, a: KFit, b: KFit, fa, fb, reps_a: list, reps_b: list,
             data_range: tuple[float, float]) -> crossover.Crossover:
    at = crossover.crossing(fa, fb, data_range)
    later_a = None if not math.isfinite(at) else bool(fa(at * 1.01) < fb(at * 1.01))
    reps = crossover.replicate_crossings(list(zip(reps_a, reps_b, strict=False)), data_range, later_a)
    return crossover.compare(axis, a.k, b.k, at, reps, data_range,
                             lambda x: a.k if float(fa(x)) < float(fb(x)) else b.k)


def compare_ks(fits_: list[KFit]) -> list[crossover.Crossover]:
    """Each pair of k on compute (the L*(C) frontiers) and on tokens (the training curves)."""
    out = []
    for a, b in itertools.combinations(fits_, 2):
        if a.minima and b.minima:
            (fa, reps_a), (fb, reps_b) = frontiers(a), frontiers(b)
            lo, hi = max(a.compute_range[0], b.compute_range[0]), min(a.compute_range[1], b.compute_range[1])
            if lo < hi:
                out.append(_compare("compute", a, b, fa, fb, reps_a, reps_b, (lo, hi)))
        if a.curve and b.curve:
            lo, hi = max(a.curve["tokens"][0], b.curve["tokens"][0]), min(a.curve["tokens"][1], b.curve["tokens"][1])
            if lo < hi:
                out.append(_compare("tokens", a, b, a.curve["curve"], b.curve["curve"], a.curve_replicates,
                                    b.curve_replicates, (lo, hi)))
    return out


def run_analysis(target: str, tracking_uri: str, *, target_flops: float | None = None,
                 holdout_budget: float | None = None, bootstrap: int = 1000, metric: str = metric_names.nelbo(),
                 log: bool = True, out_dir: str | None = None, seed: int = 0) -> Analysis:
    if bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {bootstrap}")
    if target_flops is not None and not target_flops > 0:
        raise UserError(f"--target-flops must be > 0, got {target_flops}")
    study = load_study(tracking_uri, target, metric)
    rng = np.random.default_rng(seed)
    by_k: dict[float, list] = {}
    for p in study.points:
        by_k.setdefault(p.k, []).append(p)
    # the training curves compare the same model across k where one size was run for every k
    common = set.intersection(*({p.size for p in pts} for pts in by_k.values()))
    fits_ = [fit_k(k, pts, study.points, study.excluded, bootstrap, target_flops, holdout_budget, rng, common)
             for k, pts in sorted(by_k.items())]
    settings = {"target": target, "kind": study.kind, "metric": metric, "bootstrap": bootstrap,
                "confidence": CONFIDENCE, "target_flops": target_flops, "holdout_budget": holdout_budget,
                "seed": seed, "tracking_uri": tracking_uri}
    analysis = Analysis(study, fits_, compare_ks(fits_), settings)
    out = Path(out_dir or f"runs/scaling/{_safe(target)}")
    out.mkdir(parents=True, exist_ok=True)
    analysis.files = write_files(analysis, out)
    if log:
        analysis.run_id = log_analysis(analysis)
    return analysis


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _jsonable(value):
    if isinstance(value, Interval):
        return value.as_dict()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if k != "curve"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(a: Analysis) -> dict:
    s = a.study
    return _jsonable({
        "settings": a.settings, "experiment_id": s.experiment_id,
        "runs_used": [p.run_id for kf in a.fits for p in kf.points],
        "excluded": [{"run_id": e.run_id, "name": e.name, "reason": e.reason} for e in s.excluded],
        "entropy_rate": s.entropy_rate, "true_nll": s.true_nll,
        "fits": [{"k": kf.k, "numbers": kf.numbers, "minima": kf.minima, "leave_one_budget_out": kf.loo,
                  "holdout": kf.holdout, "curve": kf.curve, "failed_replicates": kf.failed_replicates,
                  "notes": kf.notes,
                  "points": [{"run_id": p.run_id, "name": p.name, "size": p.size, "budget": p.budget, "N": p.n,
                              "N_total": p.n_total, "D": p.d, "C": p.c, "C_with_embedding": p.c_with_embedding,
                              "loss": p.loss, "branch_of": p.parent_run_id, "horizon": p.horizon}
                             for p in kf.points]} for kf in a.fits],
        "crossovers": [c.as_dict() for c in a.crossovers]})


def write_files(a: Analysis, out: Path) -> dict[str, str]:
    files = {}
    (out / "fit.json").write_text(json.dumps(to_json(a), indent=2))
    (out / "fit.md").write_text(a.table())
    files["fit.json"], files["fit.md"] = str(out / "fit.json"), str(out / "fit.md")
    files.update(figures.write_figures(a.fits, a.study.metric, a.settings.get("target_flops"), out))
    return files


def metrics_of(a: Analysis) -> dict[str, float]:
    """Each fitted number and its interval ends, as ``k<k>/<name>[_lo|_hi]``."""
    out = {}
    for kf in a.fits:
        prefix = f"k{kf.k:g}"
        numbers = dict(kf.numbers)
        if kf.curve:
            numbers.update({f"curve/{key}": kf.curve[key] for key in ("E", "B", "beta")})
        for key, value in numbers.items():
            for suffix, x in (("", value.value), ("_lo", value.lo), ("_hi", value.hi)):
                if x is not None and math.isfinite(x):
                    out[f"{prefix}/{key}{suffix}"] = float(x)
    for c in a.crossovers:
        key = f"crossover/{c.axis}/k{c.k_a:g}_vs_k{c.k_b:g}"
        out[f"{key}/inside_data"] = float(c.inside)
        out[f"{key}/share_inside"] = c.share_inside
        if c.at is not None:
            for suffix, x in (("", c.at.value), ("_lo", c.at.lo), ("_hi", c.at.hi)):
                if x is not None and math.isfinite(x):
                    out[f"{key}/at{suffix}"] = float(x)
    if a.study.entropy_rate is not None:
        out["entropy_rate"] = a.study.entropy_rate
    if a.study.true_nll is not None:
        out["true_nll"] = a.study.true_nll
    return out


def log_analysis(a: Analysis) -> str:
    s = a.study
    client = make_client(s.tracking_uri)
    experiment = client.get_experiment(s.experiment_id).name
    used = [p.run_id for kf in a.fits for p in kf.points]
    ids = ",".join(used)
    if len(ids) > TAG_LIMIT:
        ids = ids[: TAG_LIMIT - 40].rsplit(",", 1)[0] + ",...(+more: scaling/fit.json)"
    tags = {"xdlm.kind": ANALYSIS_KIND, f"xdlm.scaling.{s.kind}": s.target, "xdlm.scaling.target": s.target,
            "xdlm.scaling.metric": s.metric, "xdlm.scaling.run_ids": ids, "xdlm.scaling.runs_used": str(len(used)),
            "xdlm.scaling.excluded": str(len(s.excluded)),
            "xdlm.scaling.verdicts": " | ".join(c.verdict() for c in a.crossovers)[:TAG_LIMIT]}
    run_id = start_run(s.tracking_uri, experiment, f"scaling-fit-{s.target}", tags)
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in metrics_of(a).items()]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    params = [Param(key, str(value)[:TAG_LIMIT]) for key, value in a.settings.items() if value is not None]
    for start in range(0, len(params), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=params[start:start + 100])
    for path in a.files.values():
        client.log_artifact(run_id, path, "scaling")
    client.set_terminated(run_id, "FINISHED")
    return run_id


__all__ = ["Analysis", "Exclusion", "run_analysis"]
