"""The sweep specification: one typed dataclass tree, like ``xdlm.config`` for jobs, and the
checks of its own fields.

A sweep file (``sweeps/*.yaml``) only overrides these defaults, and dotted ``key=value`` overrides
come last, through the loader jobs use (``xdlm.config.load_structured``), so a misspelled key is
an error instead of a silently ignored setting. ``load_spec`` checks what the spec alone can
tell; ``xdlm.tune.sweep.load_sweep`` adds the checks against the base job, the one validation a
sweep gets before it runs.

This module avoids ``from __future__ import annotations`` so OmegaConf can read field types.
"""

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from xdlm.config import ConfigError, dataclass_at, load_structured
from xdlm.eval import metric_names
from xdlm.tune.replicates import seed_keys_in_space

PARAM_KINDS = ("grid", "choice", "uniform", "loguniform", "quniform", "qloguniform", "randint")
"""How one key is searched: ``grid`` enumerates ``values``; ``choice`` samples one of them;
the others sample in ``[low, high]`` (``q``: rounded to a multiple of q; ``randint``: high excluded)."""
SEARCH_ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")
TIME_ATTRS = ("step", "tokens")
MODES = ("min", "max")


@dataclass
class BaseJobSpec:
    """The job every trial starts from: a job file (``jobs/*.yaml``) plus dotted overrides."""

    job: str | None = None
    """Job file; a relative path is looked up from the working directory, then next to the sweep
    file, then in the sweep file's parent directory (the repository root for ``sweeps/``)."""
    overrides: list[str] = field(default_factory=list)
    """``dotted.key=value`` applied to the job file, e.g. ``train.steps=200``."""


@dataclass
class ParamSpec:
    """The search space of one config key (the key is the entry's name in ``space``)."""

    kind: str = MISSING
    """One of grid, choice, uniform, loguniform, quniform, qloguniform, randint."""
    values: list[Any] | None = None
    """For grid/choice. A value that is a mapping sets several keys at once under the entry's
    key (e.g. key ``diffusion`` with ``{schedule: polynomial, schedule_params: {w: 2}}``); under
    the key ``job`` its keys are dotted job keys from any section, set together (e.g.
    ``{model.hidden: 64, train.steps: 900, tracking.tags: {xdlm.scaling.size: L2-D64}}``)."""
    low: float | None = None
    high: float | None = None
    q: float | None = None
    """Quantisation step for quniform/qloguniform."""


@dataclass
class SearchSpec:
    algorithm: str = "grid"
    """grid (Tune's variant generator: grids enumerated, other kinds sampled), random (the same
    generator; use it when the space has no grid) or optuna (TPE, Bayesian; no grid kinds)."""
    num_samples: int = 1
    """Samples drawn from the space; with grids, the whole grid is repeated this many times."""
    seed: int | None = 0
    """Seed of the searcher (random/optuna) so a sweep is reproducible; null: unseeded."""
    replicates: int = 1
    """Trials per configuration, each with its own seeds: replicate r sets train.seed and data.seed
    to the base job's + r (model init, noise, batch order). The report gives each configuration's
    mean and 95 % Student-t interval and says which differences are resolved. With more than 1,
    ranged keys are drawn once per sample and shared by every grid point and replicate; not with
    scheduler.kind=pbt, search.algorithm=optuna or a seed key in space."""


@dataclass
class SchedulerSpec:
    kind: str = "fifo"
    """fifo (every trial runs to the end), asha (stops weak trials at rungs) or pbt (Population
    Based Training: at every perturbation interval the bottom trials continue from a top trial's
    checkpoint with its ``mutations`` keys perturbed)."""
    time_attr: str = "step"
    """What ASHA's rungs and PBT's intervals count: step (optimizer steps) or tokens (use it when
    trials differ in batch size)."""
    grace_period: int | None = None
    """First rung, in time_attr units; default: the base job's train.eval_every (in steps or
    the tokens of that many steps)."""
    reduction_factor: float = 2.0
    """Keep the best 1/reduction_factor of trials at each rung."""
    max_t: int | None = None
    """Last rung; default: the base job's training length (steps or tokens)."""
    perturbation_interval: int | None = None
    """PBT: exploit/explore every this many time_attr units; default: train.eval_every."""
    mutations: list[str] = field(default_factory=lambda: ["optim.lr"])
    """PBT: the space keys it perturbs (x0.8 / x1.2, or a neighbouring listed value, or resampled).
    Only ``optim.*`` keys: a cloned checkpoint must still fit the model and the data."""
    quantile_fraction: float = 0.25
    """PBT: the bottom fraction of trials clone one of the top fraction."""
    resample_probability: float = 0.25
    """PBT: chance a mutated key is drawn afresh from its space instead of perturbed."""
    synch: bool = False
    """PBT: wait at each perturbation until every trial is there, then act on all (reproducible,
    slower: trials pause); false: act on each trial as it arrives."""


