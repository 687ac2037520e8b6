"""One ancestral sampling step z_t -> z_s without a [..., V] probability tensor.

The posterior with x = p~ (the model's clean distribution, nucleus-truncated when top_p is set)
is a two-component mixture (``xdlm.diffusion.posterior``):

    q(z_s | z_t = z) = c(z) f_s(p~, .) + (1 - c(z)) e_z,   c(z) = (1 - a_t / a_s) r(z) / f_t(p~, z)
    f_s(p~, .)       = a_s p~ + (1 - a_s) pi,               pi = (k / N) 1 + (1 - k) e_m

so a draw needs, per row, only p~_z and one draw from p~:

    u0 < c(z) ?  jump : stay at z
    jump:  u1 < a_s ?  Gumbel-max draw from p~  :  (u2 < k ?  uniform id over all N  :  [MASK])

The row pass (``chunked_sample`` / ``triton_sample``, ``RowDraw``) streams the logits once for the
normaliser and the Gumbel-max draw (plus 33 passes for the nucleus cut when top_p < 1); everything
after it is [T]-sized work here, shared by both streaming backends.  ``torch`` is the dense
reference (exactly what ``AncestralSampler`` always did: clean_probs, top_p_filter, posterior,
gumbel_max), kept as the yardstick for the others, which agree with it in distribution.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import torch

import xdlm.diffusion.kernels.dispatch as dispatch
from xdlm.diffusion.categorical import gumbel_max, top_p_filter
from xdlm.diffusion.kernels.chunked_sample import RowDraw, float_key
from xdlm.diffusion.posterior import jump_probability, posterior


class SampleStep(NamedTuple):
    """Result of ``sample_step``."""

    tokens: torch.Tensor  # [...] int64: z_s
    prob: torch.Tensor  # [...] float32: p~(z_s), the model's (nucleus) probability of z_s; 0 at [MASK]


def sample_step(
    logits: torch.Tensor,
    z_t: torch.Tensor,
    alpha_s: torch.Tensor,
    alpha_t: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    k: float,
    *,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    backend: str = "auto",
    greedy: bool = False,
    gumbel_float64: bool = True,
    chunk_tokens: int | None = None,
) -> SampleStep:
    """z_s ~ q(z_s | z_t, x = p~).  logits: [..., N]; z_t: [...]; alpha_s >= alpha_t: float64
    tensors broadcast to z_t.shape.  ``greedy`` takes the posterior's argmax instead of a draw."""
    dispatch.check_logits("logits", logits)
    name = dispatch.resolve(backend, logits.device, torch.float32)
    if name == "torch":
        return _dense(logits, z_t, alpha_s, alpha_t, vocab_size, mask_id, k,
                      top_p, generator, greedy, gumbel_float64)
    rows = dispatch.as_rows(logits)
    z = dispatch.as_ids(z_t)
    chunk = dispatch.chunk_rows(rows.shape[0], vocab_size, chunk_tokens, rows.device)
    # imported by name, on use: the triton twin imports Triton, which importing xdlm must not
    module = f"xdlm.diffusion.kernels.{'chunked_sample' if name == 'chunked' else 'triton_sample'}"
    rd = importlib.import_module(module).row_draw(
        rows, mask_id, top_p, greedy, generator, chunk, gumbel_float64
    )
    tokens, prob = combine(
        rows, z, rd, alpha_s.reshape(-1).double(), alpha_t.reshape(-1).double(),
        vocab_size, mask_id, k, greedy, generator,
    )
    return SampleStep(tokens.view(z_t.shape), prob.view(z_t.shape))


def _dense(logits, z_t, alpha_s, alpha_t, N, m, k, top_p, generator, greedy, gumbel_float64):
    """The eager reference: [..., N] probabilities, posterior and noise (AncestralSampler's code)."""
    x = logits.to(torch.float32).clone()
    x[..., m] = float("-inf")
    p = torch.softmax(x, dim=-1)
    if top_p is not None:
        p = top_p_filter(p, top_p)
    q = posterior(p, z_t, alpha_s.to(p.dtype).expand(z_t.shape), alpha_t.to(p.dtype).expand(z_t.shape), N, m, k)
    tokens = q.argmax(dim=-1) if greedy else gumbel_max(q, generator, gumbel_float64)
    return SampleStep(tokens, p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))


def clean_prob_at(rows: torch.Tensor, ids: torch.Tensor, rd: RowDraw, mask_id: int) -> torch.Tensor:
    """p~ at one id per row: exp(l_id - lse) inside the nucleus, else 0 (0 at [MASK]).  [T] fp32."""
    logit = rows.gather(1, ids[:, None]).squeeze(1).float()
    kept = (ids != mask_id) & (float_key(logit) >= rd.threshold)
    return torch.where(kept, torch.exp(logit - rd.lse), torch.zeros_like(logit))


def combine(
    rows: torch.Tensor,
    z: torch.Tensor,
    rd: RowDraw,
    alpha_s: torch.Tensor,
    alpha_t: torch.Tensor,
    N: int,
    m: int,
    k: float,
    greedy: bool,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture step on [T] vectors: (tokens [T] int64, p~(tokens) [T] float32)."""
    p_z = clean_prob_at(rows, z, rd, m)
    c = jump_probability(p_z.double(), z, alpha_s, alpha_t, N, m, k)
    if greedy:
        tokens = _posterior_argmax(rows, z, rd, c, p_z.double(), alpha_s, N, m, k)
    else:
        gen_device = generator.device if generator is not None else rows.device
        u = torch.rand((z.shape[0], 3), generator=generator, dtype=torch.float64, device=gen_device)
        uniform_ids = torch.randint(0, N, z.shape, generator=generator, device=gen_device)
        u, uniform_ids = u.to(rows.device), uniform_ids.to(rows.device)
        masks = torch.full_like(z, m)
        source = torch.where(u[:, 1] < alpha_s, rd.draw, torch.where(u[:, 2] < k, uniform_ids, masks))
        tokens = torch.where(u[:, 0] < c, source, z)
    return tokens, clean_prob_at(rows, tokens, rd, m)


def _posterior_argmax(rows, z, rd, c, p_z, alpha_s, N, m, k):
    """argmax_e q(e) with q(e) = c (a_s p~_e + (1 - a_s) pi_e) + (1 - c) [e == z].

    Only three ids can win: A = argmax of p~ (first on ties), m, and z; every other id scores
    at most A's value.  Ties go to the smallest id, like a dense argmax.
    """
    A = rd.draw
    p_A = clean_prob_at(rows, A, rd, m).double()
    pi = lambda is_m: k / N + (1.0 - k) * is_m.double()  # noqa: E731
    f_s = lambda p, is_m: alpha_s * p + (1.0 - alpha_s) * pi(is_m)  # noqa: E731
    mask = torch.full_like(z, m)
    stay = 1.0 - c
    ids = torch.stack([A, mask, z], dim=-1)
    values = torch.stack([
        c * f_s(p_A, A == m) + stay * (A == z).double(),
        c * f_s(torch.zeros_like(p_A), mask == m) + stay * (z == m).double(),
        c * f_s(p_z, z == m) + stay,
    ], dim=-1)
    best = values.max(-1, keepdim=True).values
    return torch.where(values == best, ids, torch.full_like(ids, N)).min(-1).values
