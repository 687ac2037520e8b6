"""From a sweep's ``space`` to Ray Tune domains, and from one trial's sampled values to its job.

Every key of the space is a dotted ``JobConfig`` key. A trial's job is the base job with the
sampled values set; the same function builds it in the trainable and in validation, so a value
that would make a trial fail (k = 2, a schedule parameter its schedule does not take) is found
before the sweep starts: every grid/choice value and both ends of every range are tried on the
base job, and the cartesian product of grid/choice values too while it is small.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xdlm.config import ConfigError, JobConfig, load_job, to_dict
from xdlm.tune.metrics import check_metric
from xdlm.tune.spec import PARAM_KINDS, ParamSpec, SweepSpec

# Resources are the sweep's, identical for all trials, so the concurrency rule holds.
FORBIDDEN_PREFIXES = ("cluster", "name", "tracking")
MAX_COMBINATIONS_CHECKED = 256


def _free_form(field: dataclasses.Field) -> bool:
    return "dict" in str(field.type).lower()


def check_key(key: str) -> None:
    """``key`` must name a JobConfig field (anything below a free-form dict such as
    ``diffusion.schedule_params`` is allowed) outside the sweep-owned sections."""
    parts = key.split(".")
    if parts[0] in FORBIDDEN_PREFIXES:
        raise ConfigError(
            f"space.{key}: '{parts[0]}' is set by the sweep, not searched (trial resources go in "
            "resources:, names and tracking are per sweep)"
        )
    node: Any = JobConfig
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            where = ".".join(parts[:depth]) or "the job"
            raise ConfigError(f"space.{key}: unknown config key '{part}' in {where}; allowed: {', '.join(fields)}")
        chosen = fields[part]
        if _free_form(chosen):
            return
        factory = chosen.default_factory
        default = factory() if factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if depth == len(parts) - 1:
            return
        if not dataclasses.is_dataclass(default):
            raise ConfigError(f"space.{key}: '{part}' is a value, it has no sub-key '{parts[depth + 1]}'")
        node = type(default)


def check_param(key: str, param: ParamSpec, algorithm: str) -> None:
    where = f"space.{key}"
    if param.kind not in PARAM_KINDS:
        raise ConfigError(f"{where}.kind: must be one of {', '.join(PARAM_KINDS)}, got {param.kind!r}")
    if param.kind in ("grid", "choice"):
        if not param.values:
            raise ConfigError(f"{where}.values: kind {param.kind} needs a non-empty list of values")
        if param.kind == "grid" and algorithm == "optuna":
            raise ConfigError(f"{where}.kind: grid is not supported by search.algorithm=optuna; use choice")
        return
    if param.values:
        raise ConfigError(f"{where}.values: only for grid/choice; kind {param.kind} takes low/high")
    if param.low is None or param.high is None or not param.low < param.high:
        raise ConfigError(f"{where}: kind {param.kind} needs low < high, got low={param.low}, high={param.high}")
    if "log" in param.kind and param.low <= 0:
        raise ConfigError(f"{where}.low: kind {param.kind} needs low > 0, got {param.low}")
    if param.kind.startswith("q") and (param.q is None or param.q <= 0):
        raise ConfigError(f"{where}.q: kind {param.kind} needs a step q > 0, got {param.q}")
    if not param.kind.startswith("q") and param.q is not None:
        raise ConfigError(f"{where}.q: only for quniform/qloguniform")


def tune_domain(param: ParamSpec):
    """The Ray Tune object for one key's space."""
    from ray import tune

    kind = param.kind
    if kind == "grid":
        return tune.grid_search(list(param.values))
    if kind == "choice":
        return tune.choice(list(param.values))
    if kind == "uniform":
        return tune.uniform(param.low, param.high)
    if kind == "loguniform":
        return tune.loguniform(param.low, param.high)
    if kind == "quniform":
        return tune.quniform(param.low, param.high, param.q)
    if kind == "qloguniform":
        return tune.qloguniform(param.low, param.high, param.q)
    if kind == "randint":
        return tune.randint(int(param.low), int(param.high))
    raise ConfigError(f"kind: must be one of {', '.join(PARAM_KINDS)}, got {kind!r}")


def param_space(spec: SweepSpec) -> dict[str, Any]:
    return {key: tune_domain(param) for key, param in spec.space.items()}


