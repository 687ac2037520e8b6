"""``xdlm oracle``: what the exact denoiser of a Markov source achieves for each k, with no training.

Per k (default 0, 0.1, 0.5, 1):
- understanding: the oracle's NELBO per token on the held-out validation sequences, estimated
  through the training objective (antithetic times, the schedule, ``XDLM.nelbo``), against the
  exact NLL per token of the same sequences (the gap is ~0 up to Monte Carlo error and the end
  terms: docs/synthetic.md);
- generation: samples from the oracle with S steps (default 1, 2, ..., 128), scored exactly under
  the source: NLL per token against the held-out data's, and pooled unigram / bigram entropies
  against the source's (a sampler that collapses onto likely sequences shows a low NLL *and* a
  low entropy).

Output: a text table, ``oracle.json``, ``oracle.png`` (matplotlib) and ``oracle.html`` (plotly),
and one MLflow run holding the job's parameters, every number (``metric_names.with_k``) and the files.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xdlm.config import JobConfig, to_dict
from xdlm.data.build import build_datasets
from xdlm.data.config import SYNTHETIC_SOURCES
from xdlm.errors import UserError
from xdlm.eval import metric_names
from xdlm.eval.generation import generate
from xdlm.eval.synthetic import (
    estimate,
    nelbo_per_sequence,
    sample_scores,
    validation_nll_per_token,
)
from xdlm.objective import build_oracle, build_process, make_objective
from xdlm.synthetic.markov import empirical_entropy, entropy
from xdlm.synthetic.tightness import nelbo_interval
from xdlm.tracking.flatten import flatten_params
from xdlm.tracking.runs import make_client, start_run

DEFAULT_KS = (0.0, 0.1, 0.5, 1.0)
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class OracleStudy:
    """The study's numbers: ``rows`` (one per k) and the source's references."""

    reference: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0

    def table(self) -> str:
        """Markdown table: per k, NELBO / gap (± standard error) and the true NLL per token at each S."""
        head = ("| k | NELBO/token | ± s.e. | gap | end terms | "
                + " | ".join(f"NLL S={s}" for s in self.steps) + " |")
        lines = [head, "|" + "---|" * (5 + len(self.steps))]
        for row in self.rows:
            nll = " | ".join(f"{row['true_nll'][str(s)]:.3f}" for s in self.steps)
            lines.append(f"| {row['k']:g} | {row['nelbo']:.4f} | {row['nelbo_stderr']:.4f} | "
                         f"{row['nelbo_gap']:+.4f} | [{row['end_term_interval'][0]:+.3f}, "
                         f"{row['end_term_interval'][1]:+.3f}] | {nll} |")
        ref = self.reference
        lines += ["", f"held-out NLL/token {ref['true_nll']:.4f} (entropy rate {ref['entropy_rate']:.4f}); "
                  f"unigram entropy {ref['unigram_entropy']:.3f}, bigram entropy {ref['bigram_entropy']:.3f} "
                  "(held-out data; samples' values in oracle.json). gap = NELBO - exact NLL of the same "
                  "sequences; end terms: the interval the derived t_min / alpha(1) terms allow it (docs/synthetic.md)"]
        return "\n".join(lines) + "\n"


def run_oracle_study(job: JobConfig, ks: list[float] | None = None, steps: list[int] | None = None,
                     num_samples: int = 128, nelbo_repeats: int = 16, out_dir: str | Path = "runs/oracle",
                     tracking_uri: str | None = None) -> OracleStudy:
    """Run the study for ``job`` (its data must be a known source); ``nelbo_repeats`` passes over
    the validation set with fresh times and noise; ``tracking_uri`` None: no MLflow run."""
    ks = list(DEFAULT_KS if ks is None else ks)
    steps = sorted(set(DEFAULT_STEPS if steps is None else steps))
    if not ks or any(not 0.0 <= k <= 1.0 for k in ks):
        raise UserError(f"--k: give values in [0, 1], got {ks}")
    if not steps or steps[0] < 1:
        raise UserError(f"--steps: give step counts >= 1, got {steps}")
    if num_samples < 1 or nelbo_repeats < 1:
        raise UserError(f"--num-samples and --repeats must be >= 1, got {num_samples} and {nelbo_repeats}")
    if job.data.source not in SYNTHETIC_SOURCES:
        raise UserError(f"data.source: the oracle study needs a source with a known law "
                        f"({', '.join(SYNTHETIC_SOURCES)}), got {job.data.source!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra intra-op threads only add contention (30x here)
    try:
        return _run(job, ks, steps, num_samples, nelbo_repeats, Path(out_dir), tracking_uri)
    finally:
        torch.set_num_threads(threads)


def _run(job: JobConfig, ks: list[float], steps: list[int], num_samples: int, nelbo_repeats: int,
         out_dir: Path, tracking_uri: str | None) -> OracleStudy:
    started = time.perf_counter()
    data = build_datasets(job.data)
    chain = data.exact_law
    if chain is None:
        raise UserError(f"data.source: the oracle study needs a source with a known law (markov), got "
                        f"{job.data.source!r}")
    seq_len = job.data.seq_len
    batches = list(data.eval_batches(min(job.train.micro_batch, 128)))
    held = torch.cat(batches)
    reference = {"true_nll": validation_nll_per_token(chain, batches), "entropy_rate": chain.entropy_rate(),
                 "block_entropy_per_token": chain.block_entropy(seq_len) / seq_len,
                 "unigram_entropy": empirical_entropy(held, chain.num_symbols, 1),
                 "bigram_entropy": empirical_entropy(held, chain.num_symbols, 2)}
    study = OracleStudy(reference, steps=steps)
    for k in ks:
        job_k = copy.deepcopy(job)
        job_k.diffusion.k = float(k)
        process = build_process(job_k, data.tokenizer.vocab_size, data.tokenizer.mask_id)
        objective = make_objective(job_k, process)
        oracle = build_oracle(data, process)
        per_seq = nelbo_per_sequence(objective, oracle, batches * nelbo_repeats, job.diffusion.t_min, seed=1234)
        nelbo = estimate(per_seq / seq_len)
        alpha = process.schedule.alpha
        lo, hi = nelbo_interval(chain.block_entropy(seq_len), seq_len, entropy(chain.unigram()), float(k),
                                float(alpha(torch.tensor(job.diffusion.t_min, dtype=torch.float64))),
                                float(alpha(torch.tensor(1.0, dtype=torch.float64))), job.diffusion.t_min)
        block = chain.block_entropy(seq_len)
        row: dict[str, Any] = {"k": float(k), "nelbo": nelbo.mean, "nelbo_stderr": nelbo.stderr,
                               "nelbo_gap": nelbo.mean - reference["true_nll"],
                               "end_term_interval": [(lo - block) / seq_len, (hi - block) / seq_len],
                               "true_nll": {}, "unigram_entropy": {}, "bigram_entropy": {}}
        for s in steps:
            tokens = generate(oracle, process.xdlm, process.schedule, num_samples, seq_len, s,
                              job.eval.sampler, job.eval.top_p, seed=s, batch_size=num_samples)
            for key, value in sample_scores(chain, tokens).items():
                row[key][str(s)] = value
        study.rows.append(row)
    study.seconds = time.perf_counter() - started
    write_outputs(study, out_dir, chain.describe())
    if tracking_uri is not None:
        study.run_id = log_study(study, job, tracking_uri)
    return study


def write_outputs(study: OracleStudy, out_dir: Path, source: dict[str, Any]) -> None:
    """oracle.json, oracle.md, oracle.png and oracle.html under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "oracle.json", "table": out_dir / "oracle.md",
             "png": out_dir / "oracle.png", "html": out_dir / "oracle.html"}
    files["json"].write_text(json.dumps({"source": source, "reference": study.reference, "steps": study.steps,
                                         "rows": study.rows, "seconds": study.seconds}, indent=2))
    files["table"].write_text(study.table())
    plot_png(study, files["png"])
    plot_html(study, files["html"])
    study.files = {name: str(path) for name, path in files.items()}


