"""Input validation shared by the diffusion math: every error names the argument and the range."""

from __future__ import annotations

import torch


def check_k(k: float) -> float:
    k = float(k)
    if not 0.0 <= k <= 1.0:
        raise ValueError(f"k must be in [0, 1] (0 = MDLM, 1 = UDLM), got {k}")
    return k


def check_vocab(vocab_size: int, mask_id: int) -> None:
    if int(vocab_size) < 2:
        raise ValueError(f"vocab_size must be >= 2 (the [MASK] id included), got {vocab_size}")
    if not 0 <= int(mask_id) < int(vocab_size):
        raise ValueError(f"mask_id must be in [0, vocab_size - 1] = [0, {vocab_size - 1}], got {mask_id}")


def check_tokens(name: str, tokens: torch.Tensor, vocab_size: int) -> None:
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must be an integer tensor of token ids, got dtype {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids outside [0, {vocab_size - 1}]")


def check_clean(x0: torch.Tensor, mask_id: int) -> None:
    if bool((x0 == mask_id).any()):
        raise ValueError(f"x0 must not contain the mask id {mask_id}: clean data is never [MASK]")


def check_alpha(name: str, alpha: torch.Tensor) -> None:
    """alpha must lie in (0, 1]: alpha = 0 would leave no signal and divides the NELBO by zero."""
    if not torch.is_floating_point(alpha):
        raise ValueError(f"{name} must be a floating tensor, got dtype {alpha.dtype}")
    if alpha.numel() and (bool((alpha <= 0).any()) or bool((alpha > 1).any()) or bool(alpha.isnan().any())):
        raise ValueError(
            f"{name} must be in (0, 1], got values in [{float(alpha.min())}, {float(alpha.max())}]"
        )


def check_broadcast(name: str, value: torch.Tensor, shape: torch.Size) -> None:
    try:
        torch.broadcast_shapes(value.shape, shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast against tokens of shape "
            f"{tuple(shape)}; use per-sequence [B, 1] or per-token [B, L]"
        ) from None
    if torch.broadcast_shapes(value.shape, shape) != shape:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} would enlarge the token shape {tuple(shape)}"
        )


def check_same_shape(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} but {ref_name} has shape {tuple(ref.shape)}"
        )


def check_vocab_dim(name: str, value: torch.Tensor, vocab_size: int, tokens_shape: torch.Size) -> None:
    if value.shape[-1] != vocab_size:
        raise ValueError(
            f"{name} has last dimension {value.shape[-1]}, expected the vocabulary size {vocab_size}"
        )
    if value.shape[:-1] != tokens_shape:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}, expected {tuple(tokens_shape) + (vocab_size,)}"
        )
