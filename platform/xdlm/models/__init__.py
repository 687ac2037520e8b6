"""Backbones: the bidirectional DiT denoiser and its causal (autoregressive) twin.

``build_model(ModelConfig(size="tiny"), vocab_size=50257)`` gives a ``DiT``: ``model(z_t, t)``
maps ``[B, L]`` token ids to ``[B, L, V]`` logits, ``model.hidden_states(z_t, t)`` gives the
``[B, L, D]`` input of ``model.output_head``. ``backbone="causal_dit"`` gives a ``CausalDiT``
(next-token logits and ``log_likelihood``). ``backbone_info(name)`` says what a backbone is
trained for (``objective``) and whether the diffusion sampler can draw from it (``generates``).
``backbone="hf"`` wraps a Hugging Face ``transformers`` model (``hf.py``, configured by
``ModelConfig.hf``).  ``backbone="oracle"`` is the exact denoiser of a Markov source (no parameters, built from the
source's law: ``build_model(cfg, vocab_size, context=DenoisingContext(...))``).

Modules, bottom up: ``registry`` (BACKBONES, BackboneInfo), ``config`` (ModelConfig, checked
against the registry), ``rotary`` and ``layers`` (building blocks), ``dit`` and ``causal`` (the
backbones, each registering itself), ``oracle`` (the exact denoiser of ``xdlm.synthetic``),
``build`` and ``accounting``.
"""

# Importing the backbone modules here is what fills BACKBONES: Python runs this file before any
# ``xdlm.models.*`` module, so a lookup anywhere sees every backbone.
from xdlm.models.accounting import (
    count_parameters,
    estimate_parameters,
    flops_per_token,
)
from xdlm.models.build import build_model
from xdlm.models.causal import CausalDiT
from xdlm.models.config import SIZES, ModelConfig, SizeSpec
from xdlm.models.dit import DiT, DiTBase
from xdlm.models.hf import HFDenoiser
from xdlm.models.hf_config import HFConfig
from xdlm.models.oracle import MarkovOracle
from xdlm.models.registry import BACKBONES, BackboneInfo, DenoisingContext, backbone_info

__all__ = [
    "BACKBONES",
    "SIZES",
    "BackboneInfo",
    "CausalDiT",
    "DenoisingContext",
    "DiT",
    "DiTBase",
    "HFConfig",
    "HFDenoiser",
    "MarkovOracle",
    "ModelConfig",
    "SizeSpec",
    "backbone_info",
    "build_model",
    "count_parameters",
    "estimate_parameters",
    "flops_per_token",
]