def plot_png(study: OracleStudy, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(14, 4))
    ks = [r["k"] for r in study.rows]
    left.errorbar([str(k) for k in ks], [r["nelbo_gap"] for r in study.rows],
                  yerr=[2 * r["nelbo_stderr"] for r in study.rows], fmt="o", capsize=4)
    left.axhline(0.0, color="grey", lw=0.8)
    left.set(title="oracle NELBO - exact NLL (±2 s.e.)", xlabel="k", ylabel="nats / token")
    for row in study.rows:
        mid.plot(study.steps, [row["true_nll"][str(s)] for s in study.steps], marker="o", label=f"k={row['k']:g}")
        right.plot(study.steps, [row["bigram_entropy"][str(s)] for s in study.steps], marker="o",
                   label=f"k={row['k']:g}")
    mid.axhline(study.reference["true_nll"], color="black", ls="--", lw=1, label="held-out data")
    right.axhline(study.reference["bigram_entropy"], color="black", ls="--", lw=1, label="held-out data")
    mid.set(title="true NLL of oracle samples", xlabel="sampler steps S", ylabel="nats / token", xscale="log")
    right.set(title="bigram entropy of oracle samples", xlabel="sampler steps S", ylabel="nats", xscale="log")
    mid.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_html(study: OracleStudy, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "oracle NELBO - exact NLL (nats/token, ±2 s.e.)", "true NLL of oracle samples", "bigram entropy of samples"))
    fig.add_trace(go.Scatter(x=[r["k"] for r in study.rows], y=[r["nelbo_gap"] for r in study.rows], mode="markers",
                             error_y={"array": [2 * r["nelbo_stderr"] for r in study.rows]}, name="NELBO gap"), 1, 1)
    for row in study.rows:
        for col, key in ((2, "true_nll"), (3, "bigram_entropy")):
            fig.add_trace(go.Scatter(x=study.steps, y=[row[key][str(s)] for s in study.steps], mode="lines+markers",
                                     name=f"{key} k={row['k']:g}", legendgroup=f"k={row['k']:g}"), 1, col)
    for col, key in ((2, "true_nll"), (3, "bigram_entropy")):
        fig.add_hline(y=study.reference[key], line_dash="dash", row=1, col=col)
        fig.update_xaxes(type="log", title_text="sampler steps S", row=1, col=col)
    fig.update_xaxes(title_text="k", row=1, col=1)
    fig.write_html(path, include_plotlyjs=True)  # inline: the page must open offline


