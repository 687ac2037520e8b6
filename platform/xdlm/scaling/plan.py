"""``xdlm scaling plan``: an IsoFLOP sweep file for a list of budgets and k values.

Each grid point of the sweep is one (budget, size) candidate of the recipe
(``xdlm.scaling.recipe``), set in one ``job`` space entry (model shape, steps, batch, learning
rate, warm-up, evaluation cadence, tags ``xdlm.scaling.*``), crossed with a ``diffusion.k`` grid
and ``search.replicates`` seeds.  The file is checked as ``xdlm sweep`` would check it before it
is written, so a plan that is written runs.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from xdlm.config import load_job, to_dict
from xdlm.errors import UserError
from xdlm.eval import metric_names
from xdlm.scaling.recipe import Candidate, Rules, candidates, check_inputs

TAG_BUDGET = "xdlm.scaling.budget"
TAG_SIZE = "xdlm.scaling.size"
TAG_PARAMS = "xdlm.scaling.non_embedding_params"
TAG_FLOPS = "xdlm.scaling.planned_flops"
EVALS_PER_TRIAL = 4
"""Validation points per trial: the final one for the IsoFLOP fit, the others for L(D) curves."""


@dataclass
class Plan:
    name: str
    spec: dict[str, Any]
    kept: list[Candidate]
    dropped: list[Candidate]
    budgets: list[float]
    ks: list[float]
    replicates: int
    header: list[str] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return len(self.kept) * len(self.ks) * self.replicates

    def table(self) -> str:
        lines = [f"{'budget':>9} {'size':>10} {'N(non-emb)':>11} {'params':>11} {'steps':>7} {'batch':>6} "
                 f"{'tokens':>10} {'FLOPs':>10} {'err':>6} {'lr':>8} {'memory':>9}  note"]
        for c in sorted(self.kept + self.dropped, key=lambda c: (c.budget, c.non_embedding)):
            note = f"dropped: {c.dropped}" if c.dropped else ""
            lines.append(f"{c.budget:9.3g} {c.label:>10} {c.non_embedding:11,d} {c.params:11,d} {c.steps:7d} "
                         f"{c.global_batch:6d} {c.tokens:10.3g} {c.flops:10.3g} {c.flops / c.budget - 1:+6.1%} "
                         f"{c.lr:8.2g} {_gib(c.memory['total']):>9}  {note}")
        return "\n".join(lines)

    def yaml_text(self) -> str:
        comments = "".join(f"# {line}\n" if line else "#\n" for line in self.header)
        return comments + yaml.dump(self.spec, Dumper=_Dumper, sort_keys=False, width=200, default_flow_style=None)


class _Dumper(yaml.SafeDumper):
    """Quotes a string that reads as a number (a tag such as ``3e+11``): OmegaConf would read it
    back as a float, and a tag as ``300000000000.0``."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    try:
        float(value)
        style = "'"
    except ValueError:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB" if value >= 2**28 else f"{value / 2**20:.0f} MiB"


