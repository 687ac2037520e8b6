"""How gradients become an update: plain DDP (the default) or a DeepSpeed ZeRO engine.

Both expose the same few calls the training loop uses, so the loop reads the same either way:
``forward_model`` (what the objective calls), ``sync_context(last_micro_step)``,
``backward(loss)``, ``step() -> grad norm``, ``lr()``, and checkpoint hooks for the optimizer
state (DDP keeps it in ``state.pt``; ZeRO shards it, one file per rank, beside ``state.pt``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from xdlm.config import JobConfig, OptimConfig
from xdlm.train.optim import build_optimizer, build_scheduler, lr_multiplier

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
    """``train.deepspeed`` passed through to ``deepspeed.initialize`` (ZeRO-1/2): batch sizes,
    accumulation and clipping are filled in from the job so the two can never disagree."""

    shards_optimizer = True

    def __init__(self, model: torch.nn.Module, job: JobConfig, world: int) -> None:
        import deepspeed

        self.module = model
        self.accum = job.accum_steps
        optimizer = build_optimizer(model, job.optim)
        scheduler = build_scheduler(optimizer, job.optim, job.train.steps)
        config = {
            "zero_allow_untested_optimizer": True,
            **job.train.deepspeed,
            "train_micro_batch_size_per_gpu": job.train.micro_batch,
            "gradient_accumulation_steps": self.accum,
            "train_batch_size": job.train.global_batch,
            "gradient_clipping": job.optim.grad_clip,
        }
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False
        )
        self.forward_model = self.engine

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
        self.engine.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_module_strict=True)

    def save_shards(self, directory: str) -> None:
        """Every rank writes its ZeRO partition (distinct file names, merged by Ray's upload)."""
        self.engine.save_checkpoint(directory, tag=DEEPSPEED_TAG)


def build_engine(model: torch.nn.Module, job: JobConfig, world: int) -> DDPEngine:
    return DeepSpeedEngine(model, job, world) if job.train.deepspeed else DDPEngine(model, job, world)
