"""LM head + NELBO statistics fused over token chunks: the [T, V] logits never exist at once.

For hidden h [T, D], head weight W [V, D] and bias b [V], chunk c of C tokens:

    forward   logits_c = h_c W^T + b            (C x V, in the inputs' dtype, then freed)
              stats_c  = statistics(logits_c)   (the backend's row kernel; keeps lse, sum_sigmoid)
    backward  logits_c = h_c W^T + b            (recomputed: one extra matmul per chunk)
              G_c      = d loss / d logits_c    (written over logits_c in place)
              dh_c     = G_c W                  dW += G_c^T h_c          db += sum_rows G_c

Peak extra memory: one C x V logits chunk and the row kernel's temporaries, plus dW (and a
float32 accumulator for dW / db when the weights are 16-bit, so the sum over chunks does not
round at every chunk).  Cost: 4 matmuls instead of 3 (the recompute), the price of never storing
the logits.  The loss formula on the [T] statistics is shared with ``loss.nelbo``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xdlm.diffusion.nelbo import TokenStatistics, log_ratio, nelbo_from_statistics, nelbo_torch
from xdlm.kernels import dispatch
from xdlm.kernels.autograd import backend_module
from xdlm.kernels.stats import RowStats


class LinearStatisticsFunction(torch.autograd.Function):
    """(hidden [T, D], weight [V, D], bias [V] | None, x [T], z [T], shift [T] | None)
    -> (logp_z, logp_x, sum_log1p), each [T]; gradients for hidden, weight, bias and shift."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, x, z, shift, backend, mask_id, dtype, chunk):
        impl = backend_module(backend)
        T = hidden.shape[0]
        parts: list[RowStats] = []
        for start in range(0, T, chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(hidden[rows], weight, bias)
            parts.append(
                impl.forward(logits, x[rows], z[rows], None if shift is None else shift[rows],
                             mask_id, dtype, chunk)
            )
            del logits
        cat = lambda i: torch.cat([p[i] for p in parts]) if parts and parts[0][i] is not None else None  # noqa: E731
        lse, logp_z, logp_x, sum_log1p, sum_sigmoid = (cat(i) for i in range(5))
        if lse is None:  # T == 0
            lse = logp_z = logp_x = hidden.new_empty(0, dtype=dtype)
        ctx.impl, ctx.mask_id, ctx.dtype, ctx.chunk = impl, mask_id, dtype, chunk
        ctx.has_shift = shift is not None
        ctx.has_bias = bias is not None
        ctx.save_for_backward(hidden, weight, bias, x, z, shift, lse, sum_sigmoid)
        if shift is None:
            sum_log1p = torch.zeros_like(lse)
            ctx.mark_non_differentiable(sum_log1p)
        return logp_z, logp_x, sum_log1p

    @staticmethod
    def backward(ctx, g_z, g_x, g_s):
        hidden, weight, bias, x, z, shift, lse, sum_sigmoid = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        T, chunk = hidden.shape[0], ctx.chunk
        grad_h = torch.empty_like(hidden) if need_h else None
        # 16-bit weights: accumulate the chunk sums in float32 (like one big matmul would)
        acc_dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
        grad_b = (
            torch.zeros(weight.shape[0], dtype=acc_dtype, device=weight.device)
            if need_b and ctx.has_bias else None
        )
        if need_h or need_w or need_b:
            for start in range(0, T, chunk):
                rows = slice(start, start + chunk)
                h = hidden[rows]
                logits = F.linear(h, weight, bias)  # recompute this chunk's logits
                stats = RowStats(lse[rows], None, None, None,
                                 None if sum_sigmoid is None else sum_sigmoid[rows])
                grad = ctx.impl.backward(
                    logits, x[rows], z[rows], None if shift is None else shift[rows], stats,
                    g_z[rows], g_x[rows], g_s[rows] if ctx.has_shift else None,
                    ctx.mask_id, ctx.dtype, logits, chunk,  # in place: the chunk is ours
                )
                if need_h:
                    torch.mm(grad, weight, out=grad_h[rows])
                if need_w:
                    if acc_dtype == grad.dtype:
                        grad_w.addmm_(grad.t(), h)
                    else:
                        grad_w.add_(grad.t() @ h)
                if grad_b is not None:
                    grad_b.add_(grad.sum(0, dtype=acc_dtype))
                del logits, grad
        grad_shift = None
        if ctx.has_shift and ctx.needs_input_grad[5]:
            grad_shift = (g_s * sum_sigmoid).to(shift.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, grad_shift, None, None, None, None


def linear_nelbo(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
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
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """l_t per token for logits = hidden W^T + b, without materialising them (unless 'torch').

    hidden: [..., D]; weight: [V, D]; bias: [V] or None; x0, z_t: [...]; alpha_t, dalpha_t
    broadcast to x0.shape in ``dtype``.  Returns [...] in ``dtype``.
    """
    for name, t in (("hidden", hidden), ("weight", weight)):
        dispatch.check_logits(name, t)
    if weight.dim() != 2 or weight.shape[0] != vocab_size or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"weight must be [V, D] = [{vocab_size}, {hidden.shape[-1]}] for hidden of shape "
            f"{tuple(hidden.shape)}, got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (vocab_size,):
        raise ValueError(f"bias must be [V] = [{vocab_size}], got {tuple(bias.shape)}")
    if hidden.shape[:-1] != x0.shape:
        raise ValueError(f"hidden has shape {tuple(hidden.shape)}, expected {tuple(x0.shape)} + (D,)")
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(
            f"hidden, weight and bias must share a dtype (as nn.Linear needs), got {hidden.dtype}, "
            f"{weight.dtype}" + (f", {bias.dtype}" if bias is not None else "")
        )
    name = dispatch.resolve(backend, hidden.device, dtype)
    if name == "torch":
        logits = F.linear(hidden, weight, bias)
        return nelbo_torch(logits.to(dtype), x0, z_t, alpha_t, dalpha_t, vocab_size, mask_id, k)
    h = hidden.reshape(-1, hidden.shape[-1])
    x, z = dispatch.as_ids(x0), dispatch.as_ids(z_t)
    alpha = alpha_t.reshape(-1)
    shift = log_ratio(alpha, vocab_size, k)
    chunk = dispatch.chunk_rows(h.shape[0], vocab_size, chunk_tokens)
    logp_z, logp_x, sum_log1p = LinearStatisticsFunction.apply(
        h, weight, bias, x, z, shift, name, mask_id, dtype, chunk
    )
    stats = TokenStatistics(logp_z, logp_x, sum_log1p if shift is not None else None)
    loss = nelbo_from_statistics(
        stats, x, z, alpha.to(logp_x.dtype), dalpha_t.reshape(-1).to(logp_x.dtype),
        vocab_size, mask_id, k,
    )
    return loss.to(dtype).view(x0.shape)
