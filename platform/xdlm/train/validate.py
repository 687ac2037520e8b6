"""Cross-section validation of a ``JobConfig``: runs before any Ray resource is requested."""

from __future__ import annotations

import re

from xdlm.config import ConfigError, JobConfig

LOSS_BACKENDS = ("auto", "torch", "chunked", "triton")
PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field}: {message}")


def _section(validate, section: str) -> None:
    try:
        validate()
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{section}: {err}") from None


def validate_job(job: JobConfig) -> None:
    from xdlm.diffusion import sampling, schedules

    _require(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", job.name)), "name",
             f"must be letters, digits, '_', '.', '-' (a directory name), got {job.name!r}")
    _section(job.data.validate, "data")
    _section(job.model.validate, "model")

    d = job.diffusion
    _require(0.0 <= d.k <= 1.0, "diffusion.k", f"must be in [0, 1] (0 = MDLM, 1 = UDLM), got {d.k}")
    _require(d.schedule in schedules.available(), "diffusion.schedule",
             f"unknown {d.schedule!r}; available: {', '.join(schedules.available())}")
    _section(lambda: schedules.get(d.schedule, **d.schedule_params), "diffusion.schedule_params")
    _require(0.0 < d.t_min < 1.0, "diffusion.t_min", f"must be in (0, 1), got {d.t_min}")
    _require(d.loss_backend in LOSS_BACKENDS, "diffusion.loss_backend",
             f"must be one of {', '.join(LOSS_BACKENDS)}, got {d.loss_backend!r}")

    o = job.optim
    _require(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _require(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas",
             f"must be two numbers in [0, 1), got {list(o.betas)}")
    _require(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _require(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _require(o.lr_schedule in LR_SCHEDULES, "optim.lr_schedule",
             f"must be one of {', '.join(LR_SCHEDULES)}, got {o.lr_schedule!r}")
    _require(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
    _require(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 disables), got {o.grad_clip}")
    _require(0 <= o.ema < 1, "optim.ema", f"must be in [0, 1) (0 disables), got {o.ema}")

    t, c = job.train, job.cluster
    _require(t.steps >= 1, "train.steps", f"must be >= 1, got {t.steps}")
    _require(t.micro_batch >= 1, "train.micro_batch", f"must be >= 1, got {t.micro_batch}")
    _require(c.num_workers >= 1, "cluster.num_workers", f"must be >= 1, got {c.num_workers}")
    per_step = t.micro_batch * c.num_workers
    _require(t.global_batch >= per_step and t.global_batch % per_step == 0, "train.global_batch",
             f"must be a positive multiple of train.micro_batch x cluster.num_workers = {per_step}, "
             f"got {t.global_batch}")
    _require(t.precision in PRECISIONS, "train.precision",
             f"must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "eval_batches"):
        value = getattr(t, name)
        _require(value >= 1, f"train.{name}", f"must be >= 1, got {value}")
    if t.deepspeed:
        stage = (t.deepspeed.get("zero_optimization") or {}).get("stage", 0)
        _require(stage in (0, 1, 2), "train.deepspeed.zero_optimization.stage",
                 f"must be 0, 1 or 2 (ZeRO-3 would shard the weights that EMA and evaluation read), got {stage}")
        _require(not t.compile, "train.compile", "torch.compile with DeepSpeed is not supported here; set it false")
    _require(t.max_time_s is None or t.max_time_s > 0, "train.max_time_s", f"must be > 0, got {t.max_time_s}")
    _require(c.cpus_per_worker > 0, "cluster.cpus_per_worker", f"must be > 0, got {c.cpus_per_worker}")
    _require(c.max_failures >= 0, "cluster.max_failures", f"must be >= 0, got {c.max_failures}")
    _require(job.data.seq_len <= job.model.max_seq_len, "data.seq_len",
             f"{job.data.seq_len} is above the model's maximum model.max_seq_len = {job.model.max_seq_len}")

    e = job.eval
    _require(all(s >= 1 for s in e.sample_steps), "eval.sample_steps", f"must all be >= 1, got {list(e.sample_steps)}")
    _require(e.num_samples >= 1, "eval.num_samples", f"must be >= 1, got {e.num_samples}")
    _require(e.sampler in sampling.available(), "eval.sampler",
             f"unknown {e.sampler!r}; available: {', '.join(sampling.available())}")
    _require(e.top_p is None or 0 < e.top_p <= 1, "eval.top_p", f"must be in (0, 1] or null, got {e.top_p}")
