"""The files of a run: one ``state.pt`` (+ ``job.yaml``) per checkpoint directory, written
atomically, and the run record beside the checkpoints.

The directory is handed to ``ray.train.report(checkpoint=Checkpoint.from_directory(...))``,
which persists it under the run's storage path (local or s3://) and keeps the last K.
A checkpoint is only readable once ``state.pt`` has been renamed into place, so a write that
dies half-way leaves nothing that could be mistaken for a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
"""A checkpoint's weights, optimizer, EMA, counters and data positions (no RNG states: every
random draw of a step is seeded from the step, so a resume replays it without them)."""
JOB_FILE = "job.yaml"
"""The resolved job config, in the run directory and in every checkpoint directory."""
RUN_RECORD = "xdlm_run.json"
"""Written once per run by the driver: its name, MLflow run id, tracking URI and resolved job."""


def write_checkpoint(directory: str | os.PathLike, state: dict[str, Any], config_yaml: str) -> Path:
    """Write ``state`` (tensors, state dicts, counters) and the job config into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / JOB_FILE).write_text(config_yaml)
    tmp = directory / (STATE_FILE + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)
    return directory


def read_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {STATE_FILE} in checkpoint {directory}: an incomplete write?")
    return torch.load(path, map_location="cpu", weights_only=False)
