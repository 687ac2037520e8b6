"""The wsd schedule (warm-up, stable, decay) against values computed by hand, through the real
LambdaLR the engine builds, and the property decay branches rest on."""

from __future__ import annotations

import math

import pytest
import torch

from xdlm.config import DECAY_SHAPES as SHAPE_NAMES
from xdlm.config import ConfigError, OptimConfig, load_job
from xdlm.train.optim import DECAY_SHAPES, build_scheduler, lr_multiplier


def wsd(**kw) -> OptimConfig:
    return OptimConfig(lr_schedule="wsd", warmup_steps=2, decay_fraction=0.3, min_lr_ratio=0.1, **kw).validate()


# T = 10, W = 2, decay_fraction 0.3: S = 10 - 3 = 7, the decay takes updates 7, 8, 9 (p = 1/3, 2/3, 1)
HAND = {
    "linear": [0.5, 1, 1, 1, 1, 1, 1, 0.1 + 0.9 * 2 / 3, 0.1 + 0.9 / 3, 0.1],
    "cosine": [0.5, 1, 1, 1, 1, 1, 1, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25, 0.1],
    "1-sqrt": [0.5, 1, 1, 1, 1, 1, 1, 0.1 + 0.9 * (1 - math.sqrt(1 / 3)), 0.1 + 0.9 * (1 - math.sqrt(2 / 3)), 0.1],
}


@pytest.mark.parametrize("shape", sorted(HAND))
def test_wsd_matches_the_hand_computed_values(shape):
    cfg = wsd(decay_shape=shape)
    assert cfg.decay_start(10) == 7
    assert [lr_multiplier(i, cfg, 10) for i in range(10)] == pytest.approx(HAND[shape], abs=1e-12)


def test_the_engine_scheduler_applies_it_to_the_updates():
    """LambdaLR's indexing: update i (0-based) runs at lr * multiplier(i)."""
    cfg = wsd(decay_shape="linear")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, 10)
    used = []
    for _ in range(10):
        used.append(optimizer.param_groups[0]["lr"] / cfg.lr)
        optimizer.step()
        scheduler.step()
    assert used == pytest.approx(HAND["linear"], abs=1e-12)


def test_a_shorter_wsd_run_equals_a_longer_one_up_to_its_decay():
    """Why a decay branch can start from a longer run: up to decay_start(T_h) a wsd run of T_h
    updates uses exactly the learning rates of the longer wsd (or constant) run."""
    cfg = wsd(decay_shape="cosine")
    constant = OptimConfig(lr_schedule="constant", warmup_steps=2).validate()
    for horizon in (10, 25, 60):
        start = cfg.decay_start(horizon)
        assert [lr_multiplier(i, cfg, horizon) for i in range(start)] == [lr_multiplier(i, cfg, 100) for i in range(start)]
        assert [lr_multiplier(i, cfg, horizon) for i in range(start)] == [lr_multiplier(i, constant, 100) for i in range(start)]
        assert lr_multiplier(start, cfg, horizon) < 1.0  # and it decays from there


def test_no_decay_and_no_warmup_edge_cases():
    flat = OptimConfig(lr_schedule="wsd", warmup_steps=0, decay_fraction=0.0).validate()
    assert [lr_multiplier(i, flat, 5) for i in range(5)] == [1.0] * 5
    whole = OptimConfig(lr_schedule="wsd", warmup_steps=0, decay_fraction=1.0, min_lr_ratio=0.0).validate()
    assert [lr_multiplier(i, whole, 4) for i in range(4)] == pytest.approx([0.75, 0.5, 0.25, 0.0])


def test_branch_starts_are_the_decay_starts_of_the_horizons():
    cfg = OptimConfig(lr_schedule="wsd", decay_fraction=0.2)
    assert cfg.branch_starts(100, [0.25, 0.5, 1.0]) == {20, 40, 80}
    assert cfg.branch_starts(100, []) == set()


def test_every_shape_name_has_a_formula():
    assert set(DECAY_SHAPES) == set(SHAPE_NAMES)
    for g in DECAY_SHAPES.values():
        assert g(0.0) == pytest.approx(1.0) and g(1.0) == pytest.approx(0.0)


@pytest.mark.parametrize(("override", "field", "allowed"), [
    ("optim.lr_schedule=step", "optim.lr_schedule", "constant, cosine, wsd"),
    ("optim.decay_shape=exp", "optim.decay_shape", "linear, cosine, 1-sqrt"),
    ("optim.decay_fraction=1.5", "optim.decay_fraction", "[0, 1]"),
    ("train.branch_horizons=[0.5,1.2]", "train.branch_horizons", "(0, 1]"),
])
def test_bad_values_name_the_field_and_what_is_allowed(override, field, allowed):
    with pytest.raises(ConfigError) as err:
        load_job(None, [override])
    assert str(err.value).startswith(field) and allowed in str(err.value)
