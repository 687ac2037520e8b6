"""The bidirectional DiT denoiser: shapes, dependence structure, conditioning, dropout, grads."""

from __future__ import annotations

import pytest
import torch

from xdlm.models import DiT, ModelConfig, build_model


def test_shapes_and_registry_class(make_model, tokens, vocab):
    model = make_model()
    assert isinstance(model, DiT)
    logits = model(tokens)
    assert logits.shape == (3, 12, vocab)
    assert logits.dtype == torch.float32
    assert model.hidden_states(tokens).shape == (3, 12, 32)


def test_init_is_uniform_prediction(make_model, tokens, vocab):
    # adaLN-Zero + zero output head: exactly zero logits before any training.
    model = make_model(perturb=False)
    assert torch.equal(model(tokens), torch.zeros(3, 12, vocab))


def test_logits_equal_output_head_of_hidden_states(make_model, tokens):
    model = make_model(time_conditioning=True)
    t = torch.tensor([0.1, 0.5, 0.9])
    logits = model(tokens, t)
    torch.testing.assert_close(logits, model.output_head(model.hidden_states(tokens, t)))


def test_bidirectional_later_token_changes_earlier_logits(make_model, tokens, vocab):
    model = make_model()
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % vocab
    before, after = model(tokens), model(changed)
    # Every earlier position sees the last token through attention.
    diff = (before[:, :-1] - after[:, :-1]).abs().amax(dim=-1)  # [B, L-1]
    assert (diff > 1e-6).all()


def test_positions_matter(make_model, vocab):
    # Rotary embeddings make the model order-aware: a permuted input is not a permuted output.
    model = make_model()
    x = torch.arange(8)[None] % vocab
    perm = torch.tensor([3, 1, 7, 0, 5, 2, 6, 4])
    out = model(x)[0]
    out_perm = model(x[:, perm])[0]
    assert not torch.allclose(out[perm], out_perm, atol=1e-5)


def test_time_conditioning_on_uses_t(make_model, tokens):
    model = make_model(time_conditioning=True)
    a = model(tokens, torch.full((3,), 0.2))
    b = model(tokens, torch.full((3,), 0.8))
    assert (a - b).abs().max() > 1e-4
    # A scalar t broadcasts over the batch.
    torch.testing.assert_close(model(tokens, torch.tensor(0.2)), a)


def test_time_conditioning_on_requires_t(make_model, tokens):
    model = make_model(time_conditioning=True)
    with pytest.raises(ValueError, match="t: required"):
        model(tokens)
    with pytest.raises(ValueError, match=r"t: expected shape \[3\]"):
        model(tokens, torch.zeros(2))


def test_time_conditioning_off_ignores_t(make_model, tokens):
    model = make_model(time_conditioning=False)
    ref = model(tokens)
    assert torch.equal(model(tokens, torch.full((3,), 0.2)), ref)
    assert torch.equal(model(tokens, torch.full((3,), 0.9)), ref)


def test_off_path_is_constant_zero_time(make_model, tokens):
    # "Off" is the on-path fed t = 0: same weights give the same output.
    off = make_model(time_conditioning=False)
    on = make_model(time_conditioning=True)
    on.load_state_dict(off.state_dict())
    torch.testing.assert_close(on(tokens, torch.zeros(3)), off(tokens))


def test_eval_deterministic_train_dropout_random(make_model, tokens):
    model = make_model(dropout=0.3)
    assert torch.equal(model(tokens), model(tokens))
    model.train()
    assert not torch.equal(model(tokens), model(tokens))
    # dropout = 0 makes train mode deterministic too.
    model0 = make_model(dropout=0.0).train()
    assert torch.equal(model0(tokens), model0(tokens))


def test_too_long_input_raises(make_model):
    model = make_model(max_seq_len=16)
    model(torch.zeros(1, 16, dtype=torch.long))  # exactly max_seq_len is fine
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_bad_token_shape_raises(make_model):
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        make_model()(torch.zeros(12, dtype=torch.long))


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_gradients_reach_every_parameter(make_model, tokens, time_conditioning):
    model = make_model(time_conditioning=time_conditioning).train()
    t = torch.rand(3) if time_conditioning else None
    loss = torch.nn.functional.cross_entropy(model(tokens, t).flatten(0, 1), tokens.flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_zero_init_only_output_head_learns_at_first(make_model, tokens):
    # The reason the gradient test perturbs: at the exact init the output head is zero, so no
    # gradient flows back into the trunk. This documents that behaviour (it is DiT's).
    model = make_model(perturb=False).train()
    model(tokens).logsumexp(-1).sum().backward()
    assert model.output_head.bias.grad.abs().sum() > 0
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() == 0


def test_autocast_bf16_close_to_fp32(make_model, tokens):
    model = make_model(time_conditioning=True)
    t = torch.rand(3)
    ref = model(tokens, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens, t)
        hidden = model.hidden_states(tokens, t)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all() and torch.isfinite(hidden.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    # Backward works under autocast and gives finite gradients.
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(tokens, t).float().logsumexp(-1).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_model_keeps_fp32_rotary_tables(make_model, tokens):
    model = make_model().to(torch.bfloat16)
    assert model.rotary.cos.dtype == torch.float32
    fresh = make_model()
    torch.testing.assert_close(model.rotary.cos, fresh.rotary.cos)
    out = model(tokens)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_rotary_tables_not_in_state_dict_and_meta_init(small_cfg, vocab):
    cfg = small_cfg()
    with torch.device("meta"):
        model = build_model(cfg, vocab)
    assert not any("rotary" in k for k in model.state_dict())
    model.to_empty(device="cpu")
    reference = build_model(cfg, vocab)
    torch.testing.assert_close(model.rotary.cos, reference.rotary.cos)
    torch.testing.assert_close(model.rotary.sin, reference.rotary.sin)


def test_build_directly_equals_registry_build(small_cfg, vocab):
    torch.manual_seed(3)
    a = DiT(small_cfg(), vocab)
    torch.manual_seed(3)
    b = build_model(small_cfg(), vocab)
    assert type(a) is type(b)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)


def test_named_size_builds_with_resolved_config():
    model = build_model(ModelConfig(size="tiny", max_seq_len=32), 11)
    assert model.config.n_layers == 8 and model.config.hidden == 256 and model.config.n_heads == 8
    assert len(model.blocks) == 8
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 11)
