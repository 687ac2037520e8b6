"""A run's model is rebuilt from its checkpoint whatever the backbone names its output head:
the DiT's ``output_head.weight`` and a Hugging Face model's ``net.lm_head.weight`` (EMA weights
loaded, the vocabulary read off the saved head)."""

from __future__ import annotations

import pytest
import torch

from xdlm.checkpoint import write_checkpoint
from xdlm.checkpoint.restore import load_model_from_run
from xdlm.config import load_job, to_yaml
from xdlm.errors import UserError
from xdlm.models import build_model

HF = ["model.backbone=hf", "model.hf.config={model_type: llama, hidden_size: 16, intermediate_size: 32, "
      "num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 64}"]
DIT = ["model.size=custom", "model.n_layers=1", "model.hidden=16", "model.n_heads=2", "model.cond_dim=8"]


@pytest.mark.parametrize("overrides,head", [(HF, "net.lm_head.weight"), (DIT, "output_head.weight")])
def test_restore_reads_the_vocabulary_off_the_saved_head(tmp_path, overrides, head):
    job = load_job(None, ["name=restore", *overrides])
    torch.manual_seed(0)
    model = build_model(job.model, 50)
    weights = model.state_dict()
    assert weights[head].shape[0] == 50
    shadow = [p.detach() + 1.0 for p in model.parameters()]  # EMA weights differ from the raw ones
    write_checkpoint(tmp_path / "checkpoint_000001",
                     {"model": weights, "ema": {"decay": 0.9, "shadow": shadow}, "counters": {"step": 1}},
                     to_yaml(job))
    restored, restored_job = load_model_from_run(tmp_path)
    assert restored.vocab_size == 50 and restored_job.model.backbone == job.model.backbone
    for p, s in zip(restored.parameters(), shadow, strict=True):
        assert torch.equal(p, s)
    raw, _ = load_model_from_run(tmp_path, use_ema=False)
    assert all(torch.equal(a, b) for a, b in zip(raw.state_dict().values(), weights.values(), strict=True))


def test_a_checkpoint_of_another_backbone_is_refused_naming_the_missing_head(tmp_path):
    dit = load_job(None, ["name=restore", *DIT])
    write_checkpoint(tmp_path / "checkpoint_000001",
                     {"model": build_model(dit.model, 50).state_dict(), "ema": {"decay": 0.0},
                      "counters": {"step": 1}}, to_yaml(load_job(None, ["name=restore", *HF])))
    with pytest.raises(UserError, match=r"checkpoint: no net\.lm_head\.weight in its weights"):
        load_model_from_run(tmp_path)
