"""Reverse posterior q(z_s | z_t, x) of the stationary kernel, in O(V) per token.

Bayes with Q_{t|s} = alpha_{t|s} I + (1 - alpha_{t|s}) 1 pi^T gives (docs/math.md)

    q(z_s = e | z_t = z, x) = [alpha_{t|s} [e == z] + (1 - alpha_{t|s}) r(z)] f_s(x, e) / f_t(x, z)

with f_s(x, e) = alpha_s x_e + beta_s r(e).  Because sum_e f_s(x, e) = 1 and
alpha_{t|s} f_s(x, z) = f_t(x, z) - (1 - alpha_{t|s}) r(z), this equals the two-component mixture

    q(z_s | z_t = z, x) = c(z) f_s(x, .) + (1 - c(z)) e_z,   c(z) = (1 - alpha_{t|s}) r(z) / f_t(x, z):

"jump" with probability c(z) to a draw from f_s(x, .) (itself: x with probability alpha_s, else
pi), otherwise stay at z.  Every quantity is a per-token scalar or one vector over the
vocabulary; no N x N matrix.  At k = 0 and z != m, r(z) = 0 so c = 0 exactly (MDLM's carry-over).
"""

from __future__ import annotations

import torch

from xdlm.diffusion.forward import stationary, stationary_at


def jump_probability(
    x_at_z: torch.Tensor,
    z_t: torch.Tensor,
    alpha_s: torch.Tensor,
    alpha_t: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    k: float,
) -> torch.Tensor:
    """c(z) = (1 - alpha_t / alpha_s) r(z) / f_t(x, z), with f_t(x, z) = alpha_t x_z + beta_t r(z).

    x_at_z: [...] the probability vector x gathered at z_t; alphas broadcast to z_t.  Returns [...].
    """
    r_z = stationary_at(z_t, vocab_size, mask_id, k, dtype=x_at_z.dtype)
    f_t_z = alpha_t * x_at_z + (1.0 - alpha_t) * r_z
    # f_t(x, z) >= beta_t r(z), so the ratio is finite whenever r(z) > 0; where r(z) = 0 the
    # clamp only keeps 0 / 0 from turning into NaN.
    c = (1.0 - alpha_t / alpha_s) * r_z / f_t_z.clamp_min(torch.finfo(f_t_z.dtype).tiny)
    return c.clamp(0.0, 1.0)


def posterior(
    x_probs: torch.Tensor,
    z_t: torch.Tensor,
    alpha_s: torch.Tensor,
    alpha_t: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    k: float,
) -> torch.Tensor:
    """q(z_s | z_t, x) for a probability vector x (one-hot x_0, or the model's p).

    x_probs: [..., N]; z_t: [...]; alpha_s >= alpha_t, both broadcastable to z_t.  Returns [..., N].
    """
    alpha_s = alpha_s.expand(z_t.shape).unsqueeze(-1).to(x_probs.dtype)
    alpha_t = alpha_t.expand(z_t.shape).unsqueeze(-1).to(x_probs.dtype)
    x_at_z = x_probs.gather(-1, z_t.unsqueeze(-1))
    c = jump_probability(x_at_z, z_t.unsqueeze(-1), alpha_s, alpha_t, vocab_size, mask_id, k)
    pi = stationary(vocab_size, mask_id, k, dtype=x_probs.dtype, device=x_probs.device)
    f_s = alpha_s * x_probs + (1.0 - alpha_s) * pi
    probs = c * f_s
    return probs.scatter_add(-1, z_t.unsqueeze(-1), 1.0 - c)
