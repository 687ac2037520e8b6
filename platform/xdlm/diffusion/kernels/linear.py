"""LM head + NELBO statistics fused: the [T, V] logits never exist at once.

For hidden h [T, D], head weight W [V, D] and bias b [V]:

    forward, chunks c of C tokens:
        logits_c = h_c W^T + b_c              (C x V in the inputs' dtype, then freed)
        stats_c  = row kernel(logits_c)       (keeps lse and sum_sigmoid: 2 floats per token)

    backward, blocks j of B vocabulary ids (when T <= V, the usual case):
        logits_j = h W_j^T + b_j              (T x B, recomputed: the gradient of a block of
        G_j      = d loss / d logits_j          columns needs only the saved lse, sum_sigmoid)
        dW_j = G_j^T h   db_j = sum_rows G_j  (each written once)      dh += G_j W_j

    backward, chunks c of C tokens (when T > V):
        logits_c recomputed, G_c in place      dh_c = G_c W   dW += G_c^T h_c   db += sum G_c

The two backward schedules hold the same C x V (or T x B) buffers; they differ in what is
re-accumulated per step: dh (T x D) for vocabulary blocks, dW (V x D) for token chunks, so the
smaller of T and V picks the schedule.  Peak extra memory: one chunk or block of logits and the
row kernel's temporaries, plus dW and dh (which every path produces) and a float32 accumulator
for the re-accumulated one when the inputs are 16-bit (rounded once, like one big matmul).
Cost: 4 matmuls instead of 3 (the recompute), the price of never storing the logits.  The loss
formula on the [T] statistics is shared with ``loss.nelbo``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import xdlm.diffusion.kernels.dispatch as dispatch
from xdlm.diffusion.kernels.autograd import backend_module
from xdlm.diffusion.kernels.stats import RowStats
from xdlm.diffusion.nelbo import TokenStatistics, log_ratio, nelbo_from_statistics, nelbo_torch


class LinearStatisticsFunction(torch.autograd.Function):
    """(hidden [T, D], weight [V, D], bias [V] | None, x [T], z [T], shift [T] | None)
    -> (logp_z, logp_x, sum_log1p), each [T]; gradients for hidden, weight, bias and shift."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, x, z, shift, backend, mask_id, dtype, chunk, block, schedule):
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
        ctx.block, ctx.schedule = block, schedule
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
        need = ctx.needs_input_grad[:3]
        grads = (None, None, None)
        if any(need):
            stats = RowStats(lse, None, None, None, sum_sigmoid)
            g_s = g_s if ctx.has_shift else None
            step = _backward_vocab_blocks if ctx.schedule == "vocab" else _backward_token_chunks
            grads = step(ctx, hidden, weight, bias, x, z, shift, stats, g_z, g_x, g_s, need)
        grad_shift = None
        if ctx.has_shift and ctx.needs_input_grad[5]:
            grad_shift = (g_s * sum_sigmoid).to(shift.dtype)
        return (*grads, None, None, grad_shift, None, None, None, None, None, None)


def _sum_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype a sum of many ``like``-typed terms is taken in: float32 for 16-bit inputs (then
    rounded once, like one big matmul), the inputs' own dtype otherwise (float64 stays float64)."""
    return torch.float32 if like.dtype in (torch.float16, torch.bfloat16) else like.dtype


def _accumulator(like: torch.Tensor) -> torch.Tensor:
    """Zeros shaped like ``like``, in ``_sum_dtype(like)`` (a sum over many matmuls)."""
    return torch.zeros(like.shape, dtype=_sum_dtype(like), device=like.device)


