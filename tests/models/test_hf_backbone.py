"""``backbone: hf``: tiny ``transformers`` models built from a config (no download).

Bidirectional attention, the fused LM-head loss against the plain logits path (values and
gradients), gradient checkpointing, bf16, loading a model saved with ``save_pretrained`` and a
remote-code model (the path LLaDA takes), mask-id validation, and the posterior sampler on it.
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel

from xdlm.config import load_job
from xdlm.diffusion import XDLM, sampling, schedules
from xdlm.errors import UserError
from xdlm.models import HFConfig, ModelConfig, build_model
from xdlm.models.hf import resolve_vocabulary
from xdlm.objective import build_process, diffusion_loss

VOCAB, MASK = 48, 47
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64}


def tiny(model_type: str = "llama", seed: int = 0, **hf_fields) -> torch.nn.Module:
    torch.manual_seed(seed)
    hf = HFConfig(config={"model_type": model_type, **TINY}, **hf_fields)
    return build_model(ModelConfig(backbone="hf", hf=hf), VOCAB)


def tokens(shape=(2, 12), seed=1) -> torch.Tensor:
    return torch.randint(0, MASK, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_type,attn", [("llama", "sdpa"), ("qwen2", "eager")])
def test_bidirectional_attention_lets_position_0_see_the_last_token(model_type, attn):
    x = tokens()
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % MASK
    for bidirectional in (True, False):
        model = tiny(model_type, bidirectional=bidirectional, attn_implementation=attn).eval()
        with torch.no_grad():
            moved = (model(x)[:, 0] - model(y)[:, 0]).abs().max().item()
        # causal: position 0 cannot see the last token; bidirectional: it must
        assert (moved > 1e-4) == bidirectional, (bidirectional, moved)


def test_fused_head_loss_equals_the_plain_logits_path_values_and_gradients():
    process, schedule = XDLM(VOCAB, MASK, 0.1), schedules.get("loglinear")
    x0, t = tokens((3, 10)), torch.tensor([0.2, 0.5, 0.9])
    losses, grads = [], []
    for fused in (True, False):
        model = tiny()
        loss = diffusion_loss(model, process, schedule, x0, t, torch.Generator().manual_seed(5),
                              backend="auto" if fused else "torch", fused_head=fused)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    assert losses[0].item() > 0
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name
    assert grads[0]["net.lm_head.weight"].abs().sum() > 0


def test_gradient_checkpointing_recomputes_layers_with_the_same_loss_and_gradients():
    process, schedule = XDLM(VOCAB, MASK, 0.1), schedules.get("loglinear")
    x0, t = tokens((2, 10)), torch.tensor([0.3, 0.7])
    results = []
    for checkpointing in (False, True):
        model = tiny(gradient_checkpointing=checkpointing).train()
        calls = []
        # the checkpoint wraps the layer's forward, and its recompute stops once the last saved
        # tensor is rebuilt: count the starts of the layer's MLP
        model.net.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        loss = diffusion_loss(model, process, schedule, x0, t, torch.Generator().manual_seed(2), fused_head=True)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()], len(calls)))
    (l0, g0, calls_off), (l1, g1, calls_on) = results
    assert (calls_off, calls_on) == (1, 2)  # the layer ran again in backward
    assert torch.allclose(l0, l1, rtol=1e-6)
    for a, b in zip(g0, g1, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_weights_give_a_loss_close_to_float32():
    process, schedule = XDLM(VOCAB, MASK, 0.1), schedules.get("loglinear")
    x0, t = tokens((2, 10)), torch.tensor([0.3, 0.7])
    loss = {}
    for dtype in ("float32", "bfloat16"):
        model = tiny(dtype=dtype)
        assert next(model.parameters()).dtype == getattr(torch, dtype)
        loss[dtype] = diffusion_loss(model, process, schedule, x0, t, torch.Generator().manual_seed(3), fused_head=True)
        loss[dtype].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert loss["bfloat16"].item() == pytest.approx(loss["float32"].item(), rel=3e-2)


def test_pretrained_loads_a_saved_model_with_the_same_outputs(tmp_path):
    model = tiny().eval()
    model.net.config.mask_token_id = 40  # as LLaDA's config carries its mask id
    model.net.save_pretrained(tmp_path)
    loaded = build_model(ModelConfig(backbone="hf", hf=HFConfig(pretrained=str(tmp_path))), VOCAB).eval()
    x = tokens()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # the mask id comes from the model config before the tokenizer's
    assert resolve_vocabulary(HFConfig(pretrained=str(tmp_path)), 30, MASK) == (VOCAB, 40)


def test_mask_id_and_vocabulary_are_validated_naming_the_field():
    hf = HFConfig(config={"model_type": "llama", **TINY, "vocab_size": 64})
    assert resolve_vocabulary(hf, VOCAB, MASK) == (64, MASK)  # tokenizer's mask, model's vocabulary
    assert resolve_vocabulary(dataclasses.replace(hf, mask_id=63), VOCAB, MASK) == (64, 63)
    with pytest.raises(UserError, match=r"model\.hf\.mask_id: 64 is outside .*\[0, 63\]"):
        resolve_vocabulary(dataclasses.replace(hf, mask_id=64), VOCAB, MASK)
    with pytest.raises(UserError, match=r"model\.hf\.mask_id: required.*\[0, 63\]"):
        resolve_vocabulary(hf, VOCAB, None)
    with pytest.raises(UserError, match=r"model\.hf: .* 64 ids, fewer than .* 100"):
        resolve_vocabulary(hf, 100, MASK)
    with pytest.raises(UserError, match=r"model\.hf\.config\.model_type: 'nosuch'"):
        resolve_vocabulary(HFConfig(config={"model_type": "nosuch"}), VOCAB, MASK)


def test_job_config_validates_the_hf_section_and_builds_the_process_from_the_model():
    base = ["model.backbone=hf", "model.hf.config={model_type: llama, hidden_size: 32, vocab_size: 64}"]
    job = load_job(None, base)
    process = build_process(job, VOCAB, MASK)
    assert (process.xdlm.vocab_size, process.xdlm.mask_id) == (64, MASK)
    for override, message in [
        ("model.hf.dtype=float16", r"model: hf\.dtype: unknown 'float16'; allowed: float32, bfloat16"),
        ("model.hf.config=null", r"give hf\.pretrained .* or hf\.config"),
        ("model.hf.mask_id=64", r"hf\.mask_id: 64 is outside the declared vocabulary; allowed: \[0, 63\]"),
        ("model.time_conditioning=true", r"time_conditioning: must be False for backbone 'hf'"),
        ("model.hf.mask_id=-1", r"hf\.mask_id: must be a non-negative int"),
    ]:
        with pytest.raises(UserError, match=message):
            load_job(None, [*base, override])


REMOTE_CONFIG = """
from transformers import PretrainedConfig

