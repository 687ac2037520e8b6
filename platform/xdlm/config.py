"""The job configuration: one typed dataclass tree, the single source of truth for every option.

YAML files in ``jobs/`` and ``sweeps/`` only override these defaults (OmegaConf structured
configs); dotted ``key=value`` overrides come last.  Every section validates itself
(``section.validate()``); ``JobConfig.validate`` runs them all plus the checks that span sections.
``load_job`` runs it before any Ray resource is requested: an unknown key or a bad value raises
``ConfigError`` (a ``ValueError``) naming the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xdlm.data.config import DataConfig
from xdlm.diffusion import sampling, schedules
from xdlm.diffusion.kernels.dispatch import BACKENDS as LOSS_BACKENDS
from xdlm.errors import UserError
from xdlm.models.config import ModelConfig
from xdlm.models.registry import backbone_info

PRECISIONS = ("auto", "fp32", "bf16")
ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_DEVICES = ("none", "cpu")
NONFINITE_POLICIES = ("skip", "stop")
LR_SCHEDULES = ("constant", "cosine", "wsd")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ConfigError(UserError):
    """A job/sweep configuration that cannot run; the message names the field."""


def require(ok: bool, field_name: str, message: str) -> None:
    """Raise ``ConfigError("<field>: <message>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


def _section(validate: Callable[[], Any], section: str) -> None:
    """Run a section's own ``validate`` and prefix its plain ``ValueError`` with the section."""
    try:
        validate()
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{section}: {err}") from None


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

    def validate(self) -> DiffusionConfig:
        require(0.0 <= self.k <= 1.0, "diffusion.k", f"must be in [0, 1] (0 = MDLM, 1 = UDLM), got {self.k}")
        require(self.schedule in schedules.available(), "diffusion.schedule",
                f"unknown {self.schedule!r}; available: {', '.join(schedules.available())}")
        _section(lambda: schedules.get(self.schedule, **self.schedule_params), "diffusion.schedule_params")
        require(0.0 < self.t_min < 1.0, "diffusion.t_min", f"must be in (0, 1), got {self.t_min}")
        require(self.loss_backend in LOSS_BACKENDS, "diffusion.loss_backend",
                f"must be one of {', '.join(LOSS_BACKENDS)}, got {self.loss_backend!r}")
        return self


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 2500
    lr_schedule: str = "constant"
    """After warm-up: constant, cosine (decays to min_lr_ratio * lr at train.steps) or wsd
    (warm-up, stable, decay: constant until the last decay_fraction of train.steps, then down to
    min_lr_ratio * lr along decay_shape; ``xdlm.train.optim.lr_multiplier`` has the formula)."""
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2
    """wsd: the fraction of train.steps spent decaying, at the end. Also where a decay branch of a
    run starts (``xdlm scaling branches``, docs/scaling-training.md)."""
    decay_shape: str = "linear"
    """wsd: the decay's shape in its progress p from 0 to 1: linear (1 - p), cosine
    ((1 + cos(pi p)) / 2) or 1-sqrt (1 - sqrt(p))."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    ema: float = 0.9999
    """EMA decay of the weights used for evaluation and sampling (0 disables)."""

    def validate(self) -> OptimConfig:
        require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
                f"must be two numbers in [0, 1), got {list(self.betas)}")
        require(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(self.lr_schedule in LR_SCHEDULES, "optim.lr_schedule",
                f"must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        require(0 <= self.decay_fraction <= 1, "optim.decay_fraction",
                f"must be in [0, 1] (the fraction of train.steps spent decaying), got {self.decay_fraction}")
        require(self.decay_shape in DECAY_SHAPES, "optim.decay_shape",
                f"must be one of {', '.join(DECAY_SHAPES)}, got {self.decay_shape!r}")
        require(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 disables), got {self.grad_clip}")
        require(0 <= self.ema < 1, "optim.ema", f"must be in [0, 1) (0 disables), got {self.ema}")
        return self

    def decay_start(self, total_steps: int) -> int:
        """The step where a wsd decay over the last ``decay_fraction`` of ``total_steps`` begins:
        ``total_steps - round(decay_fraction * total_steps)``. A decay branch of horizon h starts
        from its parent's checkpoint at ``decay_start(round(h * parent steps))``."""
        return total_steps - round(self.decay_fraction * total_steps)

    def branch_starts(self, total_steps: int, horizons: list[float]) -> set[int]:
        """The steps of a run of ``total_steps`` where the decay branches of ``horizons``
        (fractions of ``total_steps``) start: the checkpoints it writes and keeps for them."""
        return {self.decay_start(round(h * total_steps)) for h in horizons}


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
    """Seeds the model's initialisation and the noise (times, z_t) of every step; the data order
    has its own seed, ``data.seed``."""
    log_every: int = 10
    eval_every: int = 1000
    """Steps between evaluations (validation NELBO/PPL, tracking.log_samples samples); one more
    at the last step. Evaluation uses the EMA weights and its own seeds: it never changes what
    is trained."""
    eval_batches: int = 20
    """Validation batches (per worker) per evaluation."""
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    branch_horizons: list[float] = field(default_factory=list)
    """Horizons (fractions of train.steps in (0, 1]) that decay branches may later be started for
    (``xdlm scaling branches``): the run writes a checkpoint at each branch's start step,
    ``optim.decay_start(round(h * train.steps))``, and never prunes it."""
    deepspeed: dict[str, Any] = field(default_factory=dict)
    """DeepSpeed config passthrough, e.g. {zero_optimization: {stage: 2}, bf16: {enabled: true}}:
    ZeRO stage 0-3, offload_optimizer / offload_param {device: none | cpu}. Batch sizes,
    accumulation and clipping are filled in from the job (set here, they must agree with it);
    bf16 needs train.precision bf16. Empty: DDP. docs/deepspeed.md."""
    max_time_s: float | None = None
    """Stop (with a checkpoint) after this much wall time."""
    on_nonfinite: str = "skip"
    """A step whose gradient norm (or loss) is NaN or infinite: skip (no update) or stop. Either
    way the run ends FAILED, naming the step, after max_nonfinite_steps such steps in a row."""
    max_nonfinite_steps: int = 3
    """Non-finite steps in a row that end the run (with on_nonfinite=skip)."""

    def zero_stage(self) -> int | None:
        """The ZeRO stage of ``train.deepspeed`` (0 when it names none), or None without DeepSpeed."""
        if not self.deepspeed:
            return None
        return int((self.deepspeed.get("zero_optimization") or {}).get("stage", 0))

    def offload(self, what: str) -> str:
        """``train.deepspeed.zero_optimization.offload_<what>.device`` ('optimizer' or 'param'):
        'none' or 'cpu'."""
        zero = (self.deepspeed or {}).get("zero_optimization") or {}
        return str((zero.get(f"offload_{what}") or {}).get("device", "none"))

    def _validate_deepspeed(self) -> None:
        ds = self.deepspeed
        zero = ds.get("zero_optimization") or {}
        require(isinstance(zero, dict | DictConfig), "train.deepspeed.zero_optimization",
                f"must be a mapping such as {{stage: 2}}, got {zero!r}")
        stage = zero.get("stage", 0)
        require(stage in ZERO_STAGES and not isinstance(stage, bool), "train.deepspeed.zero_optimization.stage",
                f"must be one of {', '.join(map(str, ZERO_STAGES))}, got {stage!r}")
        for what in ("optimizer", "param"):
            name = f"train.deepspeed.zero_optimization.offload_{what}"
            spec = zero.get(f"offload_{what}")
            if spec is None:
                continue
            require(isinstance(spec, dict | DictConfig), name, f"must be a mapping such as {{device: cpu}}, got {spec!r}")
            device = spec.get("device", "none")
            require(device in OFFLOAD_DEVICES, f"{name}.device",
                    f"must be one of {', '.join(OFFLOAD_DEVICES)}, got {device!r}")
        require(self.offload("optimizer") == "none" or stage >= 1,
                "train.deepspeed.zero_optimization.offload_optimizer",
                f"needs a ZeRO stage of 1, 2 or 3 to offload the optimizer, got stage {stage}")
        require(self.offload("param") == "none" or stage == 3, "train.deepspeed.zero_optimization.offload_param",
                f"offloads partitioned weights, so it needs stage 3, got stage {stage}")
        for key in ("optimizer", "scheduler"):
            require(key not in ds, f"train.deepspeed.{key}",
                    "is owned by the job (optim.*: AdamW and its learning-rate schedule); remove it")
        fp16 = ds.get("fp16") or {}
        require(not fp16.get("enabled", False), "train.deepspeed.fp16.enabled",
                "must be false: the job trains in fp32 or bf16 (train.precision); use bf16: {enabled: true}")
        bf16 = ds.get("bf16") or {}
        require(not bf16.get("enabled", False) or self.precision == "bf16", "train.deepspeed.bf16.enabled",
                f"true needs train.precision: bf16 (one of {', '.join(PRECISIONS)}), got {self.precision!r}")
        require(not self.compile, "train.compile", "torch.compile with DeepSpeed is not supported here; set it false")

    def validate(self) -> TrainConfig:
        require(self.steps >= 1, "train.steps", f"must be >= 1, got {self.steps}")
        require(self.micro_batch >= 1, "train.micro_batch", f"must be >= 1, got {self.micro_batch}")
        require(self.precision in PRECISIONS, "train.precision",
                f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "eval_batches"):
            value = getattr(self, name)
            require(value >= 1, f"train.{name}", f"must be >= 1, got {value}")
        if self.deepspeed:
            self._validate_deepspeed()
        bad = [h for h in self.branch_horizons if not 0 < h <= 1]
        require(not bad, "train.branch_horizons", f"must be fractions of train.steps in (0, 1], got {bad}")
        require(self.max_time_s is None or self.max_time_s > 0, "train.max_time_s",
                f"must be > 0, got {self.max_time_s}")
        require(self.on_nonfinite in NONFINITE_POLICIES, "train.on_nonfinite",
                f"must be one of {', '.join(NONFINITE_POLICIES)}, got {self.on_nonfinite!r}")
        require(self.max_nonfinite_steps >= 1, "train.max_nonfinite_steps",
                f"must be >= 1, got {self.max_nonfinite_steps}")
        return self


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
    gpu_memory_gb: float | None = None
    """Memory of one GPU (GiB). Set, a job whose memory plan (``xdlm.train.memory_plan``) needs
    more per GPU is refused before launch; None: unknown, the plan is only printed."""

    def validate(self) -> ClusterConfig:
        require(self.num_workers >= 1, "cluster.num_workers", f"must be >= 1, got {self.num_workers}")
        require(self.cpus_per_worker > 0, "cluster.cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}")
        require(self.max_failures >= 0, "cluster.max_failures", f"must be >= 0, got {self.max_failures}")
        require(self.gpu_memory_gb is None or self.gpu_memory_gb > 0, "cluster.gpu_memory_gb",
                f"must be > 0 (GiB per GPU) or null (unknown), got {self.gpu_memory_gb}")
        return self


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None
    """MLflow tracking URI; None: MLFLOW_TRACKING_URI, else sqlite under the storage path."""
    experiment: str = "xdlm"
    log_samples: int = 4
    """Samples drawn (with the fewest eval.sample_steps) at each evaluation during training and
    added to the run's samples table; 0: none (the final samples are kept either way)."""
    loss_smoothing: float = 0.9
    """EMA factor beta of train/loss_smooth over the logged training losses (0: no smoothing)."""
    system_metrics_interval_s: float = 10.0
    """Seconds between samples of MLflow's system metrics (CPU, memory, GPU) on the rank-0
    worker; 0 disables them."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra MLflow tags set when the run opens (a study names its runs this way, e.g. the
    IsoFLOP budget of a scaling trial); keys starting with ``mlflow.`` are MLflow's own."""

    def validate(self) -> TrackingConfig:
        require(bool(self.experiment), "tracking.experiment", "must be a non-empty name")
        require(self.log_samples >= 0, "tracking.log_samples", f"must be >= 0 (0 disables), got {self.log_samples}")
        require(0 <= self.loss_smoothing < 1, "tracking.loss_smoothing",
                f"must be in [0, 1), got {self.loss_smoothing}")
        require(self.system_metrics_interval_s >= 0, "tracking.system_metrics_interval_s",
                f"must be >= 0 (0 disables), got {self.system_metrics_interval_s}")
        bad = [key for key in self.tags if not key or key.startswith("mlflow.")]
        require(not bad, "tracking.tags", f"keys must be non-empty and not start with 'mlflow.', got {bad}")
        return self


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

    def validate(self) -> EvalConfig:
        require(all(s >= 1 for s in self.sample_steps), "eval.sample_steps",
                f"must all be >= 1, got {list(self.sample_steps)}")
        require(self.num_samples >= 1, "eval.num_samples", f"must be >= 1, got {self.num_samples}")
        require(self.sampler in sampling.available(), "eval.sampler",
                f"unknown {self.sampler!r}; available: {', '.join(sampling.available())}")
        require(self.top_p is None or 0 < self.top_p <= 1, "eval.top_p", f"must be in (0, 1] or null, got {self.top_p}")
        return self


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

    def deepspeed_owned(self) -> dict[str, tuple[str, Any]]:
        """DeepSpeed keys the job decides: {DeepSpeed key: (job field, value)}."""
        return {"train_micro_batch_size_per_gpu": ("train.micro_batch", self.train.micro_batch),
                "gradient_accumulation_steps": ("train.global_batch / (train.micro_batch x cluster.num_workers)",
                                                self.accum_steps),
                "train_batch_size": ("train.global_batch", self.train.global_batch),
                "gradient_clipping": ("optim.grad_clip", self.optim.grad_clip)}

    def run_dir(self) -> str:
        """Where Ray Train keeps this run (local path or s3:// URI)."""
        base = self.cluster.storage_path
        if "://" not in base:
            base = str(Path(base).expanduser().resolve())
        return f"{base.rstrip('/')}/{self.name}"

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> JobConfig:
        """Every section's own checks, then those that span sections; returns ``self``."""
        require(bool(RUN_NAME.fullmatch(self.name)), "name",
                f"must be letters, digits, '_', '.', '-' (a directory name), got {self.name!r}")
        _require_finite(self)
        _section(self.data.validate, "data")
        _section(self.model.validate, "model")
        for section in (self.diffusion, self.optim, self.train, self.cluster, self.tracking, self.eval):
            section.validate()
        per_step = self.train.micro_batch * self.cluster.num_workers
        require(self.train.global_batch >= per_step and self.train.global_batch % per_step == 0,
                "train.global_batch",
                f"must be a positive multiple of train.micro_batch x cluster.num_workers = {per_step}, "
                f"got {self.train.global_batch}")
        solves = backbone_info(self.model.backbone).solves
        require(not solves or self.data.source in solves, "model.backbone",
                f"{self.model.backbone!r} is the exact denoiser of data.source {' or '.join(solves)}; "
                f"it cannot solve data.source {self.data.source!r}")
        for key, (owner, value) in self.deepspeed_owned().items() if self.train.deepspeed else ():
            given = self.train.deepspeed.get(key, value)
            require(given == value, f"train.deepspeed.{key}",
                    f"is set by the job from {owner} = {value}; got {given!r} (remove it, or change {owner})")
        # remote code's hidden states are caught by stopping its forward with an exception at the
        # head, which leaves ZeRO-3's per-module gather/release hooks unbalanced (xdlm.models.hf)
        require(self.train.zero_stage() != 3 or not backbone_info(self.model.backbone).fused_head
                or not self.model.hf.trust_remote_code,
                "train.deepspeed.zero_optimization.stage",
                "3 is not supported with model.hf.trust_remote_code: true (the fused loss stops a remote-code "
                "forward at its head, which ZeRO-3's hooks cannot follow); use stage 2 (with "
                "offload_optimizer: {device: cpu} to save memory)")
        require(self.data.seq_len <= self.model.max_seq_len, "data.seq_len",
                f"{self.data.seq_len} is above the model's maximum model.max_seq_len = {self.model.max_seq_len}")
        return self


def _require_finite(node: Any, prefix: str = "") -> None:
    """NaN or infinity in any number of the tree is refused: ``optim.lr=inf`` would otherwise
    train to a FINISHED run with NaN checkpoints."""
    values = ({f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
              if dataclasses.is_dataclass(node) else node)
    items = values.items() if isinstance(values, dict) else enumerate(values) if isinstance(values, list) else ()
    for key, value in items:
        path = f"{prefix}.{key}" if prefix and isinstance(key, str) else f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value}")
        if dataclasses.is_dataclass(value) or isinstance(value, dict | list):
            _require_finite(value, path)


# -- loading: defaults <- YAML <- dotted overrides (jobs here, sweeps in xdlm.tune.spec) -------
NodeLookup = Callable[[str], Any]


def dataclass_at(schema: type, dotted: str) -> type | None:
    """The dataclass type of the section at ``dotted`` (``""``: ``schema`` itself), or None."""
    node: Any = schema
    for part in [p for p in dotted.split(".") if p]:
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields or fields[part].default_factory is dataclasses.MISSING:  # type: ignore[misc]
            return None
        default = fields[part].default_factory()  # type: ignore[misc]
        if not dataclasses.is_dataclass(default):
            return None
        node = type(default)
    return node


def omegaconf_error(err: OmegaConfBaseException, source: str, node_at: NodeLookup) -> ConfigError:
    """OmegaConf's error as a ``ConfigError`` naming the key (and, for an unknown key, the keys
    allowed at that level)."""
    key = getattr(err, "full_key", None) or ""
    message = str(err).splitlines()[0]
    if "Key '" in message and "not in" in message:
        node = node_at(key.rsplit(".", 1)[0] if "." in key else "")
        allowed = f"; allowed keys here: {', '.join(f.name for f in dataclasses.fields(node))}" if node else ""
        return ConfigError(f"{source}: unknown key '{key}'{allowed}")
    return ConfigError(f"{source}: bad value for '{key}': {message}")


def override_layer(item: str) -> DictConfig:
    """One ``key=value`` override as a config layer; a value YAML cannot parse is a ``ConfigError``
    naming the override (OmegaConf would let yaml's ParserError through as a traceback)."""
    try:
        return OmegaConf.from_dotlist([item])
    except yaml.YAMLError as err:
        value, mark = item.partition("=")[2], getattr(err, "problem_mark", None)
        where = "" if mark is None else (f" at character {mark.column + 1} of the value"
                                         if mark.line == 0 and mark.column < len(value) else " at the end of the value")
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}{where}); quote a list "
                          "item that holds brackets, commas or colons, e.g. base.overrides=['eval.sample_steps=[2]']"
                          ) from None


