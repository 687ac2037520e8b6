"""Forward (noising) process of XDLM: a stationary kernel mixing uniform and absorbing noise.

Notation (docs/math.md): N = vocab size with [MASK] included, m = mask id, k = mixing ratio,
r(e) = k/N + (1 - k) [e == m] the stationary law, beta_t = 1 - alpha_t.
"""

from __future__ import annotations

import torch


def stationary(vocab_size: int, mask_id: int, k: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """pi = (k/N) 1 + (1 - k) e_m.  Returns [N]."""
    pi = torch.full((vocab_size,), k / vocab_size, dtype=dtype, device=device)
    pi[mask_id] += 1.0 - k
    return pi


def stationary_at(tokens: torch.Tensor, vocab_size: int, mask_id: int, k: float, dtype=torch.float32) -> torch.Tensor:
    """r(z) gathered at token ids: k/N + (1 - k) [z == m].  [...] -> [...]."""
    return k / vocab_size + (1.0 - k) * (tokens == mask_id).to(dtype)


def marginal(x0: torch.Tensor, alpha_t: torch.Tensor, vocab_size: int, mask_id: int, k: float) -> torch.Tensor:
    """q(x_t = e | x_0) = alpha_t [e == x_0] + beta_t r(e).

    x0: [...] ids; alpha_t broadcastable to x0.  Returns [..., N] (dense: for tests and analysis).
    """
    alpha = alpha_t.expand(x0.shape).unsqueeze(-1)
    pi = stationary(vocab_size, mask_id, k, dtype=alpha.dtype, device=x0.device)
    probs = (1.0 - alpha) * pi
    return probs.scatter_add(-1, x0.unsqueeze(-1), alpha.clone())


def sample_marginal(
    x0: torch.Tensor,
    alpha_t: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    k: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) with one uniform per token.

    u < alpha_t keeps x_0; alpha_t <= u < alpha_t + k beta_t draws a uniform id from all N
    (the mask included, as pi says); otherwise [MASK].  Returns LongTensor shaped like x0.
    """
    alpha = alpha_t.expand(x0.shape)
    u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
    uniform_ids = torch.randint(0, vocab_size, x0.shape, generator=generator, device=x0.device)
    keep = u < alpha
    to_uniform = ~keep & (u < alpha + k * (1.0 - alpha))
    x_t = torch.full_like(x0, mask_id)
    x_t = torch.where(to_uniform, uniform_ids, x_t)
    return torch.where(keep, x0, x_t).long()


def sample_prior(
    shape: tuple[int, ...],
    vocab_size: int,
    mask_id: int,
    k: float,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Draw x_1 ~ pi: [MASK] with probability 1 - k, else a uniform id over all N."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    uniform_ids = torch.randint(0, vocab_size, shape, generator=generator, device=device)
    return torch.where(u < k, uniform_ids, torch.full_like(uniform_ids, mask_id))
