"""Samplers (generation) for XDLM, in a registry: ``get(name, **options)`` / ``available()``.

The ``ancestral`` sampler walks the grid t_j = linspace(1, t_min, S + 1) with one network call
per step, drawing z_s from the posterior q(z_s | z_t, x = p) with p the model's clean-token
distribution.  At k > 0 tokens can change at every step (unmask, refine, re-mask), so MDLM's
"skip the network when nothing changed" cache does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from xdlm.diffusion.kernels.dispatch import BACKENDS
from xdlm.diffusion.llada_sampling import LLaDASampler
from xdlm.diffusion.process import XDLM
from xdlm.diffusion.schedules import Schedule
from xdlm.registry import Registry

SAMPLERS: Registry[type] = Registry("sampler")
SAMPLERS.register("llada")(LLaDASampler)  # block-wise confidence unmasking + XDLM edits

#: denoiser(z_t [B, L] ids, t [B] times) -> logits [B, L, N]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

FINAL_STEPS = ("ancestral", "greedy", "none")


#: What happened to one position in one step (``TrajectoryRecorder.events``).
KEPT, UNMASKED, CHANGED, RENOISED = 0, 1, 2, 3
EVENTS = ("kept", "unmasked", "changed", "renoised")


def transitions(before: torch.Tensor, after: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Per position, what one step did: [B, L] ids before and after -> [B, L] event codes.

    unmasked: [MASK] -> token; re-noised: token -> [MASK]; changed: token a -> token b != a
    (the uniform-noise correction that k > 0 allows and MDLM cannot make); kept: the same id
    (a [MASK] that stays masked is kept too).
    """
    was_mask, is_mask = before == mask_id, after == mask_id
    codes = torch.full_like(before, KEPT)
    codes[was_mask & ~is_mask] = UNMASKED
    codes[~was_mask & is_mask] = RENOISED
    codes[~was_mask & ~is_mask & (before != after)] = CHANGED
    return codes


class TrajectoryRecorder:
    """Keeps every step's tokens and events for the first ``rows`` sequences of a batch.

    ``tokens[0]`` is z at t = 1 (the prior draw), ``tokens[j]`` the state after step j;
    ``events[j - 1]`` says what step j did to each position (``transitions``); ``times[j]`` is
    the time after step j (1.0 first).  Lists of [rows, L] CPU tensors.
    """

    def __init__(self, rows: int = 1) -> None:
        self.rows = int(rows)
        self.mask_id = -1
        self.tokens: list[torch.Tensor] = []
        self.events: list[torch.Tensor] = []
        self.times: list[float] = []

    def start(self, z: torch.Tensor, mask_id: int, t: float = 1.0) -> None:
        self.mask_id = int(mask_id)
        self.tokens, self.events, self.times = [z[: self.rows].detach().cpu().clone()], [], [float(t)]

    def step(self, z: torch.Tensor, s: float) -> None:
        after = z[: self.rows].detach().cpu().clone()
        self.events.append(transitions(self.tokens[-1], after, self.mask_id))
        self.tokens.append(after)
        self.times.append(float(s))


@dataclass
class SamplerState:
    """The tokens after step ``step`` (1-based), which moved them from time t to time s."""

    step: int
    t: float
    s: float
    z: torch.Tensor