def point(c: Candidate, base_tags: dict[str, str]) -> dict[str, Any]:
    """The ``job`` space value of one candidate: every key it sets, with its tags."""
    n_layers, hidden, n_heads = c.model.dims()
    every = max(1, c.steps // EVALS_PER_TRIAL)
    return {
        "model.size": "custom", "model.n_layers": n_layers, "model.hidden": hidden, "model.n_heads": n_heads,
        "train.steps": c.steps, "train.global_batch": c.global_batch, "train.eval_every": every,
        "train.log_every": max(1, min(every, c.steps // 20)), "train.checkpoint_every": c.steps,
        "optim.lr": float(f"{c.lr:.4g}"), "optim.warmup_steps": c.warmup_steps,
        "tracking.tags": {**base_tags, TAG_BUDGET: f"{c.budget:g}", TAG_SIZE: c.label,
                          TAG_PARAMS: str(c.non_embedding), TAG_FLOPS: f"{c.flops:.6g}"},
    }


def make_plan(base: str, budgets: list[float], sizes: int, ks: list[float], *, name: str, replicates: int = 1,
              overrides: list[str] | tuple[str, ...] = (), workers: int | None = None,
              cpus_per_worker: float | None = None, use_gpu: bool | None = None, trainable_cpus: float = 0.2,
              **rule_overrides: Any) -> Plan:
    """The sweep of an IsoFLOP study (module docstring); ``UserError`` naming the flag at fault."""
    check_inputs(budgets, sizes, ks)
    if replicates < 1:
        raise UserError(f"--replicates: must be >= 1, got {replicates}")
    job = load_job(base, overrides)
    workers = workers or job.cluster.num_workers
    rules = Rules.from_job(job, budgets, **rule_overrides)
    for flag, value, low in (("--aspect", rules.aspect, 0), ("--head-dim", rules.head_dim, 0),
                             ("--tokens-per-param", rules.tokens_per_param, 0), ("--memory-gib", rules.memory_gib, 0),
                             ("--depth-step", rules.depth_step, 0.5), ("--min-steps", rules.min_steps, 0.5)):
        if not value > low:
            raise UserError(f"{flag}: must be {'>= 1' if low else '> 0'}, got {value}")
    kept, dropped = [], []
    for budget in sorted(budgets):
        found = candidates(job, budget, sizes, rules, workers)
        usable = [c for c in found if not c.dropped]
        if not usable:
            reasons = "; ".join(f"{c.label}: {c.dropped}" for c in found)
            raise UserError(f"--budgets: budget {budget:g} FLOPs fits no size ({reasons})")
        kept += usable
        dropped += [c for c in found if c.dropped]
    base_tags = {k: str(v) for k, v in to_dict(job)["tracking"]["tags"].items()}
    spec: dict[str, Any] = {
        "name": name,
        "base": {"job": base, "overrides": list(overrides)},
        "space": {
            "diffusion.k": {"kind": "grid", "values": [float(k) for k in ks]},
            "job": {"kind": "grid", "values": [point(c, base_tags) for c in kept]},
        },
        "search": {"algorithm": "grid", "replicates": replicates},
        "scheduler": {"kind": "fifo"},
        "metric": metric_names.nelbo(),
        "mode": "min",
    }
    resources = {key: value for key, value in (("num_workers", workers), ("cpus_per_worker", cpus_per_worker),
                                               ("use_gpu", use_gpu)) if value is not None}
    spec["resources"] = {**resources, "trainable_cpus": trainable_cpus}
    return Plan(name, spec, kept, dropped, sorted(budgets), list(ks), replicates)


def check_plan(plan: Plan, out: str) -> None:
    """Load the plan as ``xdlm sweep`` would (``xdlm.tune.sweep.load_sweep``), from where it is
    written (relative paths resolve from there), without running it."""
    from xdlm.tune.sweep import load_sweep

    directory = os.path.dirname(os.path.abspath(out))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=directory, delete=False) as f:
        f.write(plan.yaml_text())
    try:
        load_sweep(f.name)
    finally:
        os.unlink(f.name)


def describe(plan: Plan, command: str, minutes: str | None = None) -> list[str]:
    """The header comment of the sweep file: what it is, how it was made, how long it takes."""
    sizes = sorted({c.label for c in plan.kept}, key=lambda s: [int(x) for x in s[1:].split("-D")])
    lines = [
        f"IsoFLOP grid '{plan.name}': {len(plan.budgets)} budgets x sizes around N*(C) x "
        f"{len(plan.ks)} values of k x {plan.replicates} replicate(s) = {plan.trials} trials",
        f"budgets (FLOPs, flops_per_token x tokens): {', '.join(f'{b:g}' for b in plan.budgets)}; "
        f"k: {', '.join(f'{k:g}' for k in plan.ks)}; sizes: {', '.join(sizes)}",
        "each trial is tagged xdlm.scaling.budget / .size / .non_embedding_params / .planned_flops (and xdlm.k)",
        "recipe and rules: docs/scaling-training.md. Generated by:",
        f"  {command}",
    ]
    if minutes:
        lines.append(minutes)
    lines += ["run:  xdlm sweep <this file>      fit:  xdlm scaling fit <sweep name>", ""]
    if plan.dropped:
        lines.append("dropped candidates:")
        lines += [f"  {c.budget:g} {c.label}: {c.dropped}" for c in plan.dropped]
    return lines


def total_flops(plan: Plan) -> float:
    return math.fsum(c.flops for c in plan.kept) * len(plan.ks) * plan.replicates
