"""NELBO and perplexity of a model on held-out token blocks.

Perplexity = exp(token-mean NELBO): an upper bound on a diffusion model's true perplexity (for
the causal baseline the loss is the exact NLL).  Times are antithetic per batch and the noise
generator is seeded per batch, so two evaluations of the same weights give the same number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from xdlm.diffusion import time_sampling
from xdlm.objective import Objective


@torch.no_grad()
def nelbo_sums(
    objective: Objective,
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    device: torch.device,
    t_min: float = 1e-3,
    seed: int = 1234,
    max_batches: int | None = None,
) -> tuple[float, int]:
    """(sum of per-token loss, number of tokens) over ``batches`` [B, L]."""
    total, count = 0.0, 0
    for i, x0 in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        x0 = x0.to(device)
        noise = torch.Generator(device=device).manual_seed(seed + i)
        t = time_sampling.antithetic_times(x0.shape[0], t_min, torch.Generator().manual_seed(seed + i))
        total += float(objective(model, x0, t, noise)) * x0.numel()
        count += x0.numel()
    return total, count


def perplexity(nelbo_per_token: float) -> float:
    return math.exp(min(nelbo_per_token, 700.0))
