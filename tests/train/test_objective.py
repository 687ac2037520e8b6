"""The objectives against closed forms: the MDLM reduction of the NELBO at k = 0 and the
next-token cross-entropy written out by hand; the backbone's declared objective picks one."""

from __future__ import annotations

import pytest
import torch

from xdlm.config import JobConfig
from xdlm.diffusion import XDLM, schedules
from xdlm.objective import autoregressive_loss, build_process, diffusion_loss, make_objective

V, MASK, B, L = 11, 10, 3, 7


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits ignore z_t and t: the loss is then a known function of them."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, z_t, t=None):
        return self.logits


def test_diffusion_loss_at_k0_is_the_mdlm_bound():
    """k = 0, log-linear schedule: l_t = -alpha'/(1 - alpha) * (-log p_theta(x_0)) on masked
    tokens and 0 elsewhere (docs/math.md), averaged over all B x L tokens."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, V, generator=gen, dtype=torch.float64)
    x0 = torch.randint(0, MASK, (B, L), generator=gen)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    process, schedule = XDLM(V, MASK, 0.0), schedules.get("loglinear")

    loss = diffusion_loss(FixedLogits(logits), process, schedule, x0, t, torch.Generator().manual_seed(5),
                          backend="torch")

    alpha = schedule.alpha(t)[:, None]
    z_t = process.sample_marginal(x0, alpha, generator=torch.Generator().manual_seed(5))  # the same draw
    masked_logits = logits.clone()
    masked_logits[..., MASK] = -torch.inf
    log_p_x0 = torch.log_softmax(masked_logits, -1).gather(-1, x0[..., None])[..., 0]
    weight = -schedule.dalpha(t)[:, None] / (1 - alpha)
    expected = torch.where(z_t == MASK, weight * -log_p_x0, torch.zeros_like(log_p_x0)).mean()
    assert (z_t == MASK).any() and (z_t != MASK).any()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_autoregressive_loss_is_next_token_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(B, L, V, generator=gen)
    x0 = torch.randint(0, V, (B, L), generator=gen)
    expected = -sum(
        torch.log_softmax(logits[b, i], -1)[x0[b, i + 1]] for b in range(B) for i in range(L - 1)
    ) / (B * (L - 1))
    assert float(autoregressive_loss(FixedLogits(logits), x0)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("backbone, reference", [("dit", "diffusion"), ("causal_dit", "autoregressive")])
def test_the_backbone_declares_its_objective(backbone, reference):
    job = JobConfig()
    job.model.backbone = backbone
    job.diffusion.k, job.diffusion.loss_backend = 0.0, "torch"
    process = build_process(job, V, MASK)
    assert process.xdlm.k == 0.0 and process.xdlm.mask_id == MASK and process.xdlm.vocab_size == V
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(B, L, V, generator=gen)
    x0 = torch.randint(0, MASK, (B, L), generator=gen)
    t = torch.full((B,), 0.5, dtype=torch.float64)
    got = make_objective(job, process)(FixedLogits(logits), x0, t, torch.Generator().manual_seed(3))
    if reference == "autoregressive":
        want = autoregressive_loss(FixedLogits(logits), x0)
    else:
        want = diffusion_loss(FixedLogits(logits), process.xdlm, process.schedule, x0, t,
                              torch.Generator().manual_seed(3), backend="torch")
    assert float(got) == pytest.approx(float(want), rel=1e-6)
