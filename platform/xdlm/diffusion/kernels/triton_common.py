"""Triton helpers shared by the kernel modules, and their launch configuration.

Importing this module imports Triton: only ``triton_nelbo`` / ``triton_sample`` do, and only
when a ``triton`` backend runs (``dispatch`` checks first that it can).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from xdlm.diffusion.kernels.dispatch import interpreter_requested

#: Whether @triton.jit produced interpreter objects when this module was imported (see
#: ``dispatch.check_triton``: kernels compiled for the GPU cannot run on CPU tensors).
INTERPRETED = interpreter_requested()

NEG_INF = float("-inf")


@triton.jit
def log1p(y):
    """log(1 + y), accurate for tiny y (tl has no log1p on every target): with w = 1 + y
    rounded, log(w) * y / (w - 1) cancels the rounding of w (Goldberg's trick)."""
    w = 1.0 + y
    d = tl.where(w == 1.0, 1.0, w - 1.0)  # the w == 1 lane is discarded; keep it finite anyway
    return tl.where(w == 1.0, y, tl.log(w) * (y / d))


@triton.jit
def softplus_sigmoid(a):
    """(softplus(a), sigmoid(a)) from one exp: e = exp(-|a|) in (0, 1], no overflow.
    a = -inf gives (0, 0), which is how masked-out entries drop out of the sums."""
    e = tl.exp(-tl.abs(a))
    sp = tl.maximum(a, 0.0) + log1p(e)
    sg = tl.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return sp, sg


@triton.jit
def float_key(x):
    """Order-preserving int32 key of float32 values (bisection over the bit pattern)."""
    b = x.to(tl.int32, bitcast=True)
    return tl.where(b >= 0, b, b ^ 0x7FFFFFFF)


def launch_config(n_rows: int, vocab_size: int, device: torch.device) -> dict:
    """Tile sizes: one row per program with wide column tiles on the GPU (the rows are long),
    several rows per program on the interpreter (numpy pays per operation, not per element).

    The GPU choice follows the usual fused cross-entropy layout and is not tuned on hardware yet
    (no GPU was available when this was written): see docs/kernels.md.
    """
    width = triton.next_power_of_2(vocab_size)
    if device.type == "cuda":
        block_v = min(width, 8192)
        # 16 warps for 8192-wide tiles (16 values per thread per live tile): with 8, the ahead-of-time
        # compile showed _stats_fwd spilling on sm_90 and _draw at up to 252 registers per thread
        # (tests/kernels/test_gpu_compile.py; docs/kernels.md, "GPU check")
        num_warps = 16 if block_v >= 8192 else 8 if block_v >= 4096 else 4
        return {"BLOCK_T": 1, "BLOCK_V": block_v, "num_warps": num_warps}
    # interpreter: each tl operation costs ~0.1-1 ms whatever its size, so use big tiles
    block_v = min(width, 256)
    block_t = max(1, min(triton.next_power_of_2(max(n_rows, 1)), 8192 // block_v))
    return {"BLOCK_T": block_t, "BLOCK_V": block_v}


def grid(n_rows: int, block_t: int) -> tuple[int]:
    return (triton.cdiv(n_rows, block_t),)
