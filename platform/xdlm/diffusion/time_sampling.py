"""Antithetic (stratified) diffusion times over the global batch, shardable across workers.

t_i = (u / n + i / n) mod 1 for i = 0..n-1 with one shared u ~ U(0, 1), rescaled to [t_min, 1].
Stratifying over the *global* batch (all workers, all accumulation steps) is what lowers the
variance of the NELBO estimate; each worker then takes its own slice.
"""

from __future__ import annotations

import torch


def antithetic_times(
    n: int, t_min: float = 1e-3, generator: torch.Generator | None = None, dtype=torch.float64
) -> torch.Tensor:
    """n stratified times in [t_min, 1]: [n].  Every worker must use the same generator state."""
    if n < 1:
        raise ValueError(f"n (the global batch size) must be >= 1, got {n}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must be in [0, 1), got {t_min}")
    u = torch.rand((), generator=generator, dtype=dtype)
    t = torch.remainder(u / n + torch.arange(n, dtype=dtype) / n, 1.0)
    return t_min + (1.0 - t_min) * t


def shard_times(
    t_global: torch.Tensor, rank: int, world_size: int, accum_step: int = 0, accum_steps: int = 1
) -> torch.Tensor:
    """This worker's micro-batch slice of the global times.

    Shards are strided (t_j goes to accum step (j // world_size) % accum_steps and rank
    j % world_size) so each micro-batch spans the whole [t_min, 1] range; the shards of all
    (rank, accum_step) pairs are disjoint and together cover every t_i.
    """
    n = t_global.shape[0]
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")
    if not 0 <= accum_step < accum_steps:
        raise ValueError(f"accum_step must be in [0, {accum_steps - 1}], got {accum_step}")
    if n % (world_size * accum_steps):
        raise ValueError(
            f"global batch {n} is not divisible by world_size * accum_steps = {world_size * accum_steps}"
        )
    return t_global.view(-1, accum_steps, world_size)[:, accum_step, rank]
