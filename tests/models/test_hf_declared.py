"""A pretrained ``hf`` model may carry its architecture in ``model.hf.config`` (so its job
validates offline); when the model's own config is read, every declared key must match it."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from xdlm.errors import UserError
from xdlm.models import HFConfig, ModelConfig, build_model
from xdlm.models.hf import resolve_vocabulary

TINY = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "vocab_size": 40, "max_position_embeddings": 32}


def test_declared_architecture_is_checked_against_the_pretrained_config(tmp_path):
    fields = dict(TINY)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields)).save_pretrained(tmp_path)
    matching = HFConfig(pretrained=str(tmp_path), config={"model_type": "llama", "num_hidden_layers": 2,
                                                          "vocab_size": 40}, mask_id=39).validate()
    assert build_model(ModelConfig(backbone="hf", hf=matching), 40).vocab_size == 40
    for key, value, found in [("num_hidden_layers", 3, "has 2"), ("model_type", "llada", "has 'llama'"),
                              ("d_model", 16, "has no such key")]:
        wrong = HFConfig(pretrained=str(tmp_path), config={"model_type": "llama", key: value}, mask_id=39)
        with pytest.raises(UserError, match=rf"model\.hf\.config\.{key}: the job declares {value!r}, but .* {found}"):
            resolve_vocabulary(wrong, 40, None)


def test_declared_vocabulary_must_hold_the_mask_id():
    with pytest.raises(ValueError, match=r"hf\.config\.mask_token_id: 64 is outside the declared vocabulary"):
        HFConfig(pretrained="some/model", config={"model_type": "x", "vocab_size": 64, "mask_token_id": 64}).validate()
