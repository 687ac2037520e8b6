"""``backbone: hf``: a Hugging Face ``transformers`` model as the XDLM denoiser.

Two kinds of model fit: masked-diffusion LMs shipped as remote code (LLaDA; loaded only with
``model.hf.trust_remote_code: true``), and any decoder-only model of ``transformers`` run with
bidirectional attention.  The denoiser is time-free: ``model(z_t, t)`` ignores ``t``.

The backbone exposes what the fused LM-head loss needs (``BackboneInfo.fused_head``):
``model(z_t, t, head_loss=f)`` gives ``f(h, W, b)`` for the final hidden states h [B, L, D]
(after the final norm) and the head's weight W [V, D] and bias b [V] or None, with
``logits = h W^T + b``; training passes ``f = XDLM.linear_nelbo`` (bound to x_0, z_t and the
times) and the [B, L, V] logits (V = 126,464 for LLaDA) never exist.  ``f`` runs inside the
head module's own forward (``FusedLinearHead``): DeepSpeed ZeRO-3 gathers a module's weights only
inside its forward (and again before its backward), so that is where W is whole.  The hidden
states come from the base model (``last_hidden_state``) for ``transformers``' own classes, and
for remote code from the head's input, caught by a pre-hook that stops the forward before the
head runs (an exception that ZeRO-3's hooks cannot follow: ``JobConfig.validate`` refuses ZeRO-3
with ``trust_remote_code``).

Bidirectional attention for a decoder-only model: ``config.is_causal = False`` makes the masking
utilities build a bidirectional mask (or none), and every attention module's ``is_causal`` flag
is cleared so SDPA / flash kernels are not asked for a causal mask when no mask is passed.

A pretrained model may also carry ``hf.config``: the architecture the job expects (so a job can
be validated and planned without downloading anything); when the model's own config is read, each
declared key must match it (``check_declared``), else an error names the key.

On the meta device (``with torch.device("meta")``) no weights are read: the model is built from
its config only, a skeleton whose parameter names and shapes are the real ones (accounting, and
the restore of a checkpoint, read them without holding the weights).

``transformers`` is imported on first use only, so importing ``xdlm.models`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xdlm.errors import UserError
from xdlm.models.config import ModelConfig
from xdlm.models.hf_config import HFConfig
from xdlm.models.registry import BACKBONES, DIFFUSION

HF_BACKBONE = "hf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class _HeadReached(Exception):
    """Raised by the head's pre-hook to stop a remote-code forward once its input is known."""


#: head_loss(hidden [B, L, D], weight [V, D], bias [V] or None) -> per-token loss [B, L]
HeadLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class FusedLinearHead(nn.Linear):
    """The model's ``nn.Linear`` LM head, able to compute a loss on its own weights.

    ``head(h)`` is ``h W^T + b`` as before; ``head(h, head_loss=f)`` is ``f(h, W, b)``, run inside
    the module's forward so that wrappers that gather weights around a module's forward (ZeRO-3)
    hand ``f`` the full W.  Same parameters, same state-dict keys: the head's class is swapped in
    place (``HFDenoiser``), so ``save_pretrained`` and checkpoints see the model unchanged.
    """

    def forward(self, hidden: torch.Tensor, head_loss: HeadLoss | None = None) -> torch.Tensor:
        if head_loss is None:
            return super().forward(hidden)
        return head_loss(hidden, self.weight, self.bias)


def model_config(hf: HFConfig, vocab_size: int | None = None) -> Any:
    """The ``transformers`` config of ``hf`` (no weights are read).

    ``hf.config`` without a ``vocab_size`` takes ``vocab_size`` (the data tokenizer's).
    """
    from transformers import AutoConfig

    if hf.pretrained is not None:
        try:
            return check_declared(hf, AutoConfig.from_pretrained(hf.pretrained,
                                                                 trust_remote_code=hf.trust_remote_code))
        except ValueError as err:
            raise _load_error(hf, err) from None
        except OSError as err:
            raise UserError(f"model.hf.pretrained: cannot read the config of {hf.pretrained!r} "
                            f"(not a local model directory, and the hub is unreachable or has no such "
                            f"model): {str(err).splitlines()[0]}") from None
    fields = dict(hf.config or {})
    model_type = fields.pop("model_type", None)
    if vocab_size is not None:
        fields.setdefault("vocab_size", int(vocab_size))
    try:
        return AutoConfig.for_model(model_type, **fields)
    except ValueError as err:
        raise UserError(f"model.hf.config.model_type: {model_type!r} is not a transformers model "
                        f"type ({str(err).splitlines()[0]})") from None


def check_declared(hf: HFConfig, config: Any) -> Any:
    """``config`` (a pretrained model's own) when every key of ``hf.config`` (the architecture the
    job declares beside ``hf.pretrained``) has the same value there; else ``UserError`` naming the
    first key that differs."""
    for key, declared in (hf.config or {}).items():
        actual = getattr(config, key, _MISSING)
        if actual is _MISSING or actual != declared:
            found = "has no such key" if actual is _MISSING else f"has {actual!r}"
            raise UserError(f"model.hf.config.{key}: the job declares {declared!r}, but {hf.pretrained!r} "
                            f"{found}; correct the job (or drop the key)")
    return config


