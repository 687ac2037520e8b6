"""Brute-force references built from dense N x N transition matrices (float64), for tests only.

They share no code with ``xdlm.diffusion``: the kernel, Bayes' rule and KL are written out.
"""

from __future__ import annotations

import torch


def stationary(N: int, mask_id: int, k: float) -> torch.Tensor:
    pi = torch.full((N,), k / N, dtype=torch.float64)
    pi[mask_id] += 1 - k
    return pi


def transition(N: int, mask_id: int, k: float, a: float) -> torch.Tensor:
    """Q[i, j] = P(next = j | prev = i) = a [i == j] + (1 - a) pi_j."""
    return a * torch.eye(N, dtype=torch.float64) + (1 - a) * stationary(N, mask_id, k)[None, :]


def marginal(N, mask_id, k, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """q(x_t | x) for a probability vector x: x^T Q(alpha)."""
    return x @ transition(N, mask_id, k, alpha)


def posterior(N, mask_id, k, x: torch.Tensor, z: int, alpha_s: float, alpha_t: float) -> torch.Tensor:
    """Bayes: q(z_s = e | z_t = z, x) proportional to Q_{t|s}[e, z] (x^T Q_s)[e]."""
    q_ts = transition(N, mask_id, k, alpha_t / alpha_s)
    prior_s = marginal(N, mask_id, k, x, alpha_s)
    joint = q_ts[:, z] * prior_s
    return joint / joint.sum()


def kl(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    support = q > 0
    return (q[support] * (q[support].log() - p[support].log())).sum()


def udlm_loss(N: int, x0: int, z: int, p: torch.Tensor, alpha: float, dalpha: float) -> torch.Tensor:
    """UDLM's continuous-time loss (Schiff et al., 2024) in its x-bar notation:

    (-alpha' / (N alpha)) [N / xbar_theta_z - N / xbar_z
                           + sum_{j != z} (xbar_j / xbar_z) log(xbar_j xbar_theta_z / (xbar_theta_j xbar_z))]
    with xbar = N alpha e_x0 + (1 - alpha) 1 and xbar_theta = N alpha p + (1 - alpha) 1.
    """
    onehot = torch.zeros(N, dtype=torch.float64)
    onehot[x0] = 1
    xbar = N * alpha * onehot + (1 - alpha)
    xbar_theta = N * alpha * p + (1 - alpha)
    others = torch.arange(N) != z
    ratio = xbar[others] / xbar[z]
    logs = torch.log(xbar[others] * xbar_theta[z] / (xbar_theta[others] * xbar[z]))
    bracket = N / xbar_theta[z] - N / xbar[z] + (ratio * logs).sum()
    return -dalpha / (N * alpha) * bracket
