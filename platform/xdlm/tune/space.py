"""The search space: its keys and kinds, its Ray Tune domains, and one trial's job from its values.

Every key of the space is a dotted ``JobConfig`` key. A trial's job is the base job with the
sampled values set (``apply_params``); the trainable builds it with the same function that
``xdlm.tune.sweep`` tries the ``candidate_values`` with, so a value that would make a trial fail
(k = 2, a schedule parameter its schedule does not take) is found before the sweep starts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xdlm.config import ConfigError, JobConfig
from xdlm.tune.replicates import (
    REPLICATE_KEY,
    SEED_KEYS,
    replicate_index,
    searched_values,
    seeds_for,
)
from xdlm.tune.spec import PARAM_KINDS, ParamSpec, SweepSpec

# Resources are the sweep's, identical for all trials, so the concurrency rule holds.
FORBIDDEN_PREFIXES = ("cluster", "name", "tracking")
ALLOWED_BELOW_FORBIDDEN = ("tracking.tags",)
"""Labels, not resources or names: a study tags each grid point (e.g. its IsoFLOP budget)."""
ROOT_KEY = "job"
"""The space entry whose values are mappings of dotted job keys set together, across sections
(one point of a joint grid: a model shape with its step count, batch and tags)."""


def _free_form(field: dataclasses.Field) -> bool:
    return "dict" in str(field.type).lower()


def check_key(key: str) -> None:
    """``key`` must name a JobConfig field (anything below a free-form dict such as
    ``diffusion.schedule_params`` is allowed) outside the sweep-owned sections."""
    parts = key.split(".")
    if key == ROOT_KEY:
        return
    if parts[0] in FORBIDDEN_PREFIXES and not any(key == a or key.startswith(f"{a}.") for a in ALLOWED_BELOW_FORBIDDEN):
        raise ConfigError(
            f"space.{key}: '{parts[0]}' is set by the sweep, not searched (trial resources go in "
            f"resources:, names and tracking are per sweep; {', '.join(ALLOWED_BELOW_FORBIDDEN)} may be searched)"
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
    """The Tune param space: each key's domain, plus a grid over the replicate index (last, so
    Tune enumerates every configuration once before the next replicate of any)."""
    from ray import tune

    space = {key: tune_domain(param) for key, param in spec.space.items()}
    if spec.search.replicates > 1:
        space[REPLICATE_KEY] = tune.grid_search(list(range(spec.search.replicates)))
    return space


def shares_draws(spec: SweepSpec) -> bool:
    """Whether ranged keys must be drawn once per sample and held over the grid (Tune's
    ``constant_grid_search``): with replicates (from ``search.replicates`` or a seed key in the
    space), so that the replicates of a configuration have the same values."""
    return spec.search.replicates > 1 or any(key in SEED_KEYS for key in spec.space)


def _coerce(value: Any, current: Any) -> Any:
    """Searchers hand out floats (quniform 128.0); an int field wants 128."""
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def apply_params(job_dict: dict[str, Any], params: dict[str, Any]) -> JobConfig:
    """The base job (as a dict) with each dotted key set to its sampled value, validated.

    A mapping value sets each of its sub-keys, replacing them whole: ``diffusion:
    {schedule: geometric, schedule_params: {sigma_max: 10}}`` leaves no stale ``eps`` behind.
    Under ``ROOT_KEY`` the sub-keys are dotted job keys (``{model.hidden: 64, train.steps: 900}``).
    """
    merged = OmegaConf.merge(OmegaConf.structured(JobConfig), copy.deepcopy(job_dict))
    try:
        for key, value in params.items():
            if key == ROOT_KEY:
                assignments = _root_assignments(value)
            else:
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


def _root_assignments(value: Any) -> list[tuple[str, Any]]:
    """(dotted key, value) of one ``ROOT_KEY`` point, each key checked like a space key."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"space.{ROOT_KEY}: each value must be a non-empty mapping of dotted job keys, "
                          f"e.g. {{model.hidden: 64, train.steps: 900}}; got {value!r}")
    for dotted in value:
        check_key(str(dotted))
        if dotted in SEED_KEYS or dotted == ROOT_KEY:
            raise ConfigError(f"space.{ROOT_KEY}: {dotted} cannot be set in a point (use search.replicates, or a "
                              f"{dotted} grid of its own)")
    return [(str(dotted), v) for dotted, v in value.items()]


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


def trial_job(job_dict: dict[str, Any], config: dict[str, Any], name: str, storage_path: str,
              tracking_uri: str | None) -> JobConfig:
    """The job a trial trains: the Tune ``config``'s searched values set, the seeds of its
    replicate (``xdlm.tune.replicates``), a deterministic name under the sweep."""
    job = apply_params(job_dict, searched_values(config))
    replicate = replicate_index(config)
    if replicate:
        seeds = seeds_for(job.train.seed, job.data.seed, replicate)
        job.train.seed, job.data.seed = seeds["train.seed"], seeds["data.seed"]
    job.name = name
    job.cluster.storage_path = storage_path
    job.tracking.tracking_uri = tracking_uri
    return job.validate()