@SAMPLERS.register("ancestral")
class AncestralSampler:
    """Ancestral sampling through the closed-form posterior.

    final_step: ``ancestral`` draws the last step with alpha_s = 1 (fully clean); ``greedy``
    takes the argmax of that last posterior; ``none`` stops at t_min like every other step.
    backend: how ``XDLM.sample_step`` draws each step: ``torch`` (default) is the dense
    reference; ``chunked`` / ``triton`` / ``auto`` stream the vocabulary without a [B, L, N]
    probability tensor and agree with it in distribution (different random streams).
    """

    def __init__(
        self,
        process: XDLM,
        schedule: Schedule,
        steps: int,
        final_step: str = "ancestral",
        top_p: float | None = None,
        gumbel_float64: bool = True,
        t_min: float = 1e-3,
        backend: str = "torch",
    ) -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if final_step not in FINAL_STEPS:
            raise ValueError(f"final_step must be one of {', '.join(FINAL_STEPS)}, got {final_step!r}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"t_min must be in (0, 1), got {t_min}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.process = process
        self.schedule = schedule
        self.steps = int(steps)
        self.final_step = final_step
        self.top_p = top_p
        self.gumbel_float64 = gumbel_float64
        self.t_min = t_min
        self.backend = backend

    def time_grid(self) -> torch.Tensor:
        """t_0 = 1 > t_1 > ... > t_S = t_min: [S + 1] (float64)."""
        return torch.linspace(1.0, self.t_min, self.steps + 1, dtype=torch.float64)

    def iterate(
        self,
        denoiser: Denoiser,
        shape: tuple[int, int] | None = None,
        *,
        z_init: torch.Tensor | None = None,
        fixed_mask: torch.Tensor | None = None,
        fixed_tokens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device=None,
        recorder: TrajectoryRecorder | None = None,
    ) -> Iterator[SamplerState]:
        """Yield the state after every step; the last one holds the samples.

        Start from ``z_init`` or a prior draw of ``shape``.  Positions where ``fixed_mask`` [B, L]
        is True hold ``fixed_tokens`` throughout (prefix / infilling conditioning): they are never
        noised, so the network always sees them clean.  A ``recorder`` is shown the start and
        every step (it copies a few rows; the draws are the same with or without it).
        """
        proc = self.process
        if z_init is None:
            if shape is None:
                raise ValueError("give either shape or z_init")
            z = proc.sample_prior(tuple(shape), generator=generator, device=device)
        else:
            z = z_init.clone()
        if fixed_mask is not None:
            if fixed_tokens is None or fixed_tokens.shape != z.shape or fixed_mask.shape != z.shape:
                raise ValueError(
                    f"fixed_mask and fixed_tokens must both have the sample shape {tuple(z.shape)}"
                )
            z = torch.where(fixed_mask, fixed_tokens, z)
        grid = self.time_grid()
        if recorder is not None:
            recorder.start(z, proc.mask_id, float(grid[0]))
        for j in range(self.steps):
            last = j == self.steps - 1
            t, s = float(grid[j]), float(grid[j + 1])
            t_vec = torch.full((z.shape[0],), t, device=z.device)
            logits = denoiser(z, t_vec)
            alpha_t = self.schedule.alpha(torch.tensor(t, dtype=torch.float64))
            if last and self.final_step != "none":
                alpha_s = torch.ones((), dtype=torch.float64)
            else:
                alpha_s = self.schedule.alpha(torch.tensor(s, dtype=torch.float64))
            # posterior with x = p (nucleus-truncated), then a draw (or its argmax at a greedy end)
            z = proc.sample_step(
                logits, z, alpha_s, alpha_t, self.top_p, generator, backend=self.backend,
                greedy=last and self.final_step == "greedy", gumbel_float64=self.gumbel_float64,
                validate=False,
            ).tokens
            if fixed_mask is not None:
                z = torch.where(fixed_mask, fixed_tokens, z)
            s_reached = 0.0 if last and self.final_step != "none" else s
            if recorder is not None:
                recorder.step(z, s_reached)
            yield SamplerState(step=j + 1, t=t, s=s_reached, z=z)

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, shape: tuple[int, int] | None = None, **kwargs) -> torch.Tensor:
        """Run every step and return the final tokens [B, L]."""
        state = None
        for state in self.iterate(denoiser, shape, **kwargs):  # noqa: B007 (the last one is the result)
            pass
        return state.z


def get(name: str, process: XDLM, schedule: Schedule, **options):
    """Build a sampler by registry name (unknown names list the available ones)."""
    return SAMPLERS.get(name)(process, schedule, **options)


def available() -> list[str]:
    return SAMPLERS.available()
