"""Chunked PyTorch backend for the NELBO statistics: the pure-PyTorch twin of ``triton_nelbo``.

Both functions walk the rows of a [T, V] logits tensor in chunks of C rows, so no temporary is
larger than C x V (a few of them are alive at once); the definitions are in ``stats``.

- ``forward``: per chunk, upcast to the compute dtype, the masked log-sum-exp, the two gathers,
  sum_e softplus and sum_e sigmoid.  Writes 5 [T] vectors, keeps nothing else.
- ``backward``: per chunk, recompute p and sigma from the logits and the saved lse, and write the
  gradient chunk into ``out`` (which may be the logits buffer itself: in-place gradient).

The forward reuses the eager reference's own operations (``clean_log_partition``, ``F.softplus``
over the two slices around the mask id), row by row, so its statistics match ``torch`` to the
last bit in practice; only the gradient's arithmetic differs (one fused expression instead of
autograd's chain), within float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xdlm.diffusion.kernels.stats import RowStats
from xdlm.diffusion.nelbo import clean_log_partition


def _slices(rows: torch.Tensor, mask_id: int) -> list[torch.Tensor]:
    """The non-empty column slices on either side of the mask id (views)."""
    parts = [rows[:, :mask_id], rows[:, mask_id + 1 :]]
    return [part for part in parts if part.shape[-1] > 0]


@torch.no_grad()
def forward(
    logits: torch.Tensor,
    x: torch.Tensor,
    z: torch.Tensor,
    shift: torch.Tensor | None,
    mask_id: int,
    dtype: torch.dtype,
    chunk: int,
) -> RowStats:
    """Row statistics of logits [T, V] (any float dtype) in ``dtype``; x, z: [T] int64;
    shift: [T] or None.  Returns ``RowStats`` of [T] vectors."""
    T = logits.shape[0]
    new = lambda: torch.empty(T, dtype=dtype, device=logits.device)  # noqa: E731
    lse, logp_z, logp_x = new(), new(), new()
    sum_log1p = new() if shift is not None else None
    sum_sigmoid = new() if shift is not None else None
    for start in range(0, T, chunk):
        rows = slice(start, start + chunk)
        part = logits[rows].to(dtype)  # a C x V copy only when the dtype changes
        lse_c = clean_log_partition(part, mask_id)
        lse[rows] = lse_c
        logp_x[rows] = part.gather(-1, x[rows, None]).squeeze(-1) - lse_c
        lz = part.gather(-1, z[rows, None]).squeeze(-1) - lse_c
        logp_z[rows] = lz.masked_fill(z[rows] == mask_id, float("-inf"))
        if shift is not None:
            offset = (shift[rows].to(dtype) - lse_c).unsqueeze(-1)
            sp = torch.zeros_like(lse_c)
            sg = torch.zeros_like(lse_c)
            for piece in _slices(part, mask_id):
                a = piece + offset
                sp = sp + F.softplus(a).sum(-1)
                sg = sg + a.sigmoid_().sum(-1)  # a is ours: sigmoid in place
            sum_log1p[rows] = sp
            sum_sigmoid[rows] = sg
    return RowStats(lse, logp_z, logp_x, sum_log1p, sum_sigmoid)


@torch.no_grad()
def backward(
    logits: torch.Tensor,
    x: torch.Tensor,
    z: torch.Tensor,
    shift: torch.Tensor | None,
    stats: RowStats,
    g_z: torch.Tensor,
    g_x: torch.Tensor,
    g_s: torch.Tensor | None,
    mask_id: int,
    dtype: torch.dtype,
    out: torch.Tensor,
    chunk: int,
    col_offset: int = 0,
) -> torch.Tensor:
    """Write d loss / d logits [T, W] into ``out`` (same shape; may alias ``logits``).

    g_z, g_x, g_s: [T] upstream gradients of logp_z, logp_x, sum_log1p (g_s None when k = 0).
    Formula in ``stats``.  ``logits`` may be a block of W columns starting at id ``col_offset``
    (the fused LM head's vocabulary blocks): the gradient of any block needs only the saved
    per-row lse and sum_sigmoid.  Returns ``out``.
    """
    T, W = logits.shape
    g_z = torch.where(z == mask_id, torch.zeros_like(g_z), g_z).to(dtype)  # logp_z is constant there
    g_x = g_x.to(dtype)
    coef = g_z + g_x
    # the one-hot terms land only in the rows whose id falls inside this block of columns
    z_local, x_local = z - col_offset, x - col_offset
    g_z = torch.where((z_local >= 0) & (z_local < W), g_z, torch.zeros_like(g_z))
    g_x = torch.where((x_local >= 0) & (x_local < W), g_x, torch.zeros_like(g_x))
    z_local, x_local = z_local.clamp(0, W - 1), x_local.clamp(0, W - 1)
    mask_local = mask_id - col_offset
    if shift is not None:
        g_s = g_s.to(dtype)
        coef = coef + g_s * stats.sum_sigmoid
    for start in range(0, T, chunk):
        rows = slice(start, start + chunk)
        dst = out[rows]
        # work in the output rows themselves when they have the compute dtype (one C x V
        # temporary less; also right when ``out`` aliases the logits: elementwise in place)
        work = dst if dst.dtype == dtype else torch.empty(dst.shape, dtype=dtype, device=dst.device)
        torch.sub(logits[rows].to(dtype), stats.lse[rows, None], out=work)  # log p
        if shift is not None:
            sigma = torch.add(work, shift[rows, None].to(dtype)).sigmoid_()  # the one temporary
            sigma.mul_(g_s[rows, None])
        work.exp_().mul_(-coef[rows, None])  # -p_e (g_z + g_x + g_s sum_sigmoid)
        if shift is not None:
            work.add_(sigma)
            del sigma
        work.scatter_add_(1, z_local[rows, None], g_z[rows, None])
        work.scatter_add_(1, x_local[rows, None], g_x[rows, None])
        if 0 <= mask_local < W:
            work[:, mask_local] = 0.0  # p_m = sigma_m = 0: the mask logit gets no gradient
        if work is not dst:
            dst.copy_(work)
    return out
