"""Rotary position embeddings (RoPE) with a precomputed cos/sin table.

Each head's channels are split into two halves ``(x1, x2)``; channel pair ``i`` at position ``p``
is rotated by the angle ``p * base**(-2i / head_dim)``. Because a rotation of ``q`` at ``p`` and of
``k`` at ``p'`` leaves ``q . k`` depending only on ``p - p'``, attention sees relative positions
without any learned position parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Holds the ``[max_seq_len, head_dim / 2]`` cos/sin tables and applies the rotation.

    The tables are float32 buffers that are not saved in ``state_dict`` (they are a pure function of
    ``head_dim``, ``max_seq_len`` and ``base``), so changing ``max_seq_len`` never breaks loading a
    checkpoint.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"head_dim: must be even for rotary embeddings, got {head_dim}")
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.base = base
        # Same device as any other freshly created tensor (respects ``with torch.device(...)``).
        cos, sin = self._tables(torch.empty(0).device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Angles reach max_seq_len radians: compute them in float64 on the CPU (not every
        # accelerator has float64), then store float32 on ``device``.
        half = self.head_dim // 2
        cpu = torch.device("cpu")  # explicit, so a ``with torch.device("meta")`` does not apply
        inv_freq = self.base ** (-torch.arange(half, dtype=torch.float64, device=cpu) / half)
        positions = torch.arange(self.max_seq_len, dtype=torch.float64, device=cpu)
        angles = torch.outer(positions, inv_freq)  # [max_seq_len, half]; inv_freq is [half]
        return angles.cos().float().to(device), angles.sin().float().to(device)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # Rebuild the tables after any device/dtype move: ``model.to(torch.bfloat16)`` (as
        # DeepSpeed bf16 does) would otherwise cast them and lose the precision far positions
        # need, and ``to_empty()`` after meta-device init would leave them uninitialised (they
        # are not in the state_dict, so loading a checkpoint would not restore them either).
        super()._apply(fn, recurse)
        if self.cos.device.type != "meta":
            self.cos, self.sin = self._tables(self.cos.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x``: ``[B, L, H, head_dim]`` -> same shape and dtype (math in float32)."""
        seq_len = x.shape[1]
        cos = self.cos[:seq_len, None, :]  # [L, 1, half], broadcasts over batch and heads
        sin = self.sin[:seq_len, None, :]
        x1, x2 = x.float().chunk(2, dim=-1)
        rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return rotated.to(x.dtype)
