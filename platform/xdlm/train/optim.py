"""Optimizer, learning-rate schedule and EMA weights."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from xdlm.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )


def lr_multiplier(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Linear warm-up to 1, then constant or cosine down to ``min_lr_ratio`` at ``total_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


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
        params = list(model.parameters())
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved, strict=True):
                    p.copy_(s)

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
