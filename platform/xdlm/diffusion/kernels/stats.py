"""The per-row results every NELBO backend produces, and the gradient they all implement.

For one row (token) of logits l over N ids, with the [MASK] id m excluded and shift = log(N alpha
/ (beta k)) (``xdlm.diffusion.nelbo.log_ratio``):

    lse        = log sum_{e != m} exp(l_e)                  p_e = exp(l_e - lse), p_m = 0
    logp_z     = l_z - lse   (-inf when z == m)              logp_x = l_x - lse
    sum_log1p  = sum_{e != m} softplus(l_e - lse + shift)    = sum_e log(1 + N alpha p_e / (beta k))
    sum_sigmoid= sum_{e != m} sigmoid(l_e - lse + shift)     (d sum_log1p / d shift)

Backward, with g_z, g_x, g_s the upstream gradients of logp_z, logp_x, sum_log1p and
sigma_e = sigmoid(l_e - lse + shift):

    d loss / d l_e = g_z ([e == z] - p_e) + g_x ([e == x] - p_e) + g_s (sigma_e - p_e sum_sigmoid)
                   = g_z [e == z] + g_x [e == x] + g_s sigma_e - p_e (g_z + g_x + g_s sum_sigmoid)

for e != m, and 0 at e = m (p_m = sigma_m = 0); g_z counts only where z != m (logp_z is the
constant -inf there).  So the backward reads each row once and writes its gradient once, given
the two saved per-row scalars lse and sum_sigmoid.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RowStats(NamedTuple):
    """Per-row outputs of a statistics forward pass; each [T] in the compute dtype."""

    lse: torch.Tensor
    logp_z: torch.Tensor
    logp_x: torch.Tensor
    sum_log1p: torch.Tensor | None  # None when shift is None (k = 0)
    sum_sigmoid: torch.Tensor | None  # None when shift is None (k = 0)
