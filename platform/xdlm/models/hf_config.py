"""``HFConfig``: the ``model.hf`` section, read only when ``model.backbone: hf``.

``pretrained`` (a hub name or a local directory written by ``save_pretrained``) or ``config`` (a
mapping for ``transformers.AutoConfig.for_model``: ``model_type`` plus the config's fields, so a
tiny randomly initialised model needs no download) says where the weights come from.  Given
both, the weights are ``pretrained``'s and ``config`` declares their architecture: the job then
validates offline (the declared vocabulary holds the mask id), and when the model's own config
is read every declared key must match it (``xdlm.models.hf.check_declared``).  Values are checked
here; the rest when the model's config is read (``xdlm.models.hf.resolve_vocabulary``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DTYPES = ("float32", "bfloat16")
ATTENTION = ("sdpa", "eager")


@dataclass
class HFConfig:
    """A Hugging Face ``transformers`` model used as the denoiser.

    Attributes:
        pretrained: hub name (``GSAI-ML/LLaDA-8B-Base``) or local directory.
        config: ``{model_type: llama, hidden_size: 64, ...}`` for a randomly initialised model;
            ``vocab_size`` defaults to the data tokenizer's.  Beside ``pretrained``: the declared
            architecture, checked key by key against the model's own config when it is read.
        trust_remote_code: run the model repository's own Python code (LLaDA needs it); off
            unless the user opts in.
        mask_id: the [MASK] id; default: the model config's ``mask_token_id`` (LLaDA: 126336),
            else the data tokenizer's mask token.
        bidirectional: run a decoder-only model with full (non-causal) attention; models that are
            bidirectional already (LLaDA) are unaffected.
        gradient_checkpointing: recompute each layer's activations in backward.
        dtype: ``float32`` or ``bfloat16`` weights and activations.
        attn_implementation: ``sdpa`` or ``eager``; ``None`` keeps the model's default (remote
            code may not accept the argument).
    """

    pretrained: str | None = None
    config: dict[str, Any] | None = None
    trust_remote_code: bool = False
    mask_id: int | None = None
    bidirectional: bool = True
    gradient_checkpointing: bool = False
    dtype: str = "float32"
    attn_implementation: str | None = None

    def validate(self) -> HFConfig:
        """``ValueError`` naming the field (``hf.<field>``) and what is allowed."""
        if self.pretrained is None and self.config is None:
            raise ValueError("hf: give hf.pretrained (a hub name or local path) or hf.config (a mapping "
                             "with model_type, for a randomly initialised model), or both (config then "
                             "declares the pretrained model's architecture)")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            raise ValueError(f"hf.pretrained: must be a non-empty hub name or path, got {self.pretrained!r}")
        if self.config is not None:
            model_type = dict(self.config).get("model_type")
            if not isinstance(model_type, str) or not model_type:
                raise ValueError("hf.config.model_type: required (a transformers model type such as "
                                 "llama or qwen2)")
        for name in ("trust_remote_code", "bidirectional", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"hf.{name}: must be true or false, got {getattr(self, name)!r}")
        if self.mask_id is not None and (not isinstance(self.mask_id, int) or isinstance(self.mask_id, bool)
                                         or self.mask_id < 0):
            raise ValueError(f"hf.mask_id: must be a non-negative int id in the model's vocabulary "
                             f"(or unset), got {self.mask_id!r}")
        declared = dict(self.config or {})
        vocab = declared.get("vocab_size")
        mask = self.mask_id if self.mask_id is not None else declared.get("mask_token_id")
        if isinstance(vocab, int) and isinstance(mask, int) and not 0 <= mask < vocab:
            field = "mask_id" if self.mask_id is not None else "config.mask_token_id"
            raise ValueError(f"hf.{field}: {mask} is outside the declared vocabulary; allowed: [0, {vocab - 1}]")
        if self.dtype not in DTYPES:
            raise ValueError(f"hf.dtype: unknown {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION:
            raise ValueError(f"hf.attn_implementation: unknown {self.attn_implementation!r}; allowed: "
                             f"{', '.join(ATTENTION)} or unset")
        return self
