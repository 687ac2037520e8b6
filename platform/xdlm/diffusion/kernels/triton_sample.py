"""Triton kernels for one sampling step's row pass (twin: ``chunked_sample``; results: ``RowDraw``).

``_draw`` (always), per row block, ONE pass over the logits:
  online max / sum of exp over the nucleus (e != m, key(l_e) >= threshold) -> lse
  online Gumbel-max: argmax (l_e + G_e) over the same set -> draw   (or argmax l_e when greedy)
  The Gumbel noise is generated in registers (Philox keyed by seed and row * V + col), so
  neither noise nor probabilities ever reach memory.  G = -log(E), E = -log1p(-U) with U built
  from 32 random bits offset by half an ulp: U is never 0 or 1 and its resolution near 0 (the
  large-G tail that decides argmaxes) is 2^-32, not the 2^-24 of -log(-log U) in float32.

``_nucleus`` (only with top_p < 1), per row block: pass 1 reads the row for max and lse, then
  32 bisection passes over the int32 key space, each reading the row once more for the mass
  sum_{key(l_e) >= mid} p_e.  The rows are re-read rather than sorted or stored: memory stays
  O(BLOCK_T x BLOCK_V) per program, at the price of 33 reads (from L2 when the row fits there).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from xdlm.diffusion.kernels.chunked_sample import NO_CUT, RowDraw
from xdlm.diffusion.kernels.triton_common import INTERPRETED, float_key, grid, launch_config, log1p

__all__ = ["INTERPRETED", "row_draw"]

NO_CUT_KEY: tl.constexpr = tl.constexpr(NO_CUT)  # jit code may only read constexpr globals


@triton.jit
def _nucleus(
    logits_ptr, stride_t, threshold_ptr, top_p, T, V, mask_id,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < T
    base = logits_ptr + rows.to(tl.int64) * stride_t
    cols0 = tl.arange(0, BLOCK_V)

    run_max = tl.full([BLOCK_T], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_T], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + cols0
        valid = row_ok[:, None] & (cols[None, :] < V) & (cols[None, :] != mask_id)
        tile = tl.load(base[:, None] + cols[None, :], mask=valid, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(run_max, tl.max(tile, 1))
        safe = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - safe) + tl.sum(tl.exp(tile - safe[:, None]), 1)
        run_max = new_max
    lse = tl.where(run_max == float("-inf"), 0.0, run_max) + tl.log(run_sum)

    # mass(>= lo) >= top_p > mass(>= hi); int64 so that lo + hi cannot overflow
    lo = tl.full([BLOCK_T], NO_CUT_KEY, tl.int64)
    hi = float_key(run_max).to(tl.int64) + 1
    for _ in range(32):
        mid = (lo + hi) // 2
        mass = tl.zeros([BLOCK_T], tl.float32)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + cols0
            valid = row_ok[:, None] & (cols[None, :] < V) & (cols[None, :] != mask_id)
            tile = tl.load(base[:, None] + cols[None, :], mask=valid, other=float("-inf")).to(tl.float32)
            inside = valid & (float_key(tile).to(tl.int64) >= mid[:, None])
            mass += tl.sum(tl.where(inside, tl.exp(tile - lse[:, None]), 0.0), 1)
        ok = mass >= top_p
        lo = tl.where(ok, mid, lo)
        hi = tl.where(ok, hi, mid)
    tl.store(threshold_ptr + rows, lo.to(tl.int32), mask=row_ok)


# seed is a fresh random int per launch: specialising it (divisible by 16, == 1) would compile
# another variant of the kernel for some seeds, mid-sampling
@triton.jit(do_not_specialize=["seed"])
def _draw(
    logits_ptr, stride_t, threshold_ptr, lse_ptr, draw_ptr, seed, T, V, mask_id,
    HAS_CUT: tl.constexpr, GREEDY: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < T
    rows64 = rows.to(tl.int64)
    base = logits_ptr + rows64 * stride_t
    cols0 = tl.arange(0, BLOCK_V)
    if HAS_CUT:
        cut = tl.load(threshold_ptr + rows, mask=row_ok, other=NO_CUT_KEY)

    run_max = tl.full([BLOCK_T], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_T], tl.float32)
    best = tl.full([BLOCK_T], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_T], tl.int64)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + cols0
        valid = row_ok[:, None] & (cols[None, :] < V) & (cols[None, :] != mask_id)
        tile = tl.load(base[:, None] + cols[None, :], mask=valid, other=float("-inf")).to(tl.float32)
        if HAS_CUT:
            valid = valid & (float_key(tile) >= cut[:, None])
            tile = tl.where(valid, tile, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(tile, 1))
        safe = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - safe) + tl.sum(tl.exp(tile - safe[:, None]), 1)
        run_max = new_max
        if GREEDY:
            score = tile
        else:
            bits = tl.randint(seed, rows64[:, None] * V + cols[None, :])
            u = (bits.to(tl.uint32, bitcast=True).to(tl.float32) + 0.5) * 2.3283064365386963e-10
            score = tile - tl.log(-log1p(-u))  # l + Gumbel; -inf stays -inf
        tile_best = tl.max(score, 1)
        tile_idx = tl.argmax(score, 1).to(tl.int64) + v0  # first index among ties in the tile
        better = tile_best > best  # strict: earlier tiles win ties, as a dense argmax would
        best_idx = tl.where(better, tile_idx, best_idx)
        best = tl.where(better, tile_best, best)
    lse = tl.where(run_max == float("-inf"), 0.0, run_max) + tl.log(run_sum)
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    tl.store(draw_ptr + rows, best_idx, mask=row_ok)


def row_draw(
    logits: torch.Tensor,
    mask_id: int,
    top_p: float | None,
    greedy: bool,
    generator: torch.Generator | None,
    chunk: int | None = None,
    gumbel_float64: bool = True,
    *,
    block_t: int | None = None,
    block_v: int | None = None,
) -> RowDraw:
    """``RowDraw`` of logits [T, V] (unit stride along V).  The kernel's Philox seed is one draw
    from ``generator`` (so a seeded generator gives reproducible samples); ``gumbel_float64``
    does not apply (see the module docstring for the noise's precision); ``chunk`` is unused."""
    del chunk, gumbel_float64
    T, V = logits.shape
    device = logits.device
    cfg = launch_config(T, V, device)
    if block_t is not None:
        cfg["BLOCK_T"] = int(block_t)
    if block_v is not None:
        cfg["BLOCK_V"] = int(block_v)
    threshold = torch.full((T,), NO_CUT, dtype=torch.int32, device=device)
    lse = torch.empty(T, dtype=torch.float32, device=device)
    draw = torch.empty(T, dtype=torch.int64, device=device)
    seed = 0
    if not greedy:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator, device=gen_device))
    if T == 0:
        return RowDraw(threshold, lse, draw)
    has_cut = top_p is not None and top_p < 1.0
    if has_cut:
        _nucleus[grid(T, cfg["BLOCK_T"])](
            logits, logits.stride(0), threshold, float(top_p), T, V, mask_id, **cfg
        )
    _draw[grid(T, cfg["BLOCK_T"])](
        logits, logits.stride(0), threshold, lse, draw, seed, T, V, mask_id,
        HAS_CUT=has_cut, GREEDY=greedy, **cfg,
    )
    return RowDraw(threshold, lse, draw)
