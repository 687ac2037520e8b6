"""Bad input raises ValueError naming the argument and the allowed range."""

import pytest
import torch

from xdlm.diffusion import XDLM


@pytest.mark.parametrize("k", [-0.1, 1.01, float("nan")])
def test_k_outside_unit_interval(k):
    with pytest.raises(ValueError, match=r"k must be in \[0, 1\]"):
        XDLM(10, 9, k)


@pytest.mark.parametrize("mask_id", [-1, 10, 11])
def test_mask_id_outside_vocabulary(mask_id):
    with pytest.raises(ValueError, match=r"mask_id must be in \[0, vocab_size - 1\] = \[0, 9\]"):
        XDLM(10, mask_id, 0.5)


def test_x0_containing_the_mask():
    proc = XDLM(10, 9, 0.5)
    x0 = torch.tensor([[1, 9]])
    with pytest.raises(ValueError, match="x0 must not contain the mask id 9"):
        proc.sample_marginal(x0, 0.5)
    with pytest.raises(ValueError, match="x0 must not contain the mask id 9"):
        proc.nelbo(torch.zeros(1, 2, 10), x0, x0, 0.5, -1.0)


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.5])
def test_alpha_outside_range(alpha):
    proc = XDLM(10, 9, 0.5)
    x0 = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match=r"alpha_t must be in \(0, 1\]"):
        proc.nelbo(torch.zeros(1, 2, 10), x0, x0, alpha, -1.0)
    with pytest.raises(ValueError, match=r"alpha_t must be in \(0, 1\]"):
        proc.marginal(x0, alpha)


def test_shape_mismatches():
    proc = XDLM(10, 9, 0.5)
    x0 = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="z_t has shape"):
        proc.nelbo(torch.zeros(1, 3, 10), x0, x0[:, :2], 0.5, -1.0)
    with pytest.raises(ValueError, match="logits has last dimension 11, expected the vocabulary size 10"):
        proc.nelbo(torch.zeros(1, 3, 11), x0, x0, 0.5, -1.0)
    with pytest.raises(ValueError, match="alpha_t of shape"):
        proc.nelbo(torch.zeros(1, 3, 10), x0, x0, torch.full((2, 1), 0.5), -1.0)
    with pytest.raises(ValueError, match="x_probs has last dimension"):
        proc.posterior(torch.full((1, 3, 9), 0.1), x0, 0.6, 0.5)


def test_token_ids_outside_vocabulary():
    proc = XDLM(10, 9, 0.5)
    with pytest.raises(ValueError, match=r"z_t holds ids outside \[0, 9\]"):
        proc.nelbo(torch.zeros(1, 1, 10), torch.tensor([[1]]), torch.tensor([[12]]), 0.5, -1.0)