def load_structured(schema: type, path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...],
                    *, what: str, node_at: NodeLookup | None = None) -> Any:
    """Defaults of the dataclass ``schema`` <- the YAML file at ``path`` <- dotted ``key=value``
    overrides, one at a time so an error names the one at fault.  Returns a ``schema`` instance,
    not yet validated; every mistake is a ``ConfigError`` naming the file, key or override.

    ``what`` names the file kind in messages ("job", "sweep"); ``node_at(dotted)`` finds the
    section class at a dotted key, for listing the allowed keys (default: walk the dataclasses).
    """
    node_at = node_at or (lambda dotted: dataclass_at(schema, dotted))
    layers = [OmegaConf.structured(schema)]
    source = str(path) if path is not None else what
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{what} file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # yaml syntax errors, duplicate keys
            raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: the top level of a {what} file must be a mapping of keys "
                              f"(like 'train: {{steps: 100}}'), got a {type(loaded).__name__.replace('Config', '').lower()}")
        layers.append(loaded)
    try:
        merged = OmegaConf.merge(*layers)
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like dotted.key=value")
            source = f"override {item!r}"
            merged = OmegaConf.merge(merged, override_layer(item))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise omegaconf_error(err, source, node_at) from None
    except TypeError as err:  # OmegaConf merging a list into a mapping or the reverse
        raise ConfigError(f"{source}: {err} (a list where a mapping is expected, or the reverse)") from None


def load_job(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Defaults <- YAML file <- dotted overrides, then validation. Returns a ``JobConfig``."""
    job: JobConfig = load_structured(JobConfig, path, overrides, what="job")
    return job.validate()


def to_yaml(job: JobConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(job))


def to_dict(job: JobConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(job), resolve=True)  # type: ignore[return-value]


def from_dict(data: dict[str, Any]) -> JobConfig:
    merged = OmegaConf.merge(OmegaConf.structured(JobConfig), data)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
