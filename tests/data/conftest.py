"""Shared fixtures for the data-layer tests: offline, with every cache in a temp dir."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Set before ``datasets``/``huggingface_hub`` are imported: they read these once at import time.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from xdlm.data import DataConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to ``~/.cache``: the default cache dir points into the test's tmp dir."""
    monkeypatch.setenv("XDLM_CACHE", str(tmp_path / "xdlm-default-cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def small_config(cache_dir: Path) -> Callable[..., DataConfig]:
    """A fast stdlib config (~0.3 MB of training text, 512-token BPE), overridable by keyword."""

    def make(**overrides: object) -> DataConfig:
        fields: dict[str, object] = {
            "cache_dir": str(cache_dir),
            "vocab_size": 512,
            "seq_len": 64,
            "max_train_bytes": 300_000,
            "max_eval_bytes": 60_000,
            "bpe_train_bytes": 200_000,
            "eval_sets": ["stdlib-docs"],
        }
        fields.update(overrides)
        return DataConfig(**fields)  # type: ignore[arg-type]

    return make
