"""Per-token NELBO on any backend: statistics from a kernel, the formula from ``xdlm.diffusion``.

    l_t = nelbo_from_statistics(logp_z, logp_x, sum_log1p)        (xdlm/diffusion/nelbo.py)

The logits enter the loss only through the three [T] statistics, so every backend computes just
those (``autograd.StatisticsFunction``) and the [T]-sized remainder, with its autograd, is the
eager formula shared by all backends.
"""

from __future__ import annotations

import torch

import xdlm.diffusion.kernels.dispatch as dispatch
from xdlm.diffusion.kernels.autograd import statistics
from xdlm.diffusion.nelbo import log_ratio, nelbo_from_statistics, nelbo_torch


def nelbo(
    logits: torch.Tensor,
    x0: torch.Tensor,
    z_t: torch.Tensor,
    alpha_t: torch.Tensor,
    dalpha_t: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    k: float,
    *,
    backend: str = "auto",
    dtype: torch.dtype = torch.float32,
    inplace_backward: bool = False,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """l_t per token.  logits: [..., N] (fp16 / bf16 / fp32 / fp64, any strides); x0, z_t: [...];
    alpha_t, dalpha_t: already broadcast to x0.shape in ``dtype``.  Returns [...] in ``dtype``.

    ``inplace_backward``: the backward writes d loss / d logits into the logits' own storage
    (no extra [..., N] buffer), destroying them; only for logits nothing else will read.
    """
    dispatch.check_logits("logits", logits)
    name = dispatch.resolve(backend, logits.device, dtype)
    if name == "torch":
        return nelbo_torch(logits.to(dtype), x0, z_t, alpha_t, dalpha_t, vocab_size, mask_id, k)
    rows = dispatch.as_rows(logits, need_view=inplace_backward)
    x, z = dispatch.as_ids(x0), dispatch.as_ids(z_t)
    alpha = alpha_t.reshape(-1)
    shift = log_ratio(alpha, vocab_size, k)
    chunk = dispatch.chunk_rows(rows.shape[0], vocab_size, chunk_tokens, rows.device)
    stats = statistics(
        rows, x, z, shift, backend=name, mask_id=mask_id, dtype=dtype, chunk=chunk,
        inplace=inplace_backward,
    )
    loss = nelbo_from_statistics(
        stats, x, z, alpha.to(stats.logp_x.dtype), dalpha_t.reshape(-1).to(stats.logp_x.dtype),
        vocab_size, mask_id, k,
    )
    return loss.to(dtype).view(x0.shape)
