"""The job configuration: one typed dataclass tree, the single source of truth for every option.

YAML files in ``jobs/`` and ``sweeps/`` only override these defaults (OmegaConf structured
configs); dotted ``key=value`` overrides come last.  ``load_job`` validates everything before any
Ray resource is requested: an unknown key or a bad value raises ``ConfigError`` (a ``ValueError``)
naming the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xdlm.data.config import DataConfig
from xdlm.models.config import ModelConfig


class ConfigError(ValueError):
    """A job/sweep configuration that cannot run; the message names the field."""


@dataclass
class DiffusionConfig:
    """The XDLM process and its training objective."""

    k: float = 0.1
    """Mixing ratio in [0, 1]: 0 = MDLM (absorbing), 1 = UDLM (uniform); the paper's default 0.1."""
    schedule: str = "loglinear"
    """Noise schedule: loglinear, cosine, polynomial, geometric."""
    schedule_params: dict[str, float] = field(default_factory=dict)
    """Schedule parameters, e.g. {eps: 1e-3} or {w: 2.0} or {sigma_min: 1e-4, sigma_max: 20}."""
    t_min: float = 1e-3
    """Smallest training time; antithetic times are rescaled to [t_min, 1]."""
    loss_backend: str = "auto"
    """NELBO implementation: auto (triton on CUDA, chunked elsewhere), torch, chunked, triton."""


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 2500
    lr_schedule: str = "constant"
    """After warm-up: constant or cosine (decays to min_lr_ratio * lr at train.steps)."""
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    ema: float = 0.9999
    """EMA decay of the weights used for evaluation and sampling (0 disables)."""


@dataclass
class TrainConfig:
    steps: int = 1_000_000
    global_batch: int = 512
    """Sequences per optimizer step over all workers and accumulation steps."""
    micro_batch: int = 64
    """Sequences per worker per forward/backward; accumulation = global / (micro * workers)."""
    precision: str = "auto"
    """auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16."""
    compile: bool = False
    """torch.compile the model."""
    seed: int = 0
    log_every: int = 10
    eval_every: int = 1000
    eval_batches: int = 20
    """Validation batches (per worker) per evaluation."""
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    deepspeed: dict[str, Any] = field(default_factory=dict)
    """DeepSpeed config passthrough, e.g. {zero_optimization: {stage: 2}, bf16: {enabled: true}}; ZeRO-1/2.
    Batch sizes, accumulation and clipping are filled in from the job. Empty: DDP."""
    max_time_s: float | None = None
    """Stop (with a checkpoint) after this much wall time."""


@dataclass
class ClusterConfig:
    address: str | None = None
    """Ray cluster address; None: RAY_ADDRESS, else a local Ray started by the CLI."""
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = "runs"
    """Checkpoints and run records: a local path (relative to the working directory) or s3://..."""
    max_failures: int = 1
    """Restarts from the last checkpoint when a worker dies."""
    object_store_memory_mb: int = 512
    """Object store cap for a local Ray (the default would take a third of RAM)."""


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None
    """MLflow tracking URI; None: MLFLOW_TRACKING_URI, else sqlite under the storage path."""
    experiment: str = "xdlm"
    log_samples: int = 4
    """Sample texts logged as an artifact at each evaluation."""


@dataclass
class EvalConfig:
    sample_steps: list[int] = field(default_factory=lambda: [8, 32, 128])
    """Sampler steps for generation quality (generative PPL + unigram entropy)."""
    num_samples: int = 16
    sampler: str = "ancestral"
    top_p: float | None = None
    evaluator: str | None = None
    """Generative-PPL scorer: a run directory of a causal model (jobs/ar_evaluator.yaml), an HF
    causal LM name (needs a network), or None to skip generative PPL."""
    zero_shot: bool = True
    """Evaluate data.eval_sets at the end of training."""


@dataclass
class JobConfig:
    name: str = "xdlm"
    """Run name: checkpoints go to <storage_path>/<name>; resuming needs the same name."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- derived quantities ------------------------------------------------------------------
    @property
    def accum_steps(self) -> int:
        return self.train.global_batch // (self.train.micro_batch * self.cluster.num_workers)

    def run_dir(self) -> str:
        """Where Ray Train keeps this run (local path or s3:// URI)."""
        base = self.cluster.storage_path
        if "://" not in base:
            base = str(Path(base).expanduser().resolve())
        return f"{base.rstrip('/')}/{self.name}"

    def validate(self) -> JobConfig:
        from xdlm.train.validate import validate_job

        validate_job(self)
        return self


def _error_from_omegaconf(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0]
    if "Key '" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = _node_at(parent)
        allowed = ", ".join(f.name for f in dataclasses.fields(node)) if node else ""
        return ConfigError(f"{source}: unknown key '{key}'" + (f"; allowed keys here: {allowed}" if allowed else ""))
    return ConfigError(f"{source}: bad value for '{key}': {msg}")


def _node_at(dotted: str):
    node: Any = JobConfig
    for part in [p for p in dotted.split(".") if p]:
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None
        default = fields[part].default_factory() if fields[part].default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if not dataclasses.is_dataclass(default):
            return None
        node = type(default)
    return node


def apply_overrides(merged, overrides, make_error):
    """Merge dotted ``key=value`` overrides one at a time, so an error names the one at fault;
    ``make_error(omegaconf_error, source)`` turns OmegaConf's error into a ``ConfigError``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like dotted.key=value")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise make_error(err, f"override {item!r}") from None
    return merged


def load_job(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Defaults <- YAML file <- dotted overrides, then validation. Returns a ``JobConfig``."""
    schema = OmegaConf.structured(JobConfig)
    layers = [schema]
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"job file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # yaml syntax errors
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        merged = OmegaConf.merge(*layers)
    except OmegaConfBaseException as err:
        raise _error_from_omegaconf(err, str(path)) from None
    merged = apply_overrides(merged, overrides, _error_from_omegaconf)
    job: JobConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    return job.validate()


def to_yaml(job: JobConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(job))


def to_dict(job: JobConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(job), resolve=True)  # type: ignore[return-value]


def from_dict(data: dict[str, Any]) -> JobConfig:
    merged = OmegaConf.merge(OmegaConf.structured(JobConfig), data)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
