"""EMA against its closed form, and PBT's hyperparameter adoption on a real optimizer state."""

from __future__ import annotations

import math

import pytest
import torch

from xdlm.config import JobConfig
from xdlm.train.engine import DDPEngine
from xdlm.train.optim import EMA, lr_multiplier


def test_ema_follows_its_closed_form_and_restores_the_training_weights():
    """shadow_n = d^n w_0 + sum_i (1 - d) d^(n - i) w_i for the weights w_i after update i."""
    model = torch.nn.Linear(1, 1, bias=False)
    decay = 0.9
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay)
    weights = [2.0, -1.0, 5.0]
    for w in weights:
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)
    n = len(weights)
    expected = decay**n * 1.0 + sum((1 - decay) * decay ** (n - 1 - i) * w for i, w in enumerate(weights))
    assert ema.shadow[0].item() == pytest.approx(expected, rel=1e-6)

    with pytest.raises(RuntimeError), ema.applied(model):
        assert model.weight.item() == pytest.approx(expected, rel=1e-6)
        raise RuntimeError("evaluation failed")
    assert model.weight.item() == 5.0  # put back even when the evaluation raised

    copy = EMA(model, 0.5)
    copy.load_state_dict(ema.state_dict())
    assert copy.decay == decay and torch.equal(copy.shadow[0], ema.shadow[0])
    ema.shadow[0].add_(1.0)
    assert not torch.equal(copy.shadow[0], ema.shadow[0])  # a copy, not an alias


def test_ema_disabled_and_adopted():
    model = torch.nn.Linear(2, 1)
    off = EMA(model, 0.0)
    off.update(model)
    assert off.shadow == []
    with off.applied(model) as same:
        assert same is model
    off.adopt_decay(0.99, model)  # a donor without an average: start one from the current weights
    assert off.decay == 0.99 and all(torch.equal(s, p) for s, p in zip(off.shadow, model.parameters(), strict=True))


def _engine(lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999)) -> tuple[DDPEngine, torch.nn.Module]:
    job = JobConfig()
    job.optim = _job_optim(lr, weight_decay, betas)
    job.train.steps, job.train.global_batch, job.train.micro_batch, job.cluster.num_workers = 10, 1, 1, 1
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return DDPEngine(model, job, world=1), model


def _train(engine: DDPEngine, model: torch.nn.Module, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        engine.zero_grad()
        engine.backward(model(torch.randn(4, 3, generator=gen)).pow(2).mean())
        engine.step()


def test_adopt_hyperparameters_keeps_the_moments_and_position_and_takes_the_new_lr():
    donor, donor_model = _engine(lr=3e-3)
    _train(donor, donor_model, 4)
    state = donor.state_dict()

    engine, model = _engine(lr=1e-3, weight_decay=0.05, betas=(0.8, 0.95))
    model.load_state_dict(donor_model.state_dict())
    engine.load_state_dict(state, directory="")
    cfg = _job_optim(1e-3, 0.05, (0.8, 0.95))
    engine.adopt_hyperparameters(cfg, total_steps=10)
    group = engine.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(1e-3 * lr_multiplier(4, cfg, 10), rel=1e-12)
    assert engine.lr() == group["lr"]
    assert group["initial_lr"] == 1e-3 and group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.05
    donor_params = dict(donor_model.named_parameters())
    for name, p in model.named_parameters():  # the donor's Adam moments are kept
        assert torch.equal(engine.optimizer.state[p]["exp_avg"], donor.optimizer.state[donor_params[name]]["exp_avg"])
    _train(engine, model, 1)  # the schedule goes on from step 4 with the new base lr
    assert engine.lr() == pytest.approx(1e-3 * lr_multiplier(5, cfg, 10), rel=1e-12)
    assert engine.scheduler.last_epoch == 5 and math.isfinite(engine.lr())


def _job_optim(lr, weight_decay, betas):
    job = JobConfig()
    job.optim.lr, job.optim.weight_decay, job.optim.betas = lr, weight_decay, list(betas)
    job.optim.warmup_steps, job.optim.lr_schedule, job.optim.min_lr_ratio = 2, "cosine", 0.1
    return job.optim
