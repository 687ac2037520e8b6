"""How gradients become an update: plain DDP (the default) or a DeepSpeed ZeRO engine.

Both expose the same few calls the training loop uses, so the loop reads the same either way:
``forward_model`` (what the objective calls), ``sync_context(last_micro_step)``,
``backward(loss)``, ``step() -> grad norm``, ``lr()``, and checkpoint hooks for the optimizer
state (DDP keeps it in ``state.pt``; ZeRO shards it, one file per rank, beside ``state.pt``).
Under ZeRO-3 the weights are sharded too: ``view``, ``track_ema`` and ``full_weights()`` give
the loop full weights (and EMA) at the steps that read them (docs/deepspeed.md).
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import torch
import torch.distributed as dist

from xdlm.config import JobConfig, OptimConfig
from xdlm.train.optim import EMA, build_optimizer, build_scheduler, lr_multiplier, weights_swapped

DEEPSPEED_TAG = "deepspeed"


class DDPEngine:
    """AdamW + LR schedule + clipping; DDP through Ray's process group when world > 1."""

    shards_optimizer = False

    def __init__(self, model: torch.nn.Module, job: JobConfig, world: int) -> None:
        import ray.train.torch

        self.module = model
        self.accum = job.accum_steps
        self.grad_clip = job.optim.grad_clip
        self.optimizer = build_optimizer(model, job.optim)
        self.scheduler = build_scheduler(self.optimizer, job.optim, job.train.steps)
        self.forward_model = ray.train.torch.prepare_model(model) if world > 1 else model
        if job.train.compile:
            self.forward_model = torch.compile(self.forward_model)

    def sync_context(self, last_micro_step: bool):
        """DDP all-reduces gradients only on the last micro-step of an accumulation."""
        if last_micro_step or not hasattr(self.forward_model, "no_sync"):
            return contextlib.nullcontext()
        return self.forward_model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum).backward()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, skip_nonfinite: bool = False) -> float:
        """Clip, update, advance the schedule; returns the gradient norm before clipping.
        ``skip_nonfinite``: with a NaN/inf norm, drop the gradients instead of applying them
        (the schedule still advances: it counts steps, not updates)."""
        clip = self.grad_clip if self.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip))
        if skip_nonfinite and not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
        self.scheduler.step()
        return grad_norm

    def lr(self) -> float:
        """The learning rate the last step used (read from the optimizer: PBT's
        ``adopt_hyperparameters`` changes it there without going through the scheduler)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any], directory: str) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save_shards(self, directory: str) -> None:
        """Nothing: the whole optimizer state is in ``state.pt``."""

    def track_ema(self, ema: EMA) -> EMA:
        """The EMA the loop updates (ZeRO-3 keeps one per partition)."""
        return ema

    @property
    def view(self) -> torch.nn.Module:
        """The module whose parameters hold the full weights inside ``full_weights()``."""
        return self.module

    def full_weights(self, ema: EMA):
        """Full weights are always there outside ZeRO-3: nothing to gather."""
        return contextlib.nullcontext()

    def adopt_hyperparameters(self, cfg: OptimConfig, total_steps: int) -> None:
        """After loading *another* run's state (PBT's exploit step): keep its Adam moments and
        schedule position, take this job's lr, betas and weight decay.

        Loading the state restores the donor's base lr into the scheduler and its current lr into
        the optimizer; both are replaced here, at the same schedule position, so the next step
        uses ``cfg.lr * lr_multiplier(step)``.
        """
        step = self.scheduler.last_epoch
        lr = cfg.lr * lr_multiplier(step, cfg, total_steps)
        for group in self.optimizer.param_groups:
            group.update(initial_lr=cfg.lr, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.scheduler.base_lrs = [cfg.lr] * len(self.optimizer.param_groups)


class DeepSpeedEngine(DDPEngine):
    """``train.deepspeed`` passed through to ``deepspeed.initialize`` (ZeRO-0/1/2/3, optional
    optimizer offload): batch sizes, accumulation and clipping are filled in from the job so the
    two can never disagree (``TrainConfig.validate`` refuses a passthrough that sets them to
    other values).

    ZeRO-3 partitions the weights themselves: after ``deepspeed.initialize`` each parameter of
    the module holds an empty placeholder and this rank's flat slice lives in ``p.ds_tensor``.
    What the rest of the loop reads as "the model" (evaluation, samples, the weights-finite check,
    the full weights in ``state.pt``) is then ``self.view``: a twin of the module on the meta
    device (shapes only, no memory), filled with the gathered weights inside
    ``full_weights()`` and emptied again after it. The EMA is kept per partition
    (``PartitionedEMA``) and gathered at the same moments.
    """

    shards_optimizer = True

    def __init__(self, model: torch.nn.Module, job: JobConfig, world: int) -> None:
        import deepspeed

        self.accum = job.accum_steps
        self.stage = job.train.zero_stage()
        self.device = next(model.parameters()).device
        config = deepspeed_config(job)
        optimizer = (build_cpu_adam(model, job.optim) if needs_cpu_adam(config)
                     else build_optimizer(model, job.optim))
        scheduler = build_scheduler(optimizer, job.optim, job.train.steps)
        # the meta twin is taken before initialize, which partitions (ZeRO-3) or casts (bf16) in place
        self._view = copy.deepcopy(model).to("meta") if self.stage == 3 else model
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False
        )
        self.module = model
        self.forward_model = self.engine

    @property
    def view(self) -> torch.nn.Module:
        return self._view

    def sync_context(self, last_micro_step: bool):
        return contextlib.nullcontext()  # the engine knows its accumulation boundary

    def backward(self, loss: torch.Tensor) -> None:
        # The engine scales by 1 / accumulation itself and must step after every backward: it
        # counts micro-steps to know when to reduce gradients and update.
        self.engine.backward(loss)
        self.engine.step()

    def zero_grad(self) -> None:
        pass  # the engine zeroes after its own update

    def step(self, skip_nonfinite: bool = False) -> float:
        # The engine already updated inside backward(); it cannot skip after the fact.
        grad_norm = self.engine.get_global_grad_norm()
        return float(grad_norm) if grad_norm is not None else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], directory: str) -> None:
        # ZeRO-3 restores the weights from the fp32 partitions in the shards, the others from
        # the module states file; either way the same bits the saving run trained with
        self.engine.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_module_strict=True)

    def save_shards(self, directory: str) -> None:
        """Every rank writes its ZeRO partition (distinct file names, merged by Ray's upload)."""
        self.engine.save_checkpoint(directory, tag=DEEPSPEED_TAG)

    def track_ema(self, ema: EMA) -> EMA | PartitionedEMA:
        """The EMA the loop updates: per partition under ZeRO-3; an fp32 one beside bf16 weights
        (DeepSpeed's bf16 casts the module); else ``ema`` itself."""
        params = list(self.module.parameters())
        if self.stage == 3 or any(p.dtype != torch.float32 for p in params):
            return PartitionedEMA(ema, params, partitioned=self.stage == 3)
        return ema

    @contextlib.contextmanager
    def full_weights(self, ema: EMA | PartitionedEMA):
        """ZeRO-3: every rank gathers the weights into ``self.view`` and the EMA into full tensors
        (a collective: every rank enters, at the same step); both are released on exit. Other
        stages hold full weights already: nothing to do."""
        if self.stage != 3:
            yield
            return
        with torch.no_grad():
            self.view.to_empty(device=self.device)
            for dst, src in zip(self.view.parameters(), self.module.parameters(), strict=True):
                dst.copy_(gather_partition(src.ds_tensor, src))
            for dst, src in zip(self.view.buffers(), self.module.buffers(), strict=True):
                dst.copy_(src)
            ema.gather()
        try:
            yield
        finally:
            ema.release()
            self.view.to("meta")


def deepspeed_config(job: JobConfig) -> dict[str, Any]:
    """The dict handed to ``deepspeed.initialize``: the passthrough, plus what the job owns."""
    config = {"zero_allow_untested_optimizer": True, **job.train.deepspeed}
    config.update({key: value for key, (_, value) in job.deepspeed_owned().items()})
    return config


def needs_cpu_adam(config: dict[str, Any]) -> bool:
    """ZeRO-Offload wants DeepSpeed's CPU Adam (a C++ op, JIT-built on first use) unless the
    passthrough says ``zero_force_ds_cpu_optimizer: false`` (then torch's AdamW steps the
    offloaded partitions, slower but with no build)."""
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return offload.get("device", "none") == "cpu" and config.get("zero_force_ds_cpu_optimizer", True)


def build_cpu_adam(model: torch.nn.Module, cfg: OptimConfig):
    """DeepSpeed's CPU AdamW (decoupled weight decay, as ``torch.optim.AdamW``)."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    return DeepSpeedCPUAdam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                            adamw_mode=True)


def gather_partition(part: torch.Tensor, param: torch.nn.Parameter) -> torch.Tensor:
    """The full tensor of a ZeRO-3 parameter from every rank's ``part``: ZeRO-3 cuts the
    flattened parameter into ``world`` equal slices (the last zero-padded), rank r holding
    ``flat[r s : (r + 1) s]``, s = ``part.numel()``; concatenating them in rank order and
    cutting the padding gives ``flat``, reshaped to ``param.ds_shape``. A collective."""
    parts = [torch.empty_like(part) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, part.contiguous())
    return torch.cat(parts)[: param.ds_numel].view(param.ds_shape)


def partition_of(full: torch.Tensor, param: torch.nn.Parameter) -> torch.Tensor:
    """This rank's slice of ``full`` as ZeRO-3 cuts ``param`` (``gather_partition`` inverted)."""
    size = param.ds_tensor.numel()
    start = dist.get_rank() * size
    flat = full.detach().reshape(-1)
    part = torch.zeros(size, dtype=full.dtype, device=param.ds_tensor.device)
    count = max(0, min(size, flat.numel() - start))
    part[:count] = flat[start:start + count]
    return part


class PartitionedEMA:
    """The EMA of DeepSpeed's weights, in fp32 whatever their dtype. ZeRO-3 (``partitioned``):
    one slice per rank, ``shadow_r = decay * shadow_r + (1 - decay) * w_r`` on this rank's
    partition ``w_r`` of every parameter, elementwise, so it is the full EMA cut the same way;
    ``gather()`` / ``release()`` (inside ``full_weights``) give the full shadow that ``applied``
    and ``state_dict`` need. ``update`` reads the parameters it was built for, whatever module it
    is handed (under ZeRO-3 the loop hands the meta view)."""

    def __init__(self, ema: EMA, params: list[torch.nn.Parameter], partitioned: bool) -> None:
        self.decay = ema.decay
        self.params = params
        self.partitioned = partitioned
        # optim.ema = 0 (the 8B recipe): no shadow to keep
        self.shards = [(partition_of(s, p) if partitioned else s.detach().clone()).float()
                       for s, p in zip(ema.shadow, params, strict=True)] if ema.decay > 0 else []
        self.full: list[torch.Tensor] | None = None if partitioned else self.shards

    @torch.no_grad()
    def update(self, model: torch.nn.Module | None = None) -> None:
        if self.decay > 0:
            weights = [(p.ds_tensor if self.partitioned else p).detach().float() for p in self.params]
            torch._foreach_lerp_(self.shards, weights, 1 - self.decay)

    def gather(self) -> None:
        if self.decay > 0 and self.partitioned:
            self.full = [gather_partition(s, p) for s, p in zip(self.shards, self.params, strict=True)]

    def release(self) -> None:
        if self.partitioned:
            self.full = None

    def _full(self) -> list[torch.Tensor]:
        if self.full is None:
            raise RuntimeError("the ZeRO-3 EMA is partitioned: read it inside engine.full_weights()")
        return self.full

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Evaluate/sample with the EMA weights (``model``: the gathered view)."""
        if self.decay <= 0:
            yield model
            return
        with weights_swapped(model, self._full()):
            yield model

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self._full() if self.decay > 0 else []}


def build_engine(model: torch.nn.Module, job: JobConfig, world: int) -> DDPEngine:
    return DeepSpeedEngine(model, job, world) if job.train.deepspeed else DDPEngine(model, job, world)
