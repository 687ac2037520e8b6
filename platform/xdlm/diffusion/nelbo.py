"""Continuous-time NELBO of XDLM, per token, in O(V) (docs/math.md, "Training objective").

With alpha = alpha_t, beta = 1 - alpha, z = z_t, x = x_0 and p = softmax of the logits with the
[MASK] logit forced to -inf (so p_m = 0):

    v(z)        = N r(z) = k + N (1 - k) [z == m]
    F_theta(z)  = N alpha p_z + beta v(z)        F(z) = N alpha [z == x] + beta v(z)
    F_theta(x)  = N alpha p_x + beta k           F(x) = N alpha + beta k
    rho         = v(z) / F(z)
    S           = (1/N) [log(1 + N alpha / (beta k)) - sum_e log(1 + N alpha p_e / (beta k))]

    l_t = -alpha'_t [ N ([z == x] - p_z) rho / F_theta(z)
                      - (rho / alpha) log(F(z) / F_theta(z))
                      + rho log(F(x) / F_theta(x))
                      + (k beta rho / alpha) S ]

S is the math doc's form rewritten with log(N alpha p_e + beta k) = log(beta k) + log1p(...):
every summand is then a softplus of a shifted log-probability, non-negative and free of
cancellation.  The S term carries a factor k and is dropped at k = 0 (k log k -> 0).

The logits enter only through three per-token statistics (``TokenStatistics``): log p_z, log p_x
and sum_log1p = sum_e log(1 + N alpha p_e / (beta k)).  Backends (eager here, chunked and Triton
in the ``kernels`` sub-package) differ only in how they compute those; ``nelbo_from_statistics``
is shared.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class TokenStatistics(NamedTuple):
    """The only functions of the logits the NELBO needs; each [...] (one value per token)."""

    logp_z: torch.Tensor  # log p at z_t (-inf where z_t is [MASK])
    logp_x: torch.Tensor  # log p at x_0
    sum_log1p: torch.Tensor | None  # sum_e log(1 + N alpha p_e / (beta k)); None when k = 0


def log_ratio(alpha: torch.Tensor, vocab_size: int, k: float) -> torch.Tensor | None:
    """log(N alpha / (beta k)), the shift turning log p_e into log(N alpha p_e / (beta k)); [...]."""
    if k == 0.0:
        return None
    beta = (1.0 - alpha).clamp_min(torch.finfo(alpha.dtype).tiny)
    return math.log(vocab_size) - math.log(k) + torch.log(alpha) - torch.log(beta)


def clean_log_partition(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """log sum_{e != m} exp(logits_e): the normaliser with the [MASK] logit forced to -inf.

    Works on the two slices around the mask id (views), so no masked copy of the logits is made.
    logits: [..., N] -> [...].
    """
    parts = [logits[..., :mask_id], logits[..., mask_id + 1 :]]
    lses = [torch.logsumexp(part, dim=-1) for part in parts if part.shape[-1] > 0]
    return lses[0] if len(lses) == 1 else torch.logaddexp(lses[0], lses[1])


def token_statistics_torch(
    logits: torch.Tensor,
    x0: torch.Tensor,
    z_t: torch.Tensor,
    mask_id: int,
    shift: torch.Tensor | None,
) -> TokenStatistics:
    """Eager reference for ``TokenStatistics``.

    logits: [..., N] in the compute dtype; x0, z_t: [...]; shift: [...] = log_ratio(alpha) or None.
    Peak B x L x V temporaries: the logsumexp's internal buffer, then, per slice around the
    mask id, ``slice + shift`` and its softplus (saved for backward).
    """
    lse = clean_log_partition(logits, mask_id)
    logp_x = logits.gather(-1, x0.unsqueeze(-1)).squeeze(-1) - lse
    logp_z = logits.gather(-1, z_t.unsqueeze(-1)).squeeze(-1) - lse
    logp_z = torch.where(z_t == mask_id, torch.full_like(logp_z, -math.inf), logp_z)
    if shift is None:
        return TokenStatistics(logp_z, logp_x, None)
    offset = (shift - lse).unsqueeze(-1)
    sum_log1p = sum(
        F.softplus(part + offset).sum(-1)
        for part in (logits[..., :mask_id], logits[..., mask_id + 1 :])
        if part.shape[-1] > 0
    )
    return TokenStatistics(logp_z, logp_x, sum_log1p)


def nelbo_from_statistics(
    stats: TokenStatistics,
    x0: torch.Tensor,
    z_t: torch.Tensor,
    alpha_t: torch.Tensor,
    dalpha_t: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    k: float,
) -> torch.Tensor:
    """l_t per token from the statistics (formula in the module docstring); all inputs [...].

    The log-ratios are evaluated as softplus differences, log(F(z) / F_theta(z)) =
    [z == x] softplus(a_z) - softplus(log p_z + a_z) with a_z = log(N alpha / (beta v(z))),
    because the plain difference of logs loses every digit once it is divided by a small alpha.
    """
    N = vocab_size
    alpha = alpha_t
    tiny = torch.finfo(alpha.dtype).tiny
    beta = (1.0 - alpha).clamp_min(tiny)
    log_beta = torch.log(beta)
    log_N_alpha = math.log(N) + torch.log(alpha)
    z_is_x = (z_t == x0).to(alpha.dtype)

    v_z = k + N * (1.0 - k) * (z_t == mask_id).to(alpha.dtype)  # v(z) = N r(z)
    log_beta_v = log_beta + torch.log(v_z.clamp_min(tiny))
    a_z = log_N_alpha - log_beta_v
    log_F_over_beta_v = z_is_x * F.softplus(a_z)  # log(F(z) / (beta v(z)))
    log_F_theta_over_beta_v = F.softplus(stats.logp_z + a_z)  # log(F_theta(z) / (beta v(z)))
    log_F_ratio_z = log_F_over_beta_v - log_F_theta_over_beta_v  # log(F(z) / F_theta(z))
    # rho = v(z) / F(z); it is 0 where v(z) = 0 (k = 0, unmasked z): there q(z_s | z_t) never jumps.
    log_rho = torch.where(v_z > 0, -log_beta - log_F_over_beta_v, torch.full_like(alpha, -math.inf))
    rho = torch.exp(log_rho)
    if k > 0:
        a_x = log_N_alpha - log_beta - math.log(k)  # log(N alpha / (beta k))
        log_F_ratio_x = F.softplus(a_x) - F.softplus(stats.logp_x + a_x)  # log(F(x) / F_theta(x))
    else:
        log_F_ratio_x = -stats.logp_x

    # N ([z == x] - p_z) rho / F_theta(z), with rho / F_theta(z) taken in log space: at k = 0
    # rho = 0 exactly while F_theta(z) may underflow.
    rho_over_F_theta_z = torch.exp(log_rho - log_beta_v - log_F_theta_over_beta_v)
    unmask_rate = N * (z_is_x - torch.exp(stats.logp_z)) * rho_over_F_theta_z
    stay_term = -(rho / alpha) * log_F_ratio_z
    clean_term = rho * log_F_ratio_x
    bracket = unmask_rate + stay_term + clean_term
    if k > 0:
        S = (F.softplus(a_x) - stats.sum_log1p) / N
        bracket = bracket + (k * beta * rho / alpha) * S
    return -dalpha_t * bracket


def nelbo_torch(
    logits: torch.Tensor,
    x0: torch.Tensor,
    z_t: torch.Tensor,
    alpha_t: torch.Tensor,
    dalpha_t: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    k: float,
) -> torch.Tensor:
    """Eager per-token NELBO; logits already in the compute dtype, alphas broadcast to x0.shape."""
    stats = token_statistics_torch(logits, x0, z_t, mask_id, log_ratio(alpha_t, vocab_size, k))
    return nelbo_from_statistics(stats, x0, z_t, alpha_t, dalpha_t, vocab_size, mask_id, k)
