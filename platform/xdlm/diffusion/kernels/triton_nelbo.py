"""Triton kernels for the NELBO statistics (definitions and gradient in ``stats``).

Each program owns BLOCK_T rows of the [T, V] logits and walks their columns in BLOCK_V tiles.

``_stats_fwd`` (forward), per row block:
  pass 1  reads the row: online max / sum of exp over e != m  -> lse
  pass 2  reads the row again: sum softplus(l - lse + shift) and sum sigmoid(same)
          (skipped at k = 0; when the row fits one tile, pass 1's registers are reused instead)
  gathers l_x and l_z (two scalars per row) and writes 5 floats per row.
  The second pass revisits the row the same program just read, so on a GPU it is served mostly
  from L2; HBM traffic is about one read of the logits.  (softplus(l - lse + shift) is not
  separable in lse, so it cannot be folded into the online pass.)

``_stats_bwd`` (backward), per row block, one pass: reads the row, writes its gradient
  -p_e (g_z + g_x + g_s sum_sigmoid) + g_s sigma_e + g_z [e == z] + g_x [e == x], 0 at e = m,
  in the gradient buffer's dtype; the buffer may be the logits themselves (in-place), since each
  tile is read before the same program overwrites it.

``chunked.forward`` / ``chunked.backward`` are the PyTorch twins; tests compare them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from xdlm.diffusion.kernels.stats import RowStats
from xdlm.diffusion.kernels.triton_common import INTERPRETED, grid, launch_config, softplus_sigmoid

__all__ = ["INTERPRETED", "forward", "backward"]


@triton.jit
def _stats_fwd(
    logits_ptr, stride_t, x_ptr, z_ptr, shift_ptr,
    lse_ptr, logp_z_ptr, logp_x_ptr, sum_log1p_ptr, sum_sigmoid_ptr,
    T, V, mask_id,
    HAS_SHIFT: tl.constexpr, SINGLE_TILE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < T
    base = logits_ptr + rows.to(tl.int64) * stride_t  # [BLOCK_T] row pointers
    cols0 = tl.arange(0, BLOCK_V)

    # pass 1: online log-sum-exp over e != m (masked entries load as -inf and add exp(-inf) = 0)
    if SINGLE_TILE:  # the whole row fits one tile: load it once, keep it for pass 2
        valid = row_ok[:, None] & (cols0[None, :] < V) & (cols0[None, :] != mask_id)
        row = tl.load(base[:, None] + cols0[None, :], mask=valid, other=float("-inf")).to(tl.float32)
        run_max = tl.max(row, 1)
        safe = tl.where(run_max == float("-inf"), 0.0, run_max)
        lse = safe + tl.log(tl.sum(tl.exp(row - safe[:, None]), 1))
    else:
        run_max = tl.full([BLOCK_T], float("-inf"), tl.float32)
        run_sum = tl.zeros([BLOCK_T], tl.float32)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + cols0
            valid = row_ok[:, None] & (cols[None, :] < V) & (cols[None, :] != mask_id)
            tile = tl.load(base[:, None] + cols[None, :], mask=valid, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(run_max, tl.max(tile, 1))
            # a row with nothing finite yet keeps max -inf; shift by 0 there (no -inf - -inf)
            safe = tl.where(new_max == float("-inf"), 0.0, new_max)
            run_sum = run_sum * tl.exp(run_max - safe) + tl.sum(tl.exp(tile - safe[:, None]), 1)
            run_max = new_max
        lse = tl.where(run_max == float("-inf"), 0.0, run_max) + tl.log(run_sum)

    # the two gathers: one scalar per row each
    x = tl.load(x_ptr + rows, mask=row_ok, other=0)
    z = tl.load(z_ptr + rows, mask=row_ok, other=0)
    l_x = tl.load(base + x, mask=row_ok, other=0.0).to(tl.float32)
    l_z = tl.load(base + z, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    tl.store(logp_x_ptr + rows, l_x - lse, mask=row_ok)
    tl.store(logp_z_ptr + rows, tl.where(z == mask_id, float("-inf"), l_z - lse), mask=row_ok)

    if HAS_SHIFT:
        # pass 2: sum_e softplus(l_e - lse + shift) and sum_e sigmoid(...), e != m
        offset = tl.load(shift_ptr + rows, mask=row_ok, other=0.0).to(tl.float32) - lse
        if SINGLE_TILE:
            sp, sg = softplus_sigmoid(row + offset[:, None])
            acc_sp = tl.sum(tl.where(valid, sp, 0.0), 1)
            acc_sg = tl.sum(tl.where(valid, sg, 0.0), 1)
        else:
            acc_sp = tl.zeros([BLOCK_T], tl.float32)
            acc_sg = tl.zeros([BLOCK_T], tl.float32)
            for v0 in range(0, V, BLOCK_V):
                cols = v0 + cols0
                valid = row_ok[:, None] & (cols[None, :] < V) & (cols[None, :] != mask_id)
                tile = tl.load(base[:, None] + cols[None, :], mask=valid, other=float("-inf")).to(tl.float32)
                sp, sg = softplus_sigmoid(tile + offset[:, None])
                acc_sp += tl.sum(tl.where(valid, sp, 0.0), 1)
                acc_sg += tl.sum(tl.where(valid, sg, 0.0), 1)
        tl.store(sum_log1p_ptr + rows, acc_sp, mask=row_ok)
        tl.store(sum_sigmoid_ptr + rows, acc_sg, mask=row_ok)


@triton.jit
def _stats_bwd(
    logits_ptr, stride_t, grad_ptr, stride_g, x_ptr, z_ptr, shift_ptr,
    lse_ptr, sum_sigmoid_ptr, g_z_ptr, g_x_ptr, g_s_ptr,
    T, V, mask_id, col_offset,
    HAS_SHIFT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr,
):
    # V is the width of this block of columns; ids compare as col_offset + local column
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < T
    base = logits_ptr + rows.to(tl.int64) * stride_t
    gbase = grad_ptr + rows.to(tl.int64) * stride_g
    cols0 = tl.arange(0, BLOCK_V)

    x = tl.load(x_ptr + rows, mask=row_ok, other=0)
    z = tl.load(z_ptr + rows, mask=row_ok, other=0)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g_x = tl.load(g_x_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    g_z = tl.load(g_z_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    g_z = tl.where(z == mask_id, 0.0, g_z)  # logp_z is the constant -inf there
    coef = g_z + g_x
    if HAS_SHIFT:
        shift = tl.load(shift_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        g_s = tl.load(g_s_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        coef += g_s * tl.load(sum_sigmoid_ptr + rows, mask=row_ok, other=0.0)

    for v0 in range(0, V, BLOCK_V):
        cols = v0 + cols0
        inside = row_ok[:, None] & (cols[None, :] < V)
        tile = tl.load(base[:, None] + cols[None, :], mask=inside, other=0.0).to(tl.float32)
        logp = tile - lse[:, None]
        grad = -coef[:, None] * tl.exp(logp)
        if HAS_SHIFT:
            _, sg = softplus_sigmoid(logp + shift[:, None])
            grad += g_s[:, None] * sg
        ids = col_offset + cols
        grad += tl.where(ids[None, :] == z[:, None], g_z[:, None], 0.0)
        grad += tl.where(ids[None, :] == x[:, None], g_x[:, None], 0.0)
        grad = tl.where(ids[None, :] == mask_id, 0.0, grad)
        tl.store(gbase[:, None] + cols[None, :], grad.to(grad_ptr.dtype.element_ty), mask=inside)


def forward(
    logits: torch.Tensor,
    x: torch.Tensor,
    z: torch.Tensor,
    shift: torch.Tensor | None,
    mask_id: int,
    dtype: torch.dtype = torch.float32,
    chunk: int | None = None,
    *,
    block_t: int | None = None,
    block_v: int | None = None,
) -> RowStats:
    """Row statistics of logits [T, V] (unit stride along V); x, z: [T] int64; shift: [T] or
    None.  ``chunk`` is unused (rows are independent programs); block sizes override the
    launch configuration (tests use it to cover the multi-tile path)."""
    del dtype, chunk  # always float32 (dispatch rejects float64 for triton)
    T, V = logits.shape
    cfg = _config(T, V, logits.device, block_t, block_v)
    f32 = dict(dtype=torch.float32, device=logits.device)
    lse, logp_z, logp_x = (torch.empty(T, **f32) for _ in range(3))
    has_shift = shift is not None
    sum_log1p = torch.empty(T, **f32) if has_shift else None
    sum_sigmoid = torch.empty(T, **f32) if has_shift else None
    if T:
        dummy = lse  # never read when HAS_SHIFT is False
        _stats_fwd[grid(T, cfg["BLOCK_T"])](
            logits, logits.stride(0), x, z, shift.float().contiguous() if has_shift else dummy,
            lse, logp_z, logp_x, sum_log1p if has_shift else dummy, sum_sigmoid if has_shift else dummy,
            T, V, mask_id, HAS_SHIFT=has_shift, SINGLE_TILE=cfg["BLOCK_V"] >= V, **cfg,
        )
    return RowStats(lse, logp_z, logp_x, sum_log1p, sum_sigmoid)


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
    chunk: int | None = None,
    col_offset: int = 0,
    *,
    block_t: int | None = None,
    block_v: int | None = None,
) -> torch.Tensor:
    """Write d loss / d logits into ``out`` [T, W] (unit stride along W; may alias logits);
    ``logits`` may be a block of W columns starting at id ``col_offset``."""
    del dtype, chunk
    T, V = logits.shape
    if T == 0:
        return out
    cfg = _config(T, V, logits.device, block_t, block_v)
    has_shift = shift is not None
    f32 = lambda t: t.float().contiguous()  # noqa: E731  ([T] vectors: cheap)
    dummy = stats.lse
    _stats_bwd[grid(T, cfg["BLOCK_T"])](
        logits, logits.stride(0), out, out.stride(0), x, z,
        f32(shift) if has_shift else dummy, stats.lse,
        stats.sum_sigmoid if has_shift else dummy, f32(g_z), f32(g_x),
        f32(g_s) if has_shift else dummy,
        T, V, mask_id, col_offset, HAS_SHIFT=has_shift, **cfg,
    )
    return out


def _config(T: int, V: int, device: torch.device, block_t: int | None, block_v: int | None) -> dict:
    cfg = launch_config(T, V, device)
    if block_t is not None:
        cfg["BLOCK_T"] = int(block_t)
    if block_v is not None:
        cfg["BLOCK_V"] = int(block_v)
    return cfg
