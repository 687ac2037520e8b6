"""Parameter and FLOPs accounting of the ``hf`` backbone, against a hand count of a tiny llama.

llama, D = 32 hidden, F = 64 MLP, 2 layers, 4 heads of 8, 2 KV heads (KV width 16), V = 48:
    per layer  q, o: 2 D^2;  k, v: 2 D 16;  gate, up, down: 3 D F;  two RMSNorms: 2 D
    final norm D;  embedding V D;  LM head V D (untied; tied: shared with the embedding)
"""

from __future__ import annotations

import pytest

from xdlm.models import HFConfig, ModelConfig, build_model, count_parameters
from xdlm.models.accounting import flops_per_token, flops_with_embedding_per_token

D, F, LAYERS, KV, V = 32, 64, 2, 16, 48
NON_EMBEDDING = LAYERS * (2 * D * D + 2 * D * KV + 3 * D * F + 2 * D) + D  # 18592
CONFIG = {"model_type": "llama", "hidden_size": D, "intermediate_size": F, "num_hidden_layers": LAYERS,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


def cfg(**fields) -> ModelConfig:
    return ModelConfig(backbone="hf", hf=HFConfig(config={**CONFIG, **fields}))


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_counts_of_a_built_hf_model_match_the_hand_count(tied):
    model = build_model(cfg(tie_word_embeddings=tied), V)
    ends = V * D if tied else 2 * V * D
    assert NON_EMBEDDING == 18592
    assert count_parameters(model) == {"total": NON_EMBEDDING + ends, "non_embedding": NON_EMBEDDING}


def test_flops_of_an_hf_model_come_from_its_own_architecture_not_the_dit_sizes():
    seq_len = 16
    attention = 12 * LAYERS * D * seq_len
    assert flops_per_token(cfg(), seq_len) == 6 * NON_EMBEDDING + attention == 123840
    # the head is the model's: a config with its own vocab_size counts that, not the tokenizer's
    assert flops_with_embedding_per_token(cfg(), seq_len, V) == 123840 + 6 * D * V
    assert flops_with_embedding_per_token(cfg(vocab_size=64), seq_len, V) == 123840 + 6 * D * 64
