"""Noise schedules alpha_t (signal kept at time t), each with alpha'_t in closed form.

Registry: ``get(name, **params)`` builds one, ``available()`` lists the names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from xdlm.registry import Registry

SCHEDULES: Registry[type] = Registry("schedule")


class Schedule:
    """alpha(t) decreasing from ~1 at t = 0 to ~0 at t = 1; dalpha(t) = d alpha / dt <= 0."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _check_eps(eps: float) -> None:
    if not 0.0 < eps < 1.0:
        raise ValueError(f"schedule eps must be in (0, 1), got {eps}")


@SCHEDULES.register("loglinear")
@dataclass(frozen=True)
class LogLinear(Schedule):
    """alpha_t = 1 - (1 - eps) t: linear in alpha (MDLM's default; sigma_t = -log alpha_t)."""

    eps: float = 1e-3

    def __post_init__(self):
        _check_eps(self.eps)

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t):
        return torch.full_like(t, -(1.0 - self.eps))


@SCHEDULES.register("cosine")
@dataclass(frozen=True)
class Cosine(Schedule):
    """alpha_t = eps + (1 - eps) cos(pi t / 2)."""

    eps: float = 1e-3

    def __post_init__(self):
        _check_eps(self.eps)

    def alpha(self, t):
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def dalpha(self, t):
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


@SCHEDULES.register("polynomial")
@dataclass(frozen=True)
class Polynomial(Schedule):
    """alpha_t = 1 - (1 - eps) t^w, w > 0 (w = 1 is log-linear)."""

    w: float = 1.0
    eps: float = 1e-3

    def __post_init__(self):
        _check_eps(self.eps)
        if not self.w > 0:
            raise ValueError(f"polynomial schedule w must be > 0, got {self.w}")

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t.pow(self.w)

    def dalpha(self, t):
        return -(1.0 - self.eps) * self.w * t.pow(self.w - 1.0)


@SCHEDULES.register("geometric")
@dataclass(frozen=True)
class Geometric(Schedule):
    """sigma_t = sigma_min^(1-t) sigma_max^t, alpha_t = exp(-sigma_t)."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def __post_init__(self):
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"geometric schedule needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min},"
                f" sigma_max={self.sigma_max}"
            )

    def sigma(self, t):
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def alpha(self, t):
        return torch.exp(-self.sigma(t))

    def dalpha(self, t):
        sigma = self.sigma(t)
        return -torch.exp(-sigma) * sigma * math.log(self.sigma_max / self.sigma_min)


def get(name: str, **params) -> Schedule:
    """Build a schedule by name; unknown names and parameters raise ``ValueError``."""
    cls = SCHEDULES.get(name)
    try:
        return cls(**params)
    except TypeError as err:
        fields = ", ".join(cls.__dataclass_fields__)
        raise ValueError(f"bad parameters {params} for schedule {name!r}; it takes: {fields}") from err


def available() -> list[str]:
    return SCHEDULES.available()