def base_job(spec: SweepSpec) -> JobConfig:
    """The base job with the sweep's resources and per-trial budgets applied (validated)."""
    r = spec.resources
    sweep_overrides = [f"cluster.{key}={value}" for key, value in
                       (("num_workers", r.num_workers), ("cpus_per_worker", r.cpus_per_worker),
                        ("use_gpu", r.use_gpu)) if value is not None]
    if spec.budget.trial_time_s is not None:
        sweep_overrides.append(f"train.max_time_s={spec.budget.trial_time_s}")
    try:
        job = load_job(spec.base.job, [*spec.base.overrides, *sweep_overrides])
        if spec.budget.trial_tokens is not None:
            job.train.steps = max(1, min(job.train.steps, spec.budget.trial_tokens // tokens_per_step(job)))
        return job.validate()
    except ConfigError as err:
        raise ConfigError(f"base job (base.job + base.overrides + the sweep's resources/budget): {err}") from None


def _coerce(value: Any, current: Any) -> Any:
    """Searchers hand out floats (quniform 128.0); an int field wants 128."""
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def apply_params(job_dict: dict[str, Any], params: dict[str, Any]) -> JobConfig:
    """The base job (as a dict) with each dotted key set to its sampled value, validated.

    A mapping value sets each of its sub-keys, replacing them whole: ``diffusion:
    {schedule: geometric, schedule_params: {sigma_max: 10}}`` leaves no stale ``eps`` behind.
    """
    merged = OmegaConf.merge(OmegaConf.structured(JobConfig), copy.deepcopy(job_dict))
    try:
        for key, value in params.items():
            assignments = ([(f"{key}.{sub}", v) for sub, v in value.items()]
                           if isinstance(value, dict) else [(key, value)])
            for dotted, item in assignments:
                current = OmegaConf.select(merged, dotted, default=None)
                OmegaConf.update(merged, dotted, _coerce(item, current), merge=False)
        job: JobConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise ConfigError(f"space: cannot set {shown}: {str(err).splitlines()[0]}") from None
    try:
        return job.validate()
    except ConfigError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise ConfigError(f"space: the trial with {shown} is invalid: {err}") from None


def candidate_values(param: ParamSpec) -> list[Any]:
    """Values that stand for the whole range in validation: all listed values, or both ends."""
    if param.kind in ("grid", "choice"):
        return list(param.values)
    low, high = param.low, param.high
    if param.kind == "randint":
        return [int(low), int(high) - 1]
    if param.kind.startswith("q"):
        low = math.ceil(low / param.q) * param.q
        high = math.floor(high / param.q) * param.q
    return [low, high]


def validate_space_against_job(spec: SweepSpec) -> JobConfig:
    """Every check that involves the base job: keys, values, the metric; returns the base job."""
    job = base_job(spec)
    for key, param in spec.space.items():
        check_key(key)
        check_param(key, param, spec.search.algorithm)
    base = to_dict(job)
    for key, param in spec.space.items():
        for value in candidate_values(param):
            apply_params(base, {key: value})
    listed = [(key, candidate_values(p)) for key, p in spec.space.items()]
    if len(listed) > 1 and math.prod(len(values) for _, values in listed) <= MAX_COMBINATIONS_CHECKED:
        for combination in itertools.product(*(values for _, values in listed)):
            apply_params(base, dict(zip([k for k, _ in listed], combination, strict=True)))
    check_metric(spec.metric, job, early_stopping=spec.scheduler.kind != "fifo")
    s = spec.scheduler
    if s.kind == "asha":
        horizon = scheduler_horizon(spec, job)
        grace = s.grace_period or scheduler_grace(spec, job)
        if grace >= horizon:
            raise ConfigError(f"scheduler.grace_period: {grace} must be below the trials' length {horizon} "
                              f"({s.time_attr}), or ASHA never compares trials")
    if s.kind == "pbt":
        check_pbt_against_job(spec, job)
    return job


def check_pbt_against_job(spec: SweepSpec, job: JobConfig) -> None:
    """PBT clones what a trial reported at an evaluation: each evaluation must carry a checkpoint,
    and the interval must fall inside the trials' length."""
    if job.train.eval_every % job.train.checkpoint_every:
        raise ConfigError(
            f"train.checkpoint_every: PBT clones the checkpoint reported with an evaluation, so "
            f"train.eval_every ({job.train.eval_every}) must be a multiple of train.checkpoint_every "
            f"({job.train.checkpoint_every}); e.g. base.overrides: [train.checkpoint_every={job.train.eval_every}]"
        )
    interval, horizon = pbt_interval(spec, job), scheduler_horizon(spec, job)
    if interval >= horizon:
        raise ConfigError(f"scheduler.perturbation_interval: {interval} must be below the trials' length {horizon} "
                          f"({spec.scheduler.time_attr}), or PBT never acts")


def pbt_interval(spec: SweepSpec, job: JobConfig) -> int:
    """PBT's perturbation interval: the spec's, else one evaluation."""
    if spec.scheduler.perturbation_interval is not None:
        return spec.scheduler.perturbation_interval
    return evaluation_interval(spec, job)


def pbt_mutations(spec: SweepSpec) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: listed values as a list (it steps to a neighbour), ranges
    as the Tune domain (it scales by 0.8/1.2 or resamples)."""
    return {key: list(spec.space[key].values) if spec.space[key].kind in ("grid", "choice")
            else tune_domain(spec.space[key]) for key in spec.scheduler.mutations}


def tokens_per_step(job: JobConfig) -> int:
    return job.train.global_batch * job.data.seq_len


def scheduler_horizon(spec: SweepSpec, job: JobConfig) -> int:
    """ASHA's max_t: the spec's, else the base job's length in time_attr units."""
    if spec.scheduler.max_t is not None:
        return spec.scheduler.max_t
    return job.train.steps * (tokens_per_step(job) if spec.scheduler.time_attr == "tokens" else 1)


def evaluation_interval(spec: SweepSpec, job: JobConfig) -> int:
    """train.eval_every in the scheduler's time_attr units (the metric is reported that often)."""
    return job.train.eval_every * (tokens_per_step(job) if spec.scheduler.time_attr == "tokens" else 1)


def scheduler_grace(spec: SweepSpec, job: JobConfig) -> int:
    """ASHA's first rung: the spec's, else the first evaluation (nothing is reported before it)."""
    if spec.scheduler.grace_period is not None:
        return spec.scheduler.grace_period
    return evaluation_interval(spec, job)


def trial_job(job_dict: dict[str, Any], params: dict[str, Any], name: str, storage_path: str,
              tracking_uri: str | None) -> JobConfig:
    """The job a trial trains: sampled values set, a deterministic name under the sweep."""
    job = apply_params(job_dict, params)
    job.name = name
    job.cluster.storage_path = storage_path
    job.tracking.tracking_uri = tracking_uri
    return job.validate()

