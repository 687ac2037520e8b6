"""Optimizer, learning-rate schedule and EMA weights."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from xdlm.config import OptimConfig


@contextmanager
def weights_swapped(model: torch.nn.Module, values: list[torch.Tensor]):
    """Run with ``values`` copied into ``model``'s parameters (in order), then put them back."""
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
    try:
        yield model
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )


def lr_multiplier(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """The factor on ``cfg.lr`` for update ``step`` (0-based) of a run of ``total_steps`` updates.

    Warm-up, W = ``warmup_steps``: ``w(i) = (i + 1) / W`` for i < W. After it:
      constant  1;
      cosine    ``m + (1 - m) (1 + cos(pi p)) / 2``, p = (i - W) / (T - W) capped at 1, m = ``min_lr_ratio``;
      wsd       ``w(i) * d(i)`` (warm-up, stable, decay) with w(i) = min(1, (i + 1) / W) and
                d(i) = 1 before S = ``cfg.decay_start(T)``, then ``m + (1 - m) g(p)``,
                p = (i - S + 1) / (T - S), so the last update (i = T - 1) runs at m * lr, and
                g(p) = 1 - p (linear), (1 + cos(pi p)) / 2 (cosine) or 1 - sqrt(p) (1-sqrt).

    A wsd run of T updates is, up to step S, the same as any longer wsd or constant run with
    the same warm-up: that is what lets a decay branch start from a longer run's checkpoint.
    """
    if cfg.lr_schedule == "wsd":
        return _warmup(step, cfg) * _decay(step, cfg, total_steps)
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _warmup(step: int, cfg: OptimConfig) -> float:
    return min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0


DECAY_SHAPES = {
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1.0 - math.sqrt(p),
}
"""g(p) of each ``optim.decay_shape``: 1 at the start of the decay (p = 0), 0 at its end (p = 1)."""


def _decay(step: int, cfg: OptimConfig, total_steps: int) -> float:
    start = cfg.decay_start(total_steps)
    if step < start:
        return 1.0
    progress = min(1.0, (step - start + 1) / (total_steps - start))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * DECAY_SHAPES[cfg.decay_shape](progress)


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg, total_steps))


class EMA:
    """Exponential moving average of the weights: shadow = decay * shadow + (1 - decay) * weights."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in model.parameters()] if decay > 0 else []

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        if self.decay > 0:
            torch._foreach_lerp_(self.shadow, [p.detach() for p in model.parameters()], 1 - self.decay)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Evaluate/sample with the EMA weights, then put the training weights back."""
        if self.decay <= 0:
            yield model
            return
        with weights_swapped(model, self.shadow):
            yield model

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = [s.clone() for s in state["shadow"]]

    def adopt_decay(self, decay: float, model: torch.nn.Module) -> None:
        """Continue another run's average with this job's decay (a fresh one if it kept none)."""
        if decay > 0 and not self.shadow:
            self.shadow = [p.detach().clone() for p in model.parameters()]
        self.decay = decay