@dataclass
class ResourceSpec:
    """What one trial asks for; the same for every trial (so the concurrency rule holds)."""

    num_workers: int | None = None
    """Ray Train workers per trial; null: the base job's cluster.num_workers."""
    cpus_per_worker: float | None = None
    """null: the base job's cluster.cpus_per_worker. Fractions are fine on a small machine."""
    use_gpu: bool | None = None
    """null: the base job's cluster.use_gpu (one GPU per worker)."""
    trainable_cpus: float = 0.2
    """CPU share of the Tune function trainable that drives the trial's Ray Train run."""


@dataclass
class BudgetSpec:
    sweep_time_s: float | None = None
    """Stop the whole sweep (every running trial) after this many seconds."""
    trial_time_s: float | None = None
    """Per trial: stop training with a checkpoint after this many seconds (train.max_time_s);
    under PBT each segment gets the whole budget."""
    trial_tokens: int | None = None
    """Per trial: train at most this many tokens (caps train.steps)."""


@dataclass
class SweepSpec:
    name: str = MISSING
    """Sweep name: runs/sweeps/<name> holds its state; resuming needs the same name."""
    base: BaseJobSpec = field(default_factory=BaseJobSpec)
    space: dict[str, ParamSpec] = field(default_factory=dict)
    """Config key (dotted, e.g. diffusion.k, optim.lr, diffusion.schedule_params.w) -> its space."""
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    metric: str = metric_names.nelbo()
    """What the searcher and scheduler optimise; ASHA needs one reported during training."""
    mode: str = "min"
    max_concurrent_trials: int | None = None
    """Upper bound; the sweep runs at most as many trials as fit the cluster (docs/sweeps.md)."""
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    trial_max_failures: int = 1
    """A failed trial is retried (from its last checkpoint) up to this many times."""
    storage_path: str | None = None
    """Where sweeps live (<storage_path>/sweeps/<name>); null: the base job's cluster.storage_path."""


def _spec_node_at(dotted: str) -> type | None:
    """The section class at ``dotted``, for listing the keys allowed there. Below ``space`` the
    entries are named by config keys, which hold dots themselves: any ``space.<key>`` is a
    ``ParamSpec``, however many dots the key has."""
    parts = [p for p in dotted.split(".") if p]
    if parts[:1] == ["space"] and len(parts) >= 2:
        return ParamSpec
    return dataclass_at(SweepSpec, dotted)


def resolve_job_path(job: str, sweep_file: Path | None) -> Path:
    """The base job file: as given, next to the sweep file, or one directory up from it."""
    candidates = [Path(job).expanduser()]
    if sweep_file is not None and not Path(job).is_absolute():
        candidates += [sweep_file.parent / job, sweep_file.parent.parent / job]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"base.job: job file {job!r} not found (looked at {', '.join(map(str, candidates))})")


def load_spec(path: "str | os.PathLike | None" = None, overrides: "list[str] | tuple[str, ...]" = ()) -> SweepSpec:
    """Defaults <- sweep YAML <- dotted overrides (the loader jobs use too), then the checks of
    the spec's own fields. ``base.job`` comes back absolute.

    Checks against the base job are ``xdlm.tune.sweep.load_sweep``'s: use that to run a sweep.
    """
    spec: SweepSpec = load_structured(SweepSpec, path, overrides, what="sweep", node_at=_spec_node_at)
    if spec.base.job is not None:
        sweep_file = Path(path).resolve() if path is not None else None
        spec.base.job = str(resolve_job_path(spec.base.job, sweep_file))
    validate_spec_fields(spec)
    return spec


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """The spec as plain data (what ``sweep.json`` keeps for ``--resume`` and the report)."""
    return OmegaConf.to_container(OmegaConf.structured(spec), resolve=True)  # type: ignore[return-value]


