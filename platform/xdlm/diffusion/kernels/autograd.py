"""``StatisticsFunction``: the NELBO statistics of a [T, V] logits tensor as one autograd node.

Forward saves only per-row vectors (lse, sum_sigmoid: 2 x T floats) besides the logits it reads;
backward writes d loss / d logits once (formula in ``stats``), optionally into the logits buffer
itself.  Both passes dispatch to a backend module with the signature of
``chunked.forward`` / ``chunked.backward`` (``triton_nelbo`` has the same).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from xdlm.diffusion.kernels.stats import RowStats
from xdlm.diffusion.nelbo import TokenStatistics


def backend_module(name: str) -> ModuleType:
    """'chunked' or 'triton' -> the module holding its ``forward`` / ``backward`` (Triton lazily)."""
    if name == "chunked":
        return importlib.import_module("xdlm.diffusion.kernels.chunked")
    if name == "triton":
        return importlib.import_module("xdlm.diffusion.kernels.triton_nelbo")
    raise ValueError(f"no statistics kernels for backend {name!r}")


class StatisticsFunction(torch.autograd.Function):
    """(logits [T, V], x [T], z [T], shift [T] | None) -> (logp_z, logp_x, sum_log1p), each [T].

    sum_log1p is an all-zero placeholder when shift is None (k = 0).  Gradients flow to the
    logits and to shift (d sum_log1p / d shift = sum_sigmoid); x and z are ids.
    """

    @staticmethod
    def forward(ctx, logits, x, z, shift, backend, mask_id, dtype, chunk, inplace):
        impl = backend_module(backend)
        stats = impl.forward(logits, x, z, shift, mask_id, dtype, chunk)
        ctx.impl, ctx.mask_id, ctx.dtype, ctx.chunk, ctx.inplace = impl, mask_id, dtype, chunk, inplace
        ctx.has_shift = shift is not None
        ctx.save_for_backward(logits, x, z, shift, stats.lse, stats.sum_sigmoid)
        sum_log1p = stats.sum_log1p if shift is not None else torch.zeros_like(stats.lse)
        if shift is None:
            ctx.mark_non_differentiable(sum_log1p)
        return stats.logp_z, stats.logp_x, sum_log1p

    @staticmethod
    def backward(ctx, g_z, g_x, g_s):
        logits, x, z, shift, lse, sum_sigmoid = ctx.saved_tensors
        grad_logits = grad_shift = None
        if ctx.needs_input_grad[0]:
            stats = RowStats(lse, None, None, None, sum_sigmoid)
            # in place: the gradient overwrites the logits (their storage is then the grad).
            out = logits if ctx.inplace else torch.empty_like(logits)
            grad_logits = ctx.impl.backward(
                logits, x, z, shift, stats, g_z, g_x, g_s if ctx.has_shift else None,
                ctx.mask_id, ctx.dtype, out, ctx.chunk,
            )
        if ctx.has_shift and ctx.needs_input_grad[3]:
            grad_shift = (g_s * sum_sigmoid).to(shift.dtype)
        return grad_logits, None, None, grad_shift, None, None, None, None, None


def statistics(
    logits: torch.Tensor,
    x: torch.Tensor,
    z: torch.Tensor,
    shift: torch.Tensor | None,
    *,
    backend: str,
    mask_id: int,
    dtype: torch.dtype,
    chunk: int,
    inplace: bool = False,
) -> TokenStatistics:
    """``TokenStatistics`` of logits [T, V] through ``StatisticsFunction``; each field [T]."""
    logp_z, logp_x, sum_log1p = StatisticsFunction.apply(
        logits, x, z, shift, backend, mask_id, dtype, chunk, inplace
    )
    return TokenStatistics(logp_z, logp_x, sum_log1p if shift is not None else None)