def _backward_vocab_blocks(ctx, hidden, weight, bias, x, z, shift, stats, g_z, g_x, g_s, need):
    """dW, db block by block (written once); dh accumulated over blocks."""
    need_h, need_w, need_b = need
    V, block = weight.shape[0], ctx.block
    grad_h = _accumulator(hidden) if need_h else None
    grad_w = torch.empty_like(weight) if need_w else None
    grad_b = torch.empty_like(bias) if need_b and bias is not None else None
    for v0 in range(0, V, block):
        cols = slice(v0, v0 + block)
        w_j = weight[cols]
        logits = F.linear(hidden, w_j, None if bias is None else bias[cols])  # [T, B]
        grad = ctx.impl.backward(  # in place over the recomputed block
            logits, x, z, shift, stats, g_z, g_x, g_s, ctx.mask_id, ctx.dtype, logits,
            logits.shape[0], v0,
        )
        if need_h:
            if grad_h.dtype == grad.dtype:
                grad_h.addmm_(grad, w_j)
            else:
                grad_h.add_(grad @ w_j)
        if need_w:
            torch.mm(grad.t(), hidden, out=grad_w[cols])
        if grad_b is not None:
            # db_j = sum over the T rows of G_j, one block at a time: summed in float32 only
            # when the head is 16-bit (a float64 head keeps float64 throughout)
            grad_b[cols] = grad.sum(0, dtype=_sum_dtype(grad_b)).to(grad_b.dtype)
        del logits, grad
    return (None if grad_h is None else grad_h.to(hidden.dtype)), grad_w, grad_b


def _backward_token_chunks(ctx, hidden, weight, bias, x, z, shift, stats, g_z, g_x, g_s, need):
    """dh chunk by chunk (written once); dW, db accumulated over chunks."""
    need_h, need_w, need_b = need
    T, chunk = hidden.shape[0], ctx.chunk
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = _accumulator(weight) if need_w else None
    grad_b = _accumulator(bias) if need_b and bias is not None else None
    for start in range(0, T, chunk):
        rows = slice(start, start + chunk)
        h = hidden[rows]
        logits = F.linear(h, weight, bias)  # recompute this chunk's logits
        chunk_stats = RowStats(stats.lse[rows], None, None, None,
                               None if stats.sum_sigmoid is None else stats.sum_sigmoid[rows])
        grad = ctx.impl.backward(  # in place: the chunk is ours
            logits, x[rows], z[rows], None if shift is None else shift[rows], chunk_stats,
            g_z[rows], g_x[rows], None if g_s is None else g_s[rows],
            ctx.mask_id, ctx.dtype, logits, chunk,
        )
        if need_h:
            torch.mm(grad, weight, out=grad_h[rows])
        if need_w:
            if grad_w.dtype == grad.dtype:
                grad_w.addmm_(grad.t(), h)
            else:
                grad_w.add_(grad.t() @ h)
        if grad_b is not None:
            grad_b.add_(grad.sum(0, dtype=grad_b.dtype))
        del logits, grad
    return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype))


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
    chunk_vocab: int | None = None,
) -> torch.Tensor:
    """l_t per token for logits = hidden W^T + b, without materialising them (unless 'torch').

    hidden: [..., D]; weight: [V, D]; bias: [V] or None; x0, z_t: [...]; alpha_t, dalpha_t
    broadcast to x0.shape in ``dtype``.  Returns [...] in ``dtype``.  ``chunk_tokens``: rows per
    forward chunk (and per backward chunk when T > V); ``chunk_vocab``: columns per backward
    block (when T <= V); both default to a memory budget (``dispatch.CHUNK_ELEMENTS``).
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
    T = h.shape[0]
    # 4x the default budget: every step also re-accumulates dh (T x D) or dW (V x D)
    chunk = dispatch.chunk_rows(T, vocab_size, chunk_tokens, h.device, scale=4)
    block = dispatch.chunk_rows(vocab_size, T, chunk_vocab, h.device, scale=4)
    schedule = "vocab" if T <= vocab_size else "tokens"
    logp_z, logp_x, sum_log1p = LinearStatisticsFunction.apply(
        h, weight, bias, x, z, shift, name, mask_id, dtype, chunk, block, schedule
    )
    stats = TokenStatistics(logp_z, logp_x, sum_log1p if shift is not None else None)
    loss = nelbo_from_statistics(
        stats, x, z, alpha.to(logp_x.dtype), dalpha_t.reshape(-1).to(logp_x.dtype),
        vocab_size, mask_id, k,
    )
    return loss.to(dtype).view(x0.shape)