def spec_from_dict(data: dict[str, Any]) -> SweepSpec:
    """Back from ``spec_to_dict``; no checks: the sweep was checked when it started."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweepSpec), data))  # type: ignore[return-value]


def spec_to_yaml(spec: SweepSpec) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(spec))


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


def validate_spec_fields(spec: SweepSpec) -> None:
    """Checks of the sweep's own fields (the space's keys and values are checked in space.py)."""
    _require(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec.name or "")), "name",
             f"must be letters, digits, '_', '.', '-' (a directory name), got {spec.name!r}")
    _require(spec.search.algorithm in SEARCH_ALGORITHMS, "search.algorithm",
             f"must be one of {', '.join(SEARCH_ALGORITHMS)}, got {spec.search.algorithm!r}")
    _require(spec.search.num_samples >= 1, "search.num_samples", f"must be >= 1, got {spec.search.num_samples}")
    validate_replicates(spec)
    _require(spec.scheduler.kind in SCHEDULERS, "scheduler.kind",
             f"must be one of {', '.join(SCHEDULERS)}, got {spec.scheduler.kind!r}")
    if spec.scheduler.kind == "pbt":
        validate_pbt_fields(spec)
    _require(spec.scheduler.time_attr in TIME_ATTRS, "scheduler.time_attr",
             f"must be one of {', '.join(TIME_ATTRS)}, got {spec.scheduler.time_attr!r}")
    _require(spec.scheduler.reduction_factor > 1, "scheduler.reduction_factor",
             f"must be > 1, got {spec.scheduler.reduction_factor}")
    for name in ("grace_period", "max_t"):
        value = getattr(spec.scheduler, name)
        _require(value is None or value >= 1, f"scheduler.{name}", f"must be >= 1 (or null), got {value}")
    _require(spec.mode in MODES, "mode", f"must be one of {', '.join(MODES)}, got {spec.mode!r}")
    _require(spec.max_concurrent_trials is None or spec.max_concurrent_trials >= 1, "max_concurrent_trials",
             f"must be >= 1 (or null: as many as fit), got {spec.max_concurrent_trials}")
    _require(spec.trial_max_failures >= 0, "trial_max_failures", f"must be >= 0, got {spec.trial_max_failures}")
    r = spec.resources
    _require(r.num_workers is None or r.num_workers >= 1, "resources.num_workers", f"must be >= 1, got {r.num_workers}")
    _require(r.cpus_per_worker is None or r.cpus_per_worker > 0, "resources.cpus_per_worker",
             f"must be > 0, got {r.cpus_per_worker}")
    _require(r.trainable_cpus > 0, "resources.trainable_cpus",
             f"must be > 0 (the trainable is a Ray actor and needs a CPU share), got {r.trainable_cpus}")
    b = spec.budget
    for name in ("sweep_time_s", "trial_time_s", "trial_tokens"):
        value = getattr(b, name)
        _require(value is None or value > 0, f"budget.{name}", f"must be > 0 (or null), got {value}")
    _require(bool(spec.space), "space",
             "is empty: give at least one config key to search, e.g. space: {diffusion.k: {kind: grid, values: [0, 1]}}")


def validate_replicates(spec: SweepSpec) -> None:
    """``search.replicates`` >= 1, and only where a configuration can be repeated as it is."""
    replicates = spec.search.replicates
    _require(replicates >= 1, "search.replicates", f"must be >= 1 (1: one trial per configuration), got {replicates}")
    if replicates == 1:
        return
    seeded = seed_keys_in_space(list(spec.space), {k: list(p.values or []) for k, p in spec.space.items()})
    _require(not seeded, "search.replicates",
             f"{replicates} replicates set train.seed and data.seed, but space.{seeded[0] if seeded else ''} sets a "
             "seed too; use one or the other (a seed grid in space is itself a way to get replicates)")
    _require(spec.scheduler.kind != "pbt", "search.replicates",
             "PBT makes trials clone each other's checkpoints and hyperparameters, so replicates of a "
             "configuration would not stay replicates of it; use replicates: 1 with scheduler.kind=pbt")
    _require(spec.search.algorithm != "optuna", "search.replicates",
             "optuna proposes a new configuration for every trial and cannot repeat one; use "
             "search.algorithm grid or random with replicates")
    only_grids = all(p.kind == "grid" for p in spec.space.values())
    _require(not (only_grids and spec.search.num_samples > 1), "search.num_samples",
             f"a space of grids only repeats the same trials (same seeds) num_samples={spec.search.num_samples} "
             f"times; with search.replicates={replicates} set num_samples: 1")


def validate_pbt_fields(spec: SweepSpec) -> None:
    s = spec.scheduler
    _require(spec.search.algorithm != "optuna", "search.algorithm",
             "optuna cannot be combined with scheduler.kind=pbt (PBT changes the configs the searcher "
             "proposed); use grid or random")
    _require(bool(s.mutations), "scheduler.mutations", "PBT needs at least one key to perturb, e.g. [optim.lr]")
    for key in s.mutations:
        _require(key.startswith("optim."), "scheduler.mutations",
                 f"{key!r} cannot change mid-run; PBT here perturbs optim.* keys (lr, weight_decay, grad_clip, ...)")
        _require(key in spec.space, "scheduler.mutations",
                 f"{key!r} is not in space (PBT perturbs within a key's space); space has: {', '.join(spec.space)}")
    _require(0 < s.quantile_fraction <= 0.5, "scheduler.quantile_fraction",
             f"must be in (0, 0.5], got {s.quantile_fraction}")
    _require(0 <= s.resample_probability <= 1, "scheduler.resample_probability",
             f"must be in [0, 1], got {s.resample_probability}")
    _require(s.perturbation_interval is None or s.perturbation_interval >= 1, "scheduler.perturbation_interval",
             f"must be >= 1 (or null), got {s.perturbation_interval}")
    population = population_size(spec)
    _require(population >= 2, "search.num_samples",
             f"PBT needs a population of at least 2 trials; the space and num_samples give {population}")


def population_size(spec: SweepSpec) -> int:
    """How many trials the sweep has: the grid's size times num_samples times replicates."""
    grids = [len(p.values or []) for p in spec.space.values() if p.kind == "grid"]
    return math.prod(grids) * spec.search.num_samples * spec.search.replicates
