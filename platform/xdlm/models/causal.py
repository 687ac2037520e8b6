"""The causal DiT: the same blocks with causal attention, used as the autoregressive baseline and
as the generative-perplexity scorer."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from xdlm.models.config import ModelConfig
from xdlm.models.dit import DiTBase
from xdlm.models.registry import AUTOREGRESSIVE, BACKBONES


@BACKBONES.register("causal_dit", objective=AUTOREGRESSIVE)
class CausalDiT(DiTBase):
    """Autoregressive DiT: position ``i`` attends to ``<= i`` and predicts token ``i + 1``.

    No time input: the adaLN conditioning is the constant (learned) vector computed from ``t = 0``,
    which keeps the parameter set identical to ``DiT`` of the same size.
    """

    is_causal: ClassVar[bool] = True

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        if cfg.time_conditioning:
            raise ValueError("time_conditioning: must be False for the causal backbone")
        super().__init__(cfg, vocab_size)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B, L] long -> ``[B, L, D]``, the output head's input."""
        return self._trunk(tokens, None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B, L] long -> next-token logits ``[B, L, V]`` (row ``i`` scores ``x_{i+1}``)."""
        return self.output_head(self.hidden_states(tokens))

    def log_likelihood(
        self, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_i log p(x_{i+1} | x_{<=i})`` per sequence: ``tokens`` [B, L] -> ``[B]`` float32.

        The first token is conditioned on, not scored (prepend a BOS token to score it).
        ``mask`` [B, L] bool/0-1, optional: only targets ``x_{i+1}`` with ``mask[:, i + 1]`` true
        are summed (e.g. to skip padding). Gradients flow; wrap in ``torch.no_grad()`` to score.
        """
        batch, seq_len = tokens.shape[0], tokens.shape[-1]
        logits = self(tokens)[:, :-1].float()  # [B, L-1, V]; fp32 for an accurate log-softmax
        nll = F.cross_entropy(
            logits.reshape(-1, self.vocab_size), tokens[:, 1:].reshape(-1), reduction="none"
        ).view(batch, seq_len - 1)
        log_p = -nll
        if mask is not None:
            if mask.shape != tokens.shape:
                raise ValueError(
                    f"mask: expected shape {tuple(tokens.shape)}, got {tuple(mask.shape)}"
                )
            log_p = log_p * mask[:, 1:].to(log_p.dtype)
        return log_p.sum(dim=-1)