class TinyDiffConfig(PretrainedConfig):
    model_type = "tiny_diff"

    def __init__(self, vocab_size=48, d_model=16, mask_token_id=47, **kwargs):
        self.vocab_size, self.d_model, self.mask_token_id = vocab_size, d_model, mask_token_id
        super().__init__(**kwargs)
"""
REMOTE_MODEL = """
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput
from .configuration_tiny import TinyDiffConfig

class TinyDiffModel(PreTrainedModel):
    config_class = TinyDiffConfig
    base_model_prefix = "body"

    def __init__(self, config):
        super().__init__(config)
        self.body = nn.ModuleDict({"wte": nn.Embedding(config.vocab_size, config.d_model),
                                   "mix": nn.Linear(config.d_model, config.d_model),
                                   "ff_out": nn.Linear(config.d_model, config.vocab_size, bias=True)})
        self.post_init()

    def get_output_embeddings(self):
        return self.body["ff_out"]

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        h = self.body["wte"](input_ids)
        h = h + self.body["mix"](h.mean(dim=1, keepdim=True))  # every position sees every token
        return CausalLMOutput(logits=self.body["ff_out"](torch.tanh(h)))
"""


def test_remote_code_model_needs_opt_in_and_trains_through_the_fused_head(tmp_path):
    (tmp_path / "configuration_tiny.py").write_text(textwrap.dedent(REMOTE_CONFIG))
    (tmp_path / "modeling_tiny.py").write_text(textwrap.dedent(REMOTE_MODEL))
    (tmp_path / "config.json").write_text(
        '{"model_type": "tiny_diff", "vocab_size": 48, "d_model": 16, "mask_token_id": 47, '
        '"auto_map": {"AutoConfig": "configuration_tiny.TinyDiffConfig", '
        '"AutoModel": "modeling_tiny.TinyDiffModel"}}')
    hf = HFConfig(pretrained=str(tmp_path))
    with pytest.raises(UserError, match=r"model\.hf\.trust_remote_code: .* only if you trust"):
        resolve_vocabulary(hf, VOCAB, None)
    hf = dataclasses.replace(hf, trust_remote_code=True)
    assert resolve_vocabulary(hf, VOCAB, None) == (48, 47)
    with pytest.raises(UserError, match=r"model\.hf\.pretrained: cannot load the weights"):
        build_model(ModelConfig(backbone="hf", hf=hf), VOCAB)
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    AutoModel.from_config(config, trust_remote_code=True).save_pretrained(tmp_path)
    model = build_model(ModelConfig(backbone="hf", hf=hf), VOCAB)
    assert model._base is None  # remote code: hidden states from the head's input, not a base model
    x = tokens()
    with torch.no_grad():  # the head's input, caught before the head runs, gives the model's own logits
        assert torch.allclose(model(x), model.net(input_ids=x).logits, atol=1e-6)
    process, schedule = XDLM(48, 47, 0.1), schedules.get("loglinear")
    x0, t = tokens((2, 10)), torch.tensor([0.4, 0.8])
    fused = diffusion_loss(model, process, schedule, x0, t, torch.Generator().manual_seed(4), fused_head=True)
    plain = diffusion_loss(model, process, schedule, x0, t, torch.Generator().manual_seed(4), backend="torch")
    assert torch.allclose(fused, plain, rtol=1e-5)


def test_posterior_sampler_draws_from_the_hf_backbone_with_a_fixed_prefix():
    model = tiny().eval()
    process = XDLM(VOCAB, MASK, 0.1)
    sampler = sampling.get("ancestral", process, schedules.get("loglinear"), steps=6)
    prefix = tokens((3, 16), seed=9)
    fixed = torch.zeros_like(prefix, dtype=torch.bool)
    fixed[:, :5] = True
    out = sampler.sample(lambda z, t: model(z, t), (3, 16), fixed_mask=fixed, fixed_tokens=prefix,
                         generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 16)
    assert torch.equal(out[:, :5], prefix[:, :5])
    assert not bool((out == MASK).any())  # the last step lands on clean tokens
    assert bool((out[:, 5:] >= 0).all()) and bool((out < VOCAB).all())
