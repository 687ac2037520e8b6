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

from xdlm.config import ConfigError, JobConfig
from xdlm.data.datasets import Datasets
from xdlm.diffusion import XDLM, schedules
from xdlm.diffusion.schedules import Schedule
from xdlm.models import DenoisingContext, ModelConfig, backbone_info, build_model
from xdlm.models.hf import HF_BACKBONE, resolve_vocabulary

#: objective(model, x0 [B, L], t [B], generator) -> scalar loss
Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator | None], torch.Tensor]


class Process(NamedTuple):
    """The forward process and its noise schedule, as configured by ``job.diffusion``."""

    xdlm: XDLM
    schedule: Schedule


def build_process(job: JobConfig, vocab_size: int, mask_id: int) -> Process:
    """The one place a job's ``diffusion`` section becomes a process: vocabulary and mask id come
    from the tokenizer; for a Hugging Face backbone from its model config (which must hold the
    tokenizer's ids) and ``model.hf.mask_id`` (``xdlm.models.hf.resolve_vocabulary``)."""
    d = job.diffusion
    if job.model.backbone == HF_BACKBONE:
        vocab_size, mask_id = resolve_vocabulary(job.model.hf, vocab_size, mask_id)
    return Process(XDLM(vocab_size, mask_id, d.k), schedules.get(d.schedule, **d.schedule_params))


def build_denoiser(job: JobConfig, data: Datasets, process: Process) -> torch.nn.Module:
    """The job's backbone for ``data``'s vocabulary.  A backbone that is exact for its source (the
    ``oracle``) is built from the source's law, the process's k and mask id and the schedule;
    every other backbone is ``build_model(job.model, vocab_size)``."""
    vocab_size = data.tokenizer.vocab_size
    if not backbone_info(job.model.backbone).needs_context:
        return build_model(job.model, vocab_size)
    return build_model(job.model, vocab_size, context=denoising_context(data, process, job.model.backbone))


def build_oracle(data: Datasets, process: Process, leave_one_out: bool = True) -> torch.nn.Module:
    """The exact denoiser of ``data`` (a source with ``exact_law``) under ``process``; with
    ``leave_one_out=False`` the full posterior instead (the wrong plug-in, for comparisons)."""
    context = denoising_context(data, process, "oracle")
    oracle = build_model(ModelConfig(backbone="oracle"), data.tokenizer.vocab_size, context=context)
    oracle.leave_one_out = leave_one_out
    return oracle


def denoising_context(data: Datasets, process: Process, backbone: str) -> DenoisingContext:
    """What an exact backbone needs: ``data.exact_law``, k, the mask id and alpha(t)."""
    if data.exact_law is None:
        raise ConfigError(f"model.backbone: {backbone!r} needs a source with a known law (data.source: "
                          f"markov); data.source {data.config.source!r} has none")
    return DenoisingContext(data.exact_law, process.xdlm.k, process.xdlm.mask_id, process.schedule.alpha)


def diffusion_loss(
    model: torch.nn.Module,
    process: XDLM,
    schedule: Schedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    generator: torch.Generator | None = None,
    backend: str = "auto",
    fused_head: bool = False,
) -> torch.Tensor:
    """Token-mean NELBO estimate: x0 [B, L] clean ids, t [B] times -> scalar.

    One time per sequence (alpha_t [B, 1]); the estimate of E_t E_{z_t} l_t is unbiased for
    t ~ U[t_min, 1] (stratified across the global batch by the caller).  ``fused_head``: the
    model is handed ``XDLM.linear_nelbo`` bound to this batch (``model(z_t, t, head_loss=f)``)
    and applies it to its hidden states and output head inside its own forward, where ZeRO-3
    has gathered the head's weight; the [B, L, V] logits are never held
    (``BackboneInfo.fused_head``).
    """
    t = t.to(torch.float64)
    alpha_t = schedule.alpha(t)[:, None].to(x0.device)
    dalpha_t = schedule.dalpha(t)[:, None].to(x0.device)
    z_t = process.sample_marginal(x0, alpha_t, generator=generator)
    if fused_head:
        def head_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return process.linear_nelbo(hidden, weight, x0, z_t, alpha_t, dalpha_t, bias,
                                        backend=backend, validate=False)

        return model(z_t, t.to(device=x0.device, dtype=torch.float32), head_loss=head_loss).mean()
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
        fused = backbone_info(job.model.backbone).fused_head
        return lambda model, x0, t, generator=None: diffusion_loss(
            model, process.xdlm, process.schedule, x0, t, generator, backend, fused)
    raise ValueError(f"model.backbone {job.model.backbone!r} declares an unknown objective {objective!r}")
