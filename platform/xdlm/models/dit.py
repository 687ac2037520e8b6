"""The DiT backbone of MDLM/XDLM: bidirectional transformer with adaLN-conditioned blocks.

``DiTBase`` holds everything the bidirectional ``DiT`` and the autoregressive ``CausalDiT``
(``causal.py``) share; they differ only in the attention mask and in their public ``forward``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from xdlm.models.config import ModelConfig
from xdlm.models.layers import DiTBlock, FinalLayer, TimestepEmbedding
from xdlm.models.registry import BACKBONES, DIFFUSION
from xdlm.models.rotary import RotaryEmbedding


class DiTBase(nn.Module):
    """Token embedding -> N adaLN blocks (rotary SDPA attention + GELU MLP) -> final adaLN norm ->
    untied linear output head.

    The conditioning vector ``c`` [B, cond_dim] comes from ``TimestepEmbedding(t)``; when time
    conditioning is off, ``t`` is replaced by zeros and the same path still runs (as in the
    reference), so ``c`` is a learned constant.

    Attributes used by other layers:
        embedding: ``nn.Embedding(vocab_size, hidden)`` (token embedding).
        output_head: ``nn.Linear(hidden, vocab_size)`` with bias, untied from ``embedding``;
            ``logits == output_head(hidden_states(...))`` so a fused LM-head + loss can start from
            the hidden states.
        config: the resolved ``ModelConfig``; ``vocab_size``: output vocabulary size.
    """

    is_causal: ClassVar[bool] = False

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
            raise ValueError(f"vocab_size: must be a positive int, got {vocab_size!r}")
        cfg = cfg.resolved()
        self.config = cfg
        self.vocab_size = vocab_size
        n_layers, hidden, n_heads = cfg.dims()
        self.max_seq_len = cfg.max_seq_len
        self.time_conditioning = cfg.time_conditioning

        self.embedding = nn.Embedding(vocab_size, hidden)
        self.time_embedding = TimestepEmbedding(cfg.cond_dim)
        self.rotary = RotaryEmbedding(hidden // n_heads, cfg.max_seq_len)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden, n_heads, cfg.cond_dim, cfg.dropout) for _ in range(n_layers)
        )
        self.final = FinalLayer(hidden, cfg.cond_dim)
        self.output_head = nn.Linear(hidden, vocab_size)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DiT-style init: xavier-uniform linears, small-normal embeddings, and zeros for every
        adaLN modulation and for the output head, so at init each block is the identity and the
        logits are exactly 0 (a uniform prediction)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embedding.weight, std=0.02)
        for layer in (self.time_embedding.mlp[0], self.time_embedding.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
            nn.init.ones_(block.norm1.weight)
            nn.init.ones_(block.norm2.weight)
        nn.init.zeros_(self.final.modulation.weight)
        nn.init.zeros_(self.final.modulation.bias)
        nn.init.ones_(self.final.norm.weight)
        nn.init.zeros_(self.output_head.weight)
        nn.init.zeros_(self.output_head.bias)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected shape [B, L], got {tuple(tokens.shape)}")
        if tokens.shape[1] > self.max_seq_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds max_seq_len={self.max_seq_len}; "
                f"raise ModelConfig.max_seq_len (the rotary table length) or shorten the input"
            )

    def _conditioning(
        self, t: torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        """The SiLU-activated conditioning vector ``[B, cond_dim]``."""
        if self.time_conditioning:
            if t is None:
                raise ValueError("t: required when time_conditioning=True (a [B] float tensor)")
            if t.dim() == 0:
                t = t.expand(batch)
            if t.shape != (batch,):
                raise ValueError(f"t: expected shape [{batch}] or [], got {tuple(t.shape)}")
        else:
            # Constant conditioning through the same path, whatever t was passed.
            t = torch.zeros(batch, device=device)
        return F.silu(self.time_embedding(t))

    def _trunk(self, tokens: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """``tokens`` [B, L] long -> final-layer hidden states ``[B, L, D]``."""
        self._check_tokens(tokens)
        batch = tokens.shape[0]
        x = self.embedding(tokens)  # [B, L, D]
        c = self._conditioning(t, batch, tokens.device)  # [B, C]
        for block in self.blocks:
            x = block(x, c, self.rotary, self.is_causal)
        return self.final(x, c)


@BACKBONES.register("dit", objective=DIFFUSION)
class DiT(DiTBase):
    """Bidirectional DiT denoiser: every position attends to every position."""

    def hidden_states(self, z_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``z_t`` [B, L] long, ``t`` [B] float (or None) -> ``[B, L, D]``, the output head's input.

        ``t`` is required with time conditioning on and ignored with it off.
        """
        return self._trunk(z_t, t)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``z_t`` [B, L] long, ``t`` [B] float (or None) -> logits ``[B, L, V]``."""
        return self.output_head(self.hidden_states(z_t, t))
