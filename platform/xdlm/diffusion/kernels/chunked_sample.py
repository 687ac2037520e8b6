"""Chunked PyTorch backend for one sampling step's row pass: the twin of ``triton_sample``.

Per row of logits l [V] (the [MASK] id m excluded) it produces a ``RowDraw``:

- ``threshold``: the nucleus cut as an order-preserving int32 key of a float32 logit: the row's
  nucleus is {e != m : key(l_e) >= threshold}.  It is the largest key whose mass
  sum_{key(l_e) >= key} p_e still reaches top_p, i.e. the smallest top-K set of mass >= top_p
  (``categorical.top_p_filter``'s set, up to ties at the cut), found by bisection over the 32-bit
  key space: 32 passes, each a masked sum, no sort and no probability tensor kept.
- ``lse``: log sum_{e in nucleus} exp(l_e), the normaliser of p~ = p restricted to the nucleus.
- ``draw``: argmax_{e in nucleus} (l_e + G_e) with G_e iid Gumbel, a draw from p~ (or the first
  argmax of l when greedy).

Only chunks of C rows x V exist at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from xdlm.diffusion.categorical import gumbel_noise

#: key(-inf): every float32 key is >= this, so it means "no cut".
NO_CUT = -0x7F800000 - 1


class RowDraw(NamedTuple):
    """Per-row results of the sampling pass, each [T]."""

    threshold: torch.Tensor  # int32 float key of the nucleus cut (NO_CUT: no top-p)
    lse: torch.Tensor  # float32 log-normaliser over the nucleus
    draw: torch.Tensor  # int64 Gumbel-max (or greedy) draw from p restricted to the nucleus


def float_key(values: torch.Tensor) -> torch.Tensor:
    """Order-preserving int32 key of float32 values: a < b  <=>  key(a) < key(b) (no NaN)."""
    bits = values.contiguous().view(torch.int32)
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


def nucleus_threshold(logits: torch.Tensor, lse: torch.Tensor, top_p: float) -> torch.Tensor:
    """Bisection for the nucleus cut of rows of float32 logits [C, V] (-inf at the mask id) with
    log-normaliser lse [C].  Returns int32 keys [C]; see the module docstring.

    Invariant: mass(>= lo) >= top_p > mass(>= hi); 32 halvings close any int32 interval.
    """
    keys = float_key(logits)
    probs = torch.exp(logits - lse[:, None])
    lo = torch.full_like(lse, NO_CUT, dtype=torch.int64)
    hi = keys.max(-1).values.to(torch.int64) + 1
    for _ in range(32):
        mid = (lo + hi) // 2
        mass = torch.where(keys >= mid[:, None], probs, 0.0).sum(-1)
        ok = mass >= top_p
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return lo.to(torch.int32)


@torch.no_grad()
def row_draw(
    logits: torch.Tensor,
    mask_id: int,
    top_p: float | None,
    greedy: bool,
    generator: torch.Generator | None,
    chunk: int,
    gumbel_float64: bool = True,
) -> RowDraw:
    """``RowDraw`` of logits [T, V] (any float dtype; computed in float32 like ``clean_probs``)."""
    T, V = logits.shape
    device = logits.device
    threshold = torch.full((T,), NO_CUT, dtype=torch.int32, device=device)
    lse = torch.empty(T, dtype=torch.float32, device=device)
    draw = torch.empty(T, dtype=torch.int64, device=device)
    for start in range(0, T, chunk):
        rows = slice(start, start + chunk)
        part = logits[rows].to(torch.float32, copy=True)  # ours: the mask column is overwritten
        part[:, mask_id] = float("-inf")
        lse_c = torch.logsumexp(part, -1)
        if top_p is not None and top_p < 1.0:
            cut = nucleus_threshold(part, lse_c, top_p)
            threshold[rows] = cut
            part.masked_fill_(float_key(part) < cut[:, None], float("-inf"))
            lse_c = torch.logsumexp(part, -1)
        lse[rows] = lse_c
        if greedy:
            draw[rows] = part.argmax(-1)  # first index among ties, like the dense argmax
        else:
            noise = gumbel_noise(part.shape, generator, device, gumbel_float64)
            draw[rows] = noise.add_(part.to(noise.dtype)).argmax(-1)
            del noise
    return RowDraw(threshold, lse, draw)
