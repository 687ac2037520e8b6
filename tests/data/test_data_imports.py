"""The registries are full whichever data module a process imports first.

Each case runs in a fresh interpreter: inside the test session every module is already imported,
which would hide an import-order bug (a registry read before its entries registered).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent(
    """
    import importlib, sys
    importlib.import_module(sys.argv[1])  # the first xdlm import of this process
    registry = sys.modules["xdlm.data.registry"]
    sources = set(registry.SOURCES.available())
    assert {"stdlib", "stdlib-docs", "text", "wikitext-2", "hf"} <= sources, sources
    tokenizers = set(registry.TOKENIZERS.available())
    assert {"bpe", "gpt2", "bert-base-uncased"} <= tokenizers, tokenizers
    DataConfig = sys.modules["xdlm.data.config"].DataConfig
    DataConfig(source="wikitext-2", tokenizer="gpt2", eval_sets=["lambada"]).validate()
    """
)


@pytest.mark.parametrize("module", ["xdlm.data.config", "xdlm.data"])
def test_first_import_fills_the_data_registries(module: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
