"""Nested configs become flat, valid, size-limited MLflow params."""

from __future__ import annotations

import dataclasses

from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import OmegaConf

from xdlm.tracking.flatten import clean_tags, flatten_params, sanitize_key


def test_nested_dicts_become_dotted_keys_with_string_values():
    config = {
        "model": {"backbone": "dit", "hidden": 64, "attn": {"heads": 4, "dropout": 0.1}},
        "optim": {"lr": 3e-4, "betas": [0.9, 0.95]},
        "seed": 0,
        "resume": None,
        "amp": True,
    }
    assert flatten_params(config) == {
        "model.backbone": "dit",
        "model.hidden": "64",
        "model.attn.heads": "4",
        "model.attn.dropout": "0.1",
        "optim.lr": "0.0003",
        "optim.betas": "[0.9, 0.95]",
        "seed": "0",
        "resume": "None",
        "amp": "True",
    }


def test_empty_mapping_is_kept_visible():
    assert flatten_params({"callbacks": {}, "x": 1}) == {"callbacks": "{}", "x": "1"}


def test_omegaconf_config_is_resolved():
    cfg = OmegaConf.create({"width": 32, "model": {"hidden": "${width}", "name": "???"}})
    assert flatten_params(cfg) == {"width": "32", "model.hidden": "32", "model.name": "???"}


def test_dataclasses_are_flattened():
    @dataclasses.dataclass
    class Optim:
        lr: float = 1e-3
        warmup: int = 10

    assert flatten_params({"optim": Optim()}) == {"optim.lr": "0.001", "optim.warmup": "10"}


def test_long_values_are_truncated_to_mlflow_limit():
    flat = flatten_params({"prompt": "x" * (MAX_PARAM_VAL_LENGTH + 500)})
    assert len(flat["prompt"]) == MAX_PARAM_VAL_LENGTH
    assert flat["prompt"].endswith("[truncated]")


def test_keys_are_made_valid_for_mlflow():
    assert sanitize_key("loss@val!") == "loss_val_"
    assert sanitize_key("a//b") == "a__b"
    assert sanitize_key("..") == "_.."
    assert len(sanitize_key("k" * 400)) == 250
    assert clean_tags({"git sha": 123}) == {"git sha": "123"}