def study_metrics(study: OracleStudy) -> dict[str, float]:
    """Every number of the study under its metric name (``/k<k>`` for per-k values)."""
    ref = study.reference
    metrics = {metric_names.TRUE_NLL: ref["true_nll"], metric_names.ENTROPY_RATE: ref["entropy_rate"],
               metric_names.source_entropy("unigram"): ref["unigram_entropy"],
               metric_names.source_entropy("bigram"): ref["bigram_entropy"]}
    for row in study.rows:
        k = row["k"]
        metrics[metric_names.with_k(metric_names.nelbo_gap(oracle=True), k)] = row["nelbo_gap"]
        metrics[metric_names.with_k(metric_names.nelbo() + metric_names.ORACLE_SUFFIX, k)] = row["nelbo"]
        for s in study.steps:
            metrics[metric_names.with_k(metric_names.true_nll(s, oracle=True), k)] = row["true_nll"][str(s)]
            for kind in ("unigram", "bigram"):
                metrics[metric_names.with_k(metric_names.pooled_entropy(kind, s, oracle=True), k)] = \
                    row[f"{kind}_entropy"][str(s)]
    return metrics


def log_study(study: OracleStudy, job: JobConfig, tracking_uri: str) -> str:
    """One MLflow run (``oracle-<job name>``) with the job's parameters, the metrics and the files."""
    from mlflow.entities import Metric, Param

    client = make_client(tracking_uri)
    run_id = start_run(tracking_uri, job.tracking.experiment, f"oracle-{job.name}",
                       {"xdlm.kind": "oracle_study", "xdlm.dataset": job.data.source,
                        "xdlm.schedule": job.diffusion.schedule})
    params = flatten_params(to_dict(job))
    params["oracle.ks"] = ",".join(f"{r['k']:g}" for r in study.rows)
    params["oracle.steps"] = ",".join(str(s) for s in study.steps)
    items = sorted(params.items())
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + 100]])
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in study_metrics(study).items()]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start:start + 500])
    for path in study.files.values():
        client.log_artifact(run_id, path, "oracle")
    client.set_terminated(run_id, "FINISHED")
    return run_id
