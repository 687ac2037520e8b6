"""Property-based checks of shapes and broadcasting (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xdlm.diffusion import XDLM


@st.composite
def problems(draw):
    N = draw(st.integers(2, 40))
    mask_id = draw(st.integers(0, N - 1))
    k = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    B = draw(st.integers(1, 4))
    L = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    return N, mask_id, k, B, L, seed


def setup(N, mask_id, k, B, L, seed):
    gen = torch.Generator().manual_seed(seed)
    proc = XDLM(N, mask_id, k)
    x0 = torch.randint(0, N - 1, (B, L), generator=gen)
    x0 = x0 + (x0 >= mask_id).long()
    alpha_seq = torch.rand(B, 1, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    z = proc.sample_marginal(x0, alpha_seq, generator=gen)
    logits = torch.randn(B, L, N, generator=gen, dtype=torch.float64)
    return proc, x0, z, alpha_seq, logits


@settings(max_examples=60, deadline=None)
@given(problems())
def test_nelbo_shape_and_alpha_broadcasting(problem):
    proc, x0, z, alpha_seq, logits = setup(*problem)
    per_seq = proc.nelbo(logits, x0, z, alpha_seq, -1.0)
    per_tok = proc.nelbo(logits, x0, z, alpha_seq.expand(x0.shape), torch.full(x0.shape, -1.0))
    assert per_seq.shape == x0.shape
    torch.testing.assert_close(per_seq, per_tok)
    assert torch.isfinite(per_seq).all() and (per_seq > -1e-9).all()  # a KL rate is >= 0
    scalar = proc.nelbo(logits[:1], x0[:1], z[:1], float(alpha_seq[0]), -1.0)
    torch.testing.assert_close(scalar, per_seq[:1])


@settings(max_examples=60, deadline=None)
@given(problems())
def test_posterior_is_a_distribution_with_matching_shape(problem):
    proc, x0, z, alpha_seq, logits = setup(*problem)
    probs = proc.clean_probs(logits, torch.float64)
    post = proc.posterior(probs, z, (alpha_seq + 0.005).clamp_max(1.0), alpha_seq)
    assert post.shape == logits.shape
    assert (post >= 0).all()
    torch.testing.assert_close(post.sum(-1), torch.ones_like(post[..., 0]))
    marg = proc.marginal(x0, alpha_seq)
    assert marg.shape == logits.shape
    torch.testing.assert_close(marg.sum(-1), torch.ones_like(marg[..., 0]))
