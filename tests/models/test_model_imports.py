"""The backbone registry is full whichever models module a process imports first.

Each case runs in a fresh interpreter: inside the test session every module is already imported,
which would hide an import-order bug (the registry read before the backbones registered).
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
    registry = sys.modules["xdlm.models.registry"]
    assert registry.BACKBONES.available() == ["causal_dit", "dit", "hf", "oracle"], registry.BACKBONES.available()
    assert registry.backbone_info("oracle").solves == ("markov",)
    assert registry.backbone_info("causal_dit").objective == "autoregressive"
    ModelConfig = sys.modules["xdlm.models.config"].ModelConfig
    ModelConfig(backbone="causal_dit").validate()
    """
)


@pytest.mark.parametrize("module", ["xdlm.models.config", "xdlm.models"])
def test_first_import_fills_the_backbone_registry(module: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