_MISSING = object()


def resolve_vocabulary(hf: HFConfig, tokenizer_vocab: int, tokenizer_mask: int | None) -> tuple[int, int]:
    """``(vocab_size, mask_id)`` of the process for a Hugging Face backbone.

    vocab_size: the model's output size (its config's ``vocab_size``), which must hold every id of
    the data tokenizer.  mask_id: ``hf.mask_id``, else the model config's ``mask_token_id``, else
    the tokenizer's mask token; ``UserError`` naming ``model.hf.mask_id`` when there is none or it
    lies outside [0, vocab_size).
    """
    config = model_config(hf, tokenizer_vocab)
    vocab = int(config.vocab_size)
    if tokenizer_vocab > vocab:
        raise UserError(f"model.hf: the model's vocabulary has {vocab} ids, fewer than the data "
                        f"tokenizer's {tokenizer_vocab}; use the model's own tokenizer (data.tokenizer) "
                        f"or a config with vocab_size >= {tokenizer_vocab}")
    mask_id = hf.mask_id
    if mask_id is None:
        mask_id = getattr(config, "mask_token_id", None)
    if mask_id is None:
        mask_id = tokenizer_mask
    if mask_id is None:
        raise UserError(f"model.hf.mask_id: required: neither the tokenizer nor the model config names "
                        f"a mask token; give an id in [0, {vocab - 1}]")
    if not 0 <= int(mask_id) < vocab:
        raise UserError(f"model.hf.mask_id: {mask_id} is outside the model's vocabulary; allowed: "
                        f"[0, {vocab - 1}]")
    return vocab, int(mask_id)


def load_model(hf: HFConfig, vocab_size: int | None = None) -> nn.Module:
    """The ``transformers`` model of ``hf``: pretrained weights, or a random init of ``hf.config``.

    A causal-LM class is tried first, then the plain ``AutoModel`` (LLaDA registers only that).
    """
    from transformers import AutoModel, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": DTYPES[hf.dtype]}
    if hf.attn_implementation is not None:
        kwargs["attn_implementation"] = hf.attn_implementation
    config = model_config(hf, vocab_size)
    if hf.pretrained is None or torch.empty(0).is_meta:  # a random init, or a skeleton: no weights read
        return _from_config(config, hf, kwargs)
    last: Exception | None = None
    for auto in (AutoModelForCausalLM, AutoModel):
        try:
            return auto.from_pretrained(hf.pretrained, config=config,
                                        trust_remote_code=hf.trust_remote_code, **kwargs)
        except ValueError as err:  # this auto class does not know the config: try the next
            last = err
        except OSError as err:  # no weights there, or the hub is unreachable
            raise UserError(f"model.hf.pretrained: cannot load the weights of {hf.pretrained!r}: "
                            f"{str(err).splitlines()[0]}") from None
    raise _load_error(hf, last)


def _from_config(config: Any, hf: HFConfig, kwargs: dict[str, Any]) -> nn.Module:
    from transformers import AutoModel, AutoModelForCausalLM

    if hf.pretrained is None:
        return AutoModelForCausalLM.from_config(config, **kwargs)
    try:  # a pretrained model's class: its config may name only AutoModel (LLaDA)
        return AutoModelForCausalLM.from_config(config, trust_remote_code=hf.trust_remote_code, **kwargs)
    except ValueError:
        return AutoModel.from_config(config, trust_remote_code=hf.trust_remote_code, **kwargs)


def architecture(hf: HFConfig, vocab_size: int) -> dict[str, int]:
    """``{n_layers, hidden, vocab_size, total, non_embedding}`` of the model ``hf`` names, counted
    on a skeleton built on the meta device (no memory, no weights read).  ``non_embedding`` is
    the total minus the input embedding and the output head (a tied pair counted once)."""
    with torch.device("meta"):
        net = load_model(hf, vocab_size)
    params = {id(p): p.numel() for p in net.parameters()}
    ends = [*net.get_input_embeddings().parameters(), *net.get_output_embeddings().parameters()]
    ends_size = sum(params[i] for i in {id(p) for p in ends} if i in params)
    return {"n_layers": _first(net.config, "num_hidden_layers", "n_layers"),
            "hidden": _first(net.config, "hidden_size", "d_model"),
            "vocab_size": int(net.get_output_embeddings().weight.shape[0]),
            "total": sum(params.values()), "non_embedding": sum(params.values()) - ends_size}


