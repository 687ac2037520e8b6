"""ModelConfig validation, size resolution and the backbone registry."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from xdlm.models import BACKBONES, SIZES, ModelConfig, build_model


def test_defaults_are_the_reference_setup():
    cfg = ModelConfig()
    assert cfg.backbone == "dit" and cfg.size == "tiny" and cfg.time_conditioning is False
    assert cfg.validate() is cfg
    resolved = cfg.resolved()
    assert (resolved.n_layers, resolved.hidden, resolved.n_heads) == (8, 256, 8)
    assert cfg.n_layers is None  # resolved() copies, it does not mutate


@pytest.mark.parametrize(
    ("size", "dims"), [("tiny", (8, 256, 8)), ("small", (12, 768, 12)), ("medium", (24, 1024, 16))]
)
def test_size_table(size, dims):
    assert tuple(ModelConfig(size=size).dims()) == dims
    assert tuple(SIZES[size]) == dims


def test_registry_lists_backbones():
    assert {"dit", "causal_dit"} <= set(BACKBONES.available())
    with pytest.raises(ValueError, match="causal_dit, dit"):
        BACKBONES.get("transformer-xl")


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"backbone": "rwkv"}, r"backbone: unknown 'rwkv'; allowed: .*causal_dit.*dit"),
        ({"size": "huge"}, r"size: unknown 'huge'; allowed: tiny, small, medium, custom"),
        ({"size": "custom", "hidden": 64, "n_heads": 4}, r"n_layers: required"),
        ({"size": "custom", "n_layers": 2, "n_heads": 4}, r"hidden: required"),
        (
            {"size": "custom", "n_layers": 0, "hidden": 64, "n_heads": 4},
            r"n_layers: must be a positive int",
        ),
        (
            {"size": "custom", "n_layers": 2, "hidden": 64, "n_heads": 5},
            r"hidden: must be divisible by n_heads",
        ),
        ({"size": "custom", "n_layers": 2, "hidden": 12, "n_heads": 4}, r"hidden: .*even"),
        ({"size": "tiny", "hidden": 512}, r"hidden: size 'tiny' fixes it to 256"),
        ({"dropout": 1.0}, r"dropout: must be a float in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout"),
        ({"time_conditioning": "yes"}, r"time_conditioning: must be True or False"),
        (
            {"backbone": "causal_dit", "time_conditioning": True},
            r"time_conditioning: must be False",
        ),
        ({"max_seq_len": 0}, r"max_seq_len: must be a positive int"),
        ({"cond_dim": -3}, r"cond_dim: must be a positive int"),
        (
            {"n_heads": 2.5, "size": "custom", "n_layers": 1, "hidden": 8},
            r"n_heads: must be a positive int",
        ),
    ],
)
def test_bad_values_name_the_field(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        ModelConfig(**overrides).validate()
    with pytest.raises(ValueError, match=pattern):
        build_model(ModelConfig(**overrides), 10)


def test_named_size_accepts_matching_explicit_dims():
    ModelConfig(size="small", n_layers=12, hidden=768, n_heads=12).validate()


@pytest.mark.parametrize("vocab", [0, -5, 2.0, True])
def test_bad_vocab_size(vocab):
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(ModelConfig(size="custom", n_layers=1, hidden=8, n_heads=2), vocab)


def test_works_as_omegaconf_structured_config():
    base = OmegaConf.structured(ModelConfig)
    merged = OmegaConf.merge(base, {"size": "custom", "n_layers": 2, "hidden": 16, "n_heads": 2})
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, ModelConfig)
    assert tuple(cfg.resolved().dims()) == (2, 16, 2)
