"""Training objectives on one micro-batch.

- diffusion (the DiT denoiser): noise x_0 at the given times, denoise, token-mean NELBO;
- autoregressive (the causal baseline / evaluator): next-token cross-entropy.
Both return a scalar whose exp is a perplexity (an upper bound for the diffusion NELBO).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from xdlm.diffusion import XDLM
from xdlm.diffusion.schedules import Schedule

#: objective(model, x0 [B, L], t [B], generator) -> scalar loss
Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator | None], torch.Tensor]


def diffusion_loss(
    model: torch.nn.Module,
    process: XDLM,
    schedule: Schedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Token-mean NELBO estimate: x0 [B, L] clean ids, t [B] times -> scalar.

    One time per sequence (alpha_t [B, 1]); the estimate of E_t E_{z_t} l_t is unbiased for
    t ~ U[t_min, 1] (stratified across the global batch by the caller).
    """
    t = t.to(torch.float64)
    alpha_t = schedule.alpha(t)[:, None].to(x0.device)
    dalpha_t = schedule.dalpha(t)[:, None].to(x0.device)
    z_t = process.sample_marginal(x0, alpha_t, generator=generator)
    logits = model(z_t, t.to(device=x0.device, dtype=torch.float32))
    return process.nelbo(logits, x0, z_t, alpha_t, dalpha_t, validate=False, backend=backend).mean()


def autoregressive_loss(model: torch.nn.Module, x0: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal model over the L - 1 predictions."""
    logits = model(x0)[:, :-1]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x0[:, 1:].reshape(-1))


def make_objective(backbone: str, process: XDLM, schedule: Schedule, backend: str = "auto") -> Objective:
    """The loss of ``backbone``; ``backend`` picks the NELBO implementation (docs/kernels.md)."""
    if backbone == "causal_dit":
        return lambda model, x0, t, generator=None: autoregressive_loss(model, x0)
    return lambda model, x0, t, generator=None: diffusion_loss(model, process, schedule, x0, t, generator, backend)
