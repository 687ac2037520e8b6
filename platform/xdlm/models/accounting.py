"""Parameter counts and FLOPs-per-token estimates (without and with the output head) for
compute accounting: runs of different sizes and hardware share one x-axis.

"Non-embedding" parameters exclude the token embedding and the output head (weight and bias),
the convention of the scaling-law literature; they do not depend on the vocabulary size.

The DiT family is counted in closed form from its ``ModelConfig`` dims; a Hugging Face backbone
(``backbone: hf``) has its own architecture, so its counts come from the model itself: a skeleton
built on the meta device (``xdlm.models.hf.architecture``), n_layers and D from its config.
"""

from __future__ import annotations

from torch import nn

from xdlm.models.config import ModelConfig
from xdlm.models.hf import HF_BACKBONE
from xdlm.models.hf import architecture as hf_architecture
from xdlm.models.layers import TIME_FREQ_DIM

MLP_RATIO = 4
#: Vocabulary a Hugging Face skeleton is built with when only its non-embedding part is counted
#: (a config without ``vocab_size`` takes it; any size gives the same non-embedding count).
PLACEHOLDER_VOCAB = 256


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP / FSDP-style wrappers keep the model in ``.module``; torch.compile in ``._orig_mod``.
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": ..., "non_embedding": ...}`` for a built backbone (shared tensors counted once).

    ``non_embedding`` leaves out ``model.embedding`` and ``model.output_head`` when present (the
    ``hf`` backbone exposes both: its input embedding and LM head).
    """
    model = _unwrap(model)
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in params.values())
    excluded: dict[int, nn.Parameter] = {}
    for name in ("embedding", "output_head"):
        sub = getattr(model, name, None)
        if isinstance(sub, nn.Module):
            excluded.update({id(p): p for p in sub.parameters() if id(p) in params})
    return {"total": total, "non_embedding": total - sum(p.numel() for p in excluded.values())}


def estimate_parameters(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Closed-form ``count_parameters`` of the DiT / causal DiT for ``cfg`` without building it.

    With ``D`` hidden, ``C`` cond_dim, ``N`` layers, ``F`` = 256 time features, ``V`` vocabulary:
        time MLP  F*C + C + C*C + C
        block     3D^2 (qkv) + D^2 (out) + 8D^2 + 5D (MLP) + 6CD + 6D (adaLN) + 2D (norms)
        final     2CD + 2D (adaLN) + D (norm)
        embedding V*D;  output head D*V + V
    """
    n_layers, hidden, _ = cfg.dims()
    c, d = cfg.cond_dim, hidden
    time_mlp = TIME_FREQ_DIM * c + c + c * c + c
    block = 4 * d * d + 2 * MLP_RATIO * d * d + MLP_RATIO * d + d + 6 * c * d + 6 * d + 2 * d
    final = 2 * c * d + 2 * d + d
    non_embedding = time_mlp + n_layers * block + final
    embedding = vocab_size * d + d * vocab_size + vocab_size
    return {"total": non_embedding + embedding, "non_embedding": non_embedding}


def flops_per_token(model_cfg: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token (forward + backward), the non-embedding count:

        flops/token = 6 * N + 12 * n_layers * D * L

    ``N`` is the non-embedding parameter count (``estimate_parameters``), ``D`` the hidden size,
    ``L`` the sequence length. 6 = 2 (a multiply-add forward) + 4 (two backward, for the input
    and the weight gradient) per weight per token, the convention of the scaling-law literature,
    which counts every non-embedding parameter as a matmul weight. The second term is
    attention's score and value matmuls, which have no weights: per layer and token QK^T costs
    ``L * D`` multiply-adds over the heads and AV another ``L * D``, i.e. ``4 * L * D`` FLOPs
    forward, times 3 for forward + backward. The embedding and the output head are left out
    (``flops_with_embedding_per_token`` adds the head).
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"seq_len: must be a positive int, got {seq_len!r}")
    if model_cfg.backbone == HF_BACKBONE:
        arch = hf_architecture(model_cfg.hf, PLACEHOLDER_VOCAB)
        n_layers, hidden, non_embedding = arch["n_layers"], arch["hidden"], arch["non_embedding"]
    else:
        n_layers, hidden, _ = model_cfg.dims()
        non_embedding = estimate_parameters(model_cfg, vocab_size=1)["non_embedding"]
    return 6 * non_embedding + 12 * n_layers * hidden * seq_len


def flops_with_embedding_per_token(model_cfg: ModelConfig, seq_len: int, vocab_size: int) -> int:
    """``flops_per_token`` plus the output head: ``6 * N + 12 * n_layers * D * L + 6 * D * V``.

    The head is a ``D x V`` matmul on every token: ``D * V`` multiply-adds = ``2 * D * V`` FLOPs
    forward and ``4 * D * V`` backward. The embedding is a table lookup (a gather, no
    multiply-adds; its backward a scatter-add of ``D`` numbers per token) and the head's bias an
    addition: both are counted as 0. At the sizes trained on a laptop (D = 256, V = 4096) the
    head is a large share of the compute, which is why both counts are logged.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(f"vocab_size: must be a positive int, got {vocab_size!r}")
    if model_cfg.backbone == HF_BACKBONE:  # the head is the model's (V may exceed the tokenizer's)
        arch = hf_architecture(model_cfg.hf, vocab_size)
        hidden, vocab_size = arch["hidden"], arch["vocab_size"]
    else:
        _, hidden, _ = model_cfg.dims()
    return flops_per_token(model_cfg, seq_len) + 6 * hidden * vocab_size
