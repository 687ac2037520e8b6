"""Categorical draws for sampling: nucleus (top-p) truncation and Gumbel-max."""

from __future__ import annotations

import torch


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of ids whose mass reaches top_p, renormalised: [..., N] -> [..., N]."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_p == 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def gumbel_noise(
    shape: torch.Size, generator: torch.Generator | None = None, device=None, float64: bool = True
) -> torch.Tensor:
    """-log(-log U): float64 by default, since float32 noise skews sample entropy."""
    dtype = torch.float64 if float64 else torch.float32
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    exponential = -torch.log(u.clamp_min(tiny))  # Exp(1) draws
    return -torch.log(exponential.clamp_min(tiny))


def gumbel_max(
    probs: torch.Tensor, generator: torch.Generator | None = None, float64: bool = True
) -> torch.Tensor:
    """One draw per row of ``probs`` [..., N] -> ids [...]: argmax(log p + Gumbel)."""
    noise = gumbel_noise(probs.shape, generator, probs.device, float64)
    return (torch.log(probs.to(noise.dtype)) + noise).argmax(dim=-1)
