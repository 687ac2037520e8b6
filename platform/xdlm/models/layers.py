"""Building blocks of the DiT backbone: conditioning, adaLN blocks, final layer.

Shapes: ``B`` batch, ``L`` sequence length, ``D`` hidden width, ``H`` heads, ``C`` cond_dim.

Dtype policy (so the same code runs in float32 and under ``torch.autocast(bfloat16)``): the
residual stream stays in the embedding's dtype (float32 for a float32 model), layer norms and the
sinusoidal features are computed in float32 with autocast switched off, and the matmuls
(``nn.Linear``, SDPA) run in whatever precision autocast picks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xdlm.models.rotary import RotaryEmbedding

TIME_FREQ_DIM = 256  # width of the sinusoidal timestep features fed to the time MLP


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; ``x`` [B, L, D], shift/scale [B, 1, D].

    ``1 + scale`` (rather than ``scale``) makes zero-initialised modulation the identity.
    """
    return x * (1 + scale) + shift


class LayerNorm(nn.Module):
    """Weight-only layer norm over the last dim, computed in float32 even under autocast.

    No bias: the adaLN shift that follows every norm already supplies one.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` -> ``[..., D]`` in ``x``'s dtype (statistics computed in float32)."""
        # Variance in bf16 is too coarse for a stable normalisation: opt out of autocast here.
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.layer_norm(x.float(), (self.dim,), self.weight.float(), None, self.eps)
        return y.to(x.dtype)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of ``t`` followed by an MLP: ``t`` [B] -> ``[B, C]``."""

    def __init__(
        self,
        cond_dim: int,
        freq_dim: int = TIME_FREQ_DIM,
        max_period: float = 10_000.0,
        time_scale: float = 1_000.0,
    ) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        # Diffusion time lives in [0, 1]; stretching it to [0, 1000] (DiT's integer-timestep range)
        # lets the sinusoids of every frequency actually vary across the interval.
        self.time_scale = time_scale
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, cond_dim),
            nn.SiLU(),
            nn.Linear(cond_dim, cond_dim),
        )

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` [B] -> ``[cos(t * f_i), sin(t * f_i)]`` of shape ``[B, freq_dim]`` (float32)."""
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(self.max_period)
            * torch.arange(half, device=t.device, dtype=torch.float32)
            / half
        )  # [half], from 1 down to 1/max_period
        args = (t.float() * self.time_scale)[:, None] * freqs[None, :]  # [B, half]
        return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` [B] float -> ``[B, C]``."""
        with torch.autocast(device_type=t.device.type, enabled=False):
            feats = self.features(t)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions via ``F.scaled_dot_product_attention``."""

    def __init__(self, hidden: int, n_heads: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.n_heads = n_heads
        self.head_dim = hidden // n_heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor, rotary: RotaryEmbedding, is_causal: bool) -> torch.Tensor:
        """``x`` [B, L, D] -> ``[B, L, D]``; ``is_causal`` masks attention to positions ``<= i``."""
        batch, seq_len, _ = x.shape
        qkv = self.qkv(x).view(batch, seq_len, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.unbind(dim=2)  # each [B, L, H, hd]
        q, k = rotary(q), rotary(k)
        # SDPA wants [B, H, L, hd]; attention-probability dropout is not used (as in the
        # reference), dropout acts on the residual branches instead.
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=is_causal
        )  # [B, H, L, hd]
        return self.out(y.transpose(1, 2).reshape(batch, seq_len, self.hidden))


class MLP(nn.Module):
    """``D -> 4D -> D`` with tanh-approximated GELU."""

    def __init__(self, hidden: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc_in = nn.Linear(hidden, ratio * hidden)
        self.fc_out = nn.Linear(ratio * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` -> ``[B, L, D]``."""
        return self.fc_out(F.gelu(self.fc_in(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms and residual gates are set by the conditioning.

    From ``c`` one linear layer produces shift/scale/gate for the attention branch and for the MLP
    branch: ``x += gate * dropout(branch(modulate(norm(x), shift, scale)))``. Zero-initialised,
    the gates are 0 and each block starts as the identity (DiT's adaLN-Zero).
    """

    def __init__(self, hidden: int, n_heads: int, cond_dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm1 = LayerNorm(hidden)
        self.attn = SelfAttention(hidden, n_heads)
        self.norm2 = LayerNorm(hidden)
        self.mlp = MLP(hidden)
        self.modulation = nn.Linear(cond_dim, 6 * hidden)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, rotary: RotaryEmbedding, is_causal: bool
    ) -> torch.Tensor:
        """``x`` [B, L, D], ``c`` [B, C] (already through SiLU) -> ``[B, L, D]`` in ``x``'s dtype."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c)[:, None, :].chunk(
            6, dim=-1
        )  # each [B, 1, D]
        h = modulate(self.norm1(x), shift_a, scale_a)
        h = F.dropout(self.attn(h, rotary, is_causal), self.dropout, self.training)
        x = x + (gate_a * h).to(x.dtype)
        h = modulate(self.norm2(x), shift_m, scale_m)
        h = F.dropout(self.mlp(h), self.dropout, self.training)
        return x + (gate_m * h).to(x.dtype)


class FinalLayer(nn.Module):
    """Last norm with its own adaLN shift/scale; the output is what the output head consumes."""

    def __init__(self, hidden: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm(hidden)
        self.modulation = nn.Linear(cond_dim, 2 * hidden)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x`` [B, L, D], ``c`` [B, C] -> ``[B, L, D]``."""
        shift, scale = self.modulation(c)[:, None, :].chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)
