"""``XDLM``: one object per process configuration (vocabulary, mask id, mixing ratio k).

A thin, validating facade over the formula modules ``forward``, ``posterior`` and ``nelbo``:
the math lives there, one function per formula.  The ``chunked`` / ``triton`` backends of the
loss and the sampling step live one level down, in ``xdlm.diffusion.kernels`` (which imports
only the formula modules, never this one).
"""

from __future__ import annotations

import math

import torch

import xdlm.diffusion.checks as checks
import xdlm.diffusion.forward as fwd
from xdlm.diffusion.kernels.linear import linear_nelbo as fused_linear_nelbo
from xdlm.diffusion.kernels.loss import nelbo as backend_nelbo
from xdlm.diffusion.kernels.sample import sample_step as backend_sample_step
from xdlm.diffusion.nelbo import nelbo_torch
from xdlm.diffusion.posterior import posterior as posterior_closed_form

Scalar = float | torch.Tensor


class XDLM:
    """Stationary-kernel discrete diffusion: k = 0 is MDLM (absorbing), k = 1 is UDLM (uniform).

    vocab_size N counts the [MASK] token; mask_id is its id (anywhere in [0, N)).
    """

    def __init__(self, vocab_size: int, mask_id: int, k: float) -> None:
        checks.check_vocab(vocab_size, mask_id)
        self.vocab_size = int(vocab_size)
        self.mask_id = int(mask_id)
        self.k = checks.check_k(k)

    @classmethod
    def mdlm(cls, vocab_size: int, mask_id: int) -> XDLM:
        return cls(vocab_size, mask_id, 0.0)

    @classmethod
    def udlm(cls, vocab_size: int, mask_id: int) -> XDLM:
        return cls(vocab_size, mask_id, 1.0)

    def __repr__(self) -> str:
        return f"XDLM(vocab_size={self.vocab_size}, mask_id={self.mask_id}, k={self.k})"

    # -- forward process -------------------------------------------------------------------
    def stationary(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """pi = (k/N) 1 + (1 - k) e_m: [N]."""
        return fwd.stationary(self.vocab_size, self.mask_id, self.k, dtype=dtype, device=device)

    def marginal(self, x0: torch.Tensor, alpha_t: Scalar) -> torch.Tensor:
        """q(x_t | x_0) as dense probabilities: x0 [...] -> [..., N]."""
        self._check_clean(x0)
        alpha_t = self._alpha("alpha_t", alpha_t, x0)
        return fwd.marginal(x0, alpha_t, self.vocab_size, self.mask_id, self.k)

    def sample_marginal(
        self, x0: torch.Tensor, alpha_t: Scalar, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x_t ~ q(x_t | x_0): x0 [...] -> LongTensor [...]."""
        self._check_clean(x0)
        alpha_t = self._alpha("alpha_t", alpha_t, x0)
        return fwd.sample_marginal(x0, alpha_t, self.vocab_size, self.mask_id, self.k, generator)

    def sample_prior(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """x_1 ~ pi: LongTensor of ``shape``."""
        return fwd.sample_prior(tuple(shape), self.vocab_size, self.mask_id, self.k, generator, device)

    # -- reverse process -------------------------------------------------------------------
    def clean_probs(self, logits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The model's x_theta: softmax over the logits with the [MASK] logit forced to -inf."""
        logits = logits.to(dtype).clone()
        logits[..., self.mask_id] = -math.inf
        return torch.softmax(logits, dim=-1)

    def posterior(
        self, x_probs: torch.Tensor, z_t: torch.Tensor, alpha_s: Scalar, alpha_t: Scalar
    ) -> torch.Tensor:
        """q(z_s | z_t, x) for a probability vector x over the vocabulary (s < t).

        x_probs: [..., N] (one-hot x_0, or the model's p); z_t: [...]; alpha_s >= alpha_t,
        each a float, per-sequence [B, 1] or per-token [B, L].  Returns [..., N].
        """
        checks.check_tokens("z_t", z_t, self.vocab_size)
        if not torch.is_floating_point(x_probs):
            raise ValueError(f"x_probs must be a floating tensor of probabilities, got {x_probs.dtype}")
        checks.check_vocab_dim("x_probs", x_probs, self.vocab_size, z_t.shape)
        alpha_s = self._alpha("alpha_s", alpha_s, z_t, x_probs.dtype)
        alpha_t = self._alpha("alpha_t", alpha_t, z_t, x_probs.dtype)
        if bool((alpha_s < alpha_t).any()):
            raise ValueError("alpha_s must be >= alpha_t: the posterior steps back in time (s < t)")
        return posterior_closed_form(
            x_probs, z_t, alpha_s, alpha_t, self.vocab_size, self.mask_id, self.k
        )

    # -- training objective ----------------------------------------------------------------
    def nelbo(
        self,
        logits: torch.Tensor,
        x0: torch.Tensor,
        z_t: torch.Tensor,
        alpha_t: Scalar,
        dalpha_t: Scalar,
        *,
        compute_dtype: torch.dtype | None = None,
        validate: bool = True,
        backend: str = "torch",
        inplace_backward: bool = False,
        chunk_tokens: int | None = None,
    ) -> torch.Tensor:
        """Per-token continuous-time NELBO integrand l_t (docs/math.md): returns [...].

        logits: [..., N] raw scores over all N ids (the [MASK] logit is ignored); x0, z_t: [...];
        alpha_t in (0, 1] and dalpha_t = d alpha / dt (<= 0), each a float, [B, 1] or [B, L].
        Computed in float32 whatever the logits' dtype (float64 if the logits are float64 or
        ``compute_dtype=torch.float64``).  ``validate=False`` skips the host-synchronising checks
        in a training hot path whose inputs are known to be valid.

        backend: ``torch`` (the eager reference, default), ``chunked`` (token chunks, peak extra
        memory O(chunk x N)), ``triton`` (fused kernels) or ``auto`` (triton on CUDA, chunked
        elsewhere); same values and gradients (docs/kernels.md).  ``inplace_backward`` (not for
        ``torch``) writes d loss / d logits into the logits' storage, destroying them: only for
        logits nothing else reads.  ``chunk_tokens``: rows per chunk of the chunked paths.
        """
        dtype = compute_dtype or (torch.float64 if logits.dtype == torch.float64 else torch.float32)
        if validate:
            checks.check_same_shape("z_t", z_t, "x0", x0)
            checks.check_vocab_dim("logits", logits, self.vocab_size, x0.shape)
            checks.check_tokens("x0", x0, self.vocab_size)
            checks.check_tokens("z_t", z_t, self.vocab_size)
            self._check_clean(x0)
        alpha_t = self._alpha("alpha_t", alpha_t, x0, dtype, validate)
        dalpha_t = self._as_tensor("dalpha_t", dalpha_t, x0, dtype, validate)
        if backend == "torch" and not inplace_backward:
            return nelbo_torch(
                logits.to(dtype), x0, z_t, alpha_t, dalpha_t, self.vocab_size, self.mask_id, self.k
            )
        if backend == "torch":
            raise ValueError("inplace_backward=True needs backend 'auto', 'chunked' or 'triton'")
        return backend_nelbo(
            logits, x0, z_t, alpha_t, dalpha_t, self.vocab_size, self.mask_id, self.k,
            backend=backend, dtype=dtype, inplace_backward=inplace_backward,
            chunk_tokens=chunk_tokens,
        )

    def linear_nelbo(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        x0: torch.Tensor,
        z_t: torch.Tensor,
        alpha_t: Scalar,
        dalpha_t: Scalar,
        bias: torch.Tensor | None = None,
        *,
        backend: str = "auto",
        compute_dtype: torch.dtype | None = None,
        validate: bool = True,
        chunk_tokens: int | None = None,
        chunk_vocab: int | None = None,
    ) -> torch.Tensor:
        """l_t for logits = hidden @ weight.T + bias (an ``nn.Linear(D, N)`` output head) without
        materialising the [..., N] logits: the head and the loss run fused, over token chunks in
        forward and over vocabulary blocks (or token chunks when tokens outnumber ids) in backward.

        hidden: [..., D]; weight: [N, D]; bias: [N] or None; the rest as in ``nelbo``.  Gradients
        reach hidden, weight and bias.  backend ``torch`` materialises the logits (reference).
        ``chunk_tokens`` / ``chunk_vocab``: token rows / vocabulary columns per step of the fused
        paths (docs/kernels.md).
        """
        dtype = compute_dtype or (torch.float64 if hidden.dtype == torch.float64 else torch.float32)
        if validate:
            checks.check_same_shape("z_t", z_t, "x0", x0)
            checks.check_tokens("x0", x0, self.vocab_size)
            checks.check_tokens("z_t", z_t, self.vocab_size)
            self._check_clean(x0)
        alpha_t = self._alpha("alpha_t", alpha_t, x0, dtype, validate)
        dalpha_t = self._as_tensor("dalpha_t", dalpha_t, x0, dtype, validate)
        return fused_linear_nelbo(
            hidden, weight, bias, x0, z_t, alpha_t, dalpha_t, self.vocab_size, self.mask_id,
            self.k, backend=backend, dtype=dtype, chunk_tokens=chunk_tokens,
            chunk_vocab=chunk_vocab,
        )

    # -- sampling --------------------------------------------------------------------------
    def sample_step(
        self,
        logits: torch.Tensor,
        z_t: torch.Tensor,
        alpha_s: Scalar,
        alpha_t: Scalar,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        *,
        backend: str = "auto",
        greedy: bool = False,
        gumbel_float64: bool = True,
        validate: bool = True,
        chunk_tokens: int | None = None,
    ):
        """One reverse step z_t -> z_s ~ q(z_s | z_t, x = p), p the model's clean distribution
        (nucleus-truncated to ``top_p`` when given), without a [..., N] probability tensor.

        logits: [..., N]; z_t: [...]; alpha_s >= alpha_t, each a float, [B, 1] or [B, L].
        Returns ``SampleStep(tokens, prob)``: z_s [...] and p(z_s) [...] (the model's clean
        probability of the returned token, 0 for [MASK]; for confidence-based samplers).
        ``greedy``: the posterior's argmax instead of a draw.  backend ``torch`` is the dense
        reference (bit-identical to the former sampler code); ``chunked`` / ``triton`` stream the
        vocabulary and agree with it in distribution.
        """
        if validate:
            checks.check_tokens("z_t", z_t, self.vocab_size)
            checks.check_vocab_dim("logits", logits, self.vocab_size, z_t.shape)
            if top_p is not None and not 0.0 < top_p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
        alpha_s = self._alpha("alpha_s", alpha_s, z_t, torch.float64, validate)
        alpha_t = self._alpha("alpha_t", alpha_t, z_t, torch.float64, validate)
        if validate and bool((alpha_s < alpha_t).any()):
            raise ValueError("alpha_s must be >= alpha_t: the posterior steps back in time (s < t)")
        return backend_sample_step(
            logits, z_t, alpha_s, alpha_t, self.vocab_size, self.mask_id, self.k,
            top_p=top_p, generator=generator, backend=backend, greedy=greedy,
            gumbel_float64=gumbel_float64, chunk_tokens=chunk_tokens,
        )

    # -- helpers ---------------------------------------------------------------------------
    def _check_clean(self, x0: torch.Tensor) -> None:
        checks.check_tokens("x0", x0, self.vocab_size)
        checks.check_clean(x0, self.mask_id)

    def _as_tensor(
        self, name: str, value: Scalar, tokens: torch.Tensor, dtype=torch.float64, validate=True
    ) -> torch.Tensor:
        value = torch.as_tensor(value, dtype=dtype, device=tokens.device)
        if validate:
            checks.check_broadcast(name, value, tokens.shape)
        return value.to(dtype).expand(tokens.shape)

    def _alpha(
        self, name: str, value: Scalar, tokens: torch.Tensor, dtype=torch.float64, validate=True
    ) -> torch.Tensor:
        value = self._as_tensor(name, value, tokens, dtype, validate)
        if validate:
            checks.check_alpha(name, value)
        return value
