"""What every part of the GPU check shares: where the repository and the entry point are, the
shapes the steps run at, the atomic file write, number formatting, and the context a step
subprocess runs in (``StepContext``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The command-line entry point: the runner starts each step as ``python ENTRY --step NAME``.
ENTRY = ROOT / "benchmarks" / "gpu_check.py"

# Shapes -----------------------------------------------------------------------------------------
REAL_SHAPES = [(8192, 50257), (2048, 126464)]  # (tokens, V): GPT-2 and a 126k vocabulary
DRY_SHAPES = [(64, 257)]
GPT2_VOCAB, GPT2_MASK = 50258, 50257  # the gpt2 tokenizer plus [MASK] (jobs/owt_small.yaml)
K = 0.1  # the paper's default mixing ratio: every term of the loss is live


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``: a reader
    (or a kill at the step's time limit) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fmt(x, digits=3) -> str:
    """A number for a table: ``digits`` significant digits for floats, '-' for None."""
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


class StepContext:
    """What a step subprocess gets: the mode, the env step's findings, and a way to save partial
    results (so a step killed at its time limit still leaves what it measured)."""

    def __init__(self, dry_run: bool, out_dir: Path, env: dict, result_path: Path, options: dict):
        self.dry_run = dry_run
        self.out_dir = out_dir
        self.env = env
        self.result_path = result_path
        self.options = options

    @property
    def spec(self) -> dict:
        """The device table's entry (devices.device_spec), {} in the dry run or when unknown."""
        return self.env.get("spec") or {}

    def save(self, result: dict) -> None:
        write_atomic(self.result_path, json.dumps(result, indent=1, default=str))


def free_memory(device) -> None:
    """Drop the previous measurement's tensors before the next one (and the CUDA cache, so the
    next peak-memory reading starts from what is live)."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