def _first(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UserError(f"model.hf: the model config has none of {', '.join(names)}; its FLOPs cannot be counted")


def make_bidirectional(net: nn.Module) -> int:
    """Full attention for a decoder-only ``transformers`` model; returns how many attention
    modules had a causal flag to clear."""
    net.config.is_causal = False
    cleared = 0
    for module in net.modules():
        if isinstance(getattr(module, "is_causal", None), bool):
            module.is_causal = False
            cleared += 1
    return cleared


def enable_checkpointing(net: nn.Module) -> None:
    """Recompute each layer in backward (non-reentrant ``torch.utils.checkpoint``; active in
    training mode only, as in ``transformers``)."""
    if not getattr(net, "supports_gradient_checkpointing", False):
        raise UserError(f"model.hf.gradient_checkpointing: {type(net).__name__} does not support "
                        f"gradient checkpointing; set it to false")
    kwargs = {"use_reentrant": False}
    if hasattr(net, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        net.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@BACKBONES.register(HF_BACKBONE, objective=DIFFUSION, fused_head=True)
class HFDenoiser(nn.Module):
    """A ``transformers`` model as the denoiser: ids [B, L] -> logits [B, L, V], time-free.

    Attributes:
        net: the ``transformers`` model (``save_pretrained`` works on it).
        output_head: the LM head module (``weight`` [V, D], ``bias`` [V] or None).
        vocab_size: V, the output size; config: the resolved ``ModelConfig``.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
            raise ValueError(f"vocab_size: must be a positive int, got {vocab_size!r}")
        self.config = cfg
        hf = cfg.hf
        self.net = load_model(hf, vocab_size)
        head = self.net.get_output_embeddings()
        if head is None or getattr(head, "weight", None) is None:
            raise UserError(f"model.hf: {type(self.net).__name__} has no output head "
                            f"(get_output_embeddings); use a causal-LM model")
        self.vocab_size = int(head.weight.shape[0])
        if self.vocab_size < vocab_size:
            raise UserError(f"model.hf: the model's vocabulary has {self.vocab_size} ids, fewer than the "
                            f"data tokenizer's {vocab_size}")
        # transformers' own classes give the final hidden states from their base model; remote
        # code (LLaDA) returns logits there, so its head's input is caught instead.
        own_class = type(self.net).__module__.startswith("transformers.")
        base = self.net.base_model if own_class and self.net.base_model is not self.net else None
        # kept out of nn.Module's registry: it is a part of self.net, and registering it again
        # would put every base weight in the state dict twice (and hook it twice under ZeRO-3)
        self.__dict__["_base"] = base
        if type(head) is nn.Linear:  # a subclass may compute more than h W^T + b: left alone
            head.__class__ = FusedLinearHead
        if hf.bidirectional:
            make_bidirectional(self.net)
        if hf.gradient_checkpointing:
            enable_checkpointing(self.net)

    @property
    def output_head(self) -> nn.Module:
        return self.net.get_output_embeddings()

    @property
    def embedding(self) -> nn.Module:
        """The input embedding (so ``count_parameters`` leaves it out of the non-embedding count)."""
        return self.net.get_input_embeddings()

    def hidden_states(self, z_t: torch.Tensor, t: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``z_t`` [B, L] ids -> the head's input [B, L, D]; ``t`` is ignored."""
        if z_t.dim() != 2:
            raise ValueError(f"tokens: expected shape [B, L], got {tuple(z_t.shape)}")
        if self._base is not None:
            return self._base(input_ids=z_t, attention_mask=attention_mask, use_cache=False).last_hidden_state
        caught: list[torch.Tensor] = []

        def stop(_module: nn.Module, args: tuple) -> None:
            caught.append(args[0])
            raise _HeadReached

        handle = self.output_head.register_forward_pre_hook(stop)
        try:
            self.net(input_ids=z_t, attention_mask=attention_mask, use_cache=False)
        except _HeadReached:
            pass
        finally:
            handle.remove()
        if not caught:
            raise RuntimeError(f"{type(self.net).__name__} never called its output head module; "
                               "its hidden states cannot be taken for the fused loss")
        return caught[0]

    def forward(self, z_t: torch.Tensor, t: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None, hidden_only: bool = False,
                head_loss: HeadLoss | None = None) -> torch.Tensor:
        """``z_t`` [B, L] ids -> logits [B, L, V]; with ``head_loss`` the fused loss
        ``head_loss(h, W, b)`` instead (per token, computed inside the head's forward); with
        ``hidden_only`` the hidden states h [B, L, D].  ``attention_mask`` [B, L] (1 = token,
        0 = padding) is passed on."""
        hidden = self.hidden_states(z_t, t, attention_mask)
        if hidden_only:
            return hidden
        if head_loss is None:
            return self.output_head(hidden)
        head = self.output_head
        if not isinstance(head, FusedLinearHead):
            if getattr(head.weight, "ds_id", None) is not None:  # partitioned: W is empty out here
                raise RuntimeError(f"{type(head).__name__} is not an nn.Linear head: the fused loss cannot run "
                                   "inside its forward, where ZeRO-3 gathers its weight; use ZeRO-2")
            return head_loss(hidden, head.weight, getattr(head, "bias", None))
        return head(hidden, head_loss=head_loss)


def _load_error(hf: HFConfig, err: Exception | None) -> UserError:
    text = str(err) if err is not None else "unknown model class"
    if "trust_remote_code" in text and not hf.trust_remote_code:
        return UserError(f"model.hf.trust_remote_code: {hf.pretrained!r} runs its own Python code; set "
                         f"model.hf.trust_remote_code: true only if you trust that repository")
    return UserError(f"model.hf.pretrained: cannot load {hf.pretrained!r}: {text.splitlines()[0]}")
