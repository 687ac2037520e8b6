"""What a model is trained and scored on: the XDLM process built from a job, and the loss of
each backbone on one micro-batch.  Training (``xdlm.train``) and evaluation (``xdlm.eval``) both
build theirs here, so the two can never disagree about the process or the loss.

- diffusion (the DiT denoiser): noise x_0 at the given times, denoise, token-mean NELBO;
- autoregressive (the causal baseline / evaluator): next-token cross-entropy.
Both return a scalar whose exp is a perplexity (an upper bound for the diffusion NELBO).  Which
one a backbone is trained with is declared at its registration (``xdlm.models.backbone_info``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from xdlm.config import JobConfig
from xdlm.diffusion import XDLM, schedules
from xdlm.diffusion.schedules import Schedule
from xdlm.models import backbone_info

#: objective(model, x0 [B, L], t [B], generator) -> scalar loss
Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator | None], torch.Tensor]


class Process(NamedTuple):
    """The forward process and its noise schedule, as configured by ``job.diffusion``."""

    xdlm: XDLM
    schedule: Schedule


def build_process(job: JobConfig, vocab_size: int, mask_id: int) -> Process:
    """The one place a job's ``diffusion`` section becomes a process: vocabulary and mask id come
    from the tokenizer."""
    d = job.diffusion
    return Process(XDLM(vocab_size, mask_id, d.k), schedules.get(d.schedule, **d.schedule_params))


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


def make_objective(job: JobConfig, process: Process) -> Objective:
    """The loss the job's backbone is trained with; ``diffusion.loss_backend`` picks the NELBO
    implementation (docs/kernels.md)."""
    objective = backbone_info(job.model.backbone).objective
    if objective == "autoregressive":
        return lambda model, x0, t, generator=None: autoregressive_loss(model, x0)
    if objective == "diffusion":
        backend = job.diffusion.loss_backend
        return lambda model, x0, t, generator=None: diffusion_loss(
            model, process.xdlm, process.schedule, x0, t, generator, backend)
    raise ValueError(f"model.backbone {job.model.backbone!r} declares an unknown objective {objective!r}")
