"""The causal DiT: no information from the future, and a correct log-likelihood helper."""

from __future__ import annotations

import math

import pytest
import torch

from xdlm.models import CausalDiT, ModelConfig, build_model, count_parameters


@pytest.fixture
def causal(make_model):
    return make_model(backbone="causal_dit")


def test_shapes(causal, tokens, vocab):
    assert isinstance(causal, CausalDiT)
    assert causal(tokens).shape == (3, 12, vocab)
    assert causal.hidden_states(tokens).shape == (3, 12, 32)
    torch.testing.assert_close(causal(tokens), causal.output_head(causal.hidden_states(tokens)))


def test_later_token_does_not_change_earlier_logits(causal, tokens, vocab):
    for pos in (11, 6, 1):
        changed = tokens.clone()
        changed[:, pos] = (changed[:, pos] + 1) % vocab
        before, after = causal(tokens), causal(changed)
        torch.testing.assert_close(before[:, :pos], after[:, :pos], atol=1e-6, rtol=0)
        # ... while the changed position itself (and later ones) do see it.
        assert (before[:, pos:] - after[:, pos:]).abs().amax() > 1e-5


def test_prefix_logits_match_full_sequence(causal, tokens):
    # Running on a prefix gives the same logits as the prefix rows of the full run.
    torch.testing.assert_close(causal(tokens[:, :5]), causal(tokens)[:, :5], atol=1e-5, rtol=1e-5)


def test_log_likelihood_matches_manual_sum(causal, tokens):
    ll = causal.log_likelihood(tokens)
    assert ll.shape == (3,)
    log_probs = torch.log_softmax(causal(tokens), dim=-1)
    manual = torch.zeros(3)
    for b in range(3):
        for i in range(11):
            manual[b] += log_probs[b, i, tokens[b, i + 1]]
    torch.testing.assert_close(ll, manual, atol=1e-4, rtol=1e-5)
    assert (ll < 0).all()


def test_log_likelihood_mask(causal, tokens):
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 8:] = False  # e.g. padding after position 7
    full = causal.log_likelihood(tokens[:, :8])
    torch.testing.assert_close(causal.log_likelihood(tokens, mask=mask), full, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="mask"):
        causal.log_likelihood(tokens, mask=mask[:, :5])


def test_log_likelihood_at_init_is_uniform(make_model, tokens, vocab):
    model = make_model(backbone="causal_dit", perturb=False)
    expected = torch.full((3,), -11 * math.log(vocab))
    torch.testing.assert_close(model.log_likelihood(tokens), expected)


def test_causal_rejects_time_conditioning(small_cfg, vocab):
    with pytest.raises(ValueError, match="time_conditioning"):
        build_model(small_cfg(backbone="causal_dit", time_conditioning=True), vocab)
    with pytest.raises(ValueError, match="time_conditioning"):
        CausalDiT(small_cfg(time_conditioning=True), vocab)


def test_gradients_reach_every_parameter(causal, tokens):
    causal.train()
    (-causal.log_likelihood(tokens).mean()).backward()
    for name, p in causal.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_same_parameters_as_bidirectional():
    # The AR baseline is the same network with a causal mask: parameter-matched comparisons.
    dit = build_model(ModelConfig(size="custom", n_layers=3, hidden=48, n_heads=6), 101)
    ar = build_model(
        ModelConfig(backbone="causal_dit", size="custom", n_layers=3, hidden=48, n_heads=6), 101
    )
    assert count_parameters(dit) == count_parameters(ar)
    assert list(dit.state_dict()) == list(ar.state_dict())


def test_too_long_input_raises(make_model):
    model = make_model(backbone="causal_dit", max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.log_likelihood(torch.zeros(2, 9, dtype=torch.long))


def test_autocast_bf16(causal, tokens):
    ref = causal.log_likelihood(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ll = causal.log_likelihood(tokens)
    assert ll.dtype == torch.float32
    torch.testing.assert_close(ll, ref, atol=0.5, rtol=0.02)
