"""The files of a run: one ``state.pt`` (+ ``job.yaml``) per checkpoint directory, written
atomically, and the run record beside the checkpoints.

The directory is handed to ``ray.train.report(checkpoint=Checkpoint.from_directory(...))``,
which copies it under the run's storage path (local or s3://).  ``state.pt`` is renamed into
place once whole, and the manifest written after it (``xdlm.checkpoint.manifest``), so neither a
write nor a copy that dies half-way leaves something that reads as a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from xdlm.checkpoint.manifest import write_manifest

STATE_FILE = "state.pt"
"""A checkpoint's weights, optimizer, EMA, counters and data positions (no RNG states: every
random draw of a step is seeded from the step, so a resume replays it without them)."""
JOB_FILE = "job.yaml"
"""The resolved job config, in the run directory and in every checkpoint directory."""
RUN_RECORD = "xdlm_run.json"
"""Written once per run by the driver: its name, MLflow run id, tracking URI and resolved job."""
FAILURE_RECORD = "xdlm_failure.json"
"""Written by rank 0 when the workers stop a run on purpose (a non-finite loss): the step and
the reason, for the driver to end the MLflow run FAILED with."""


def write_checkpoint(directory: str | os.PathLike, state: dict[str, Any], config_yaml: str, ranks: int = 1) -> Path:
    """Write ``state`` (tensors, state dicts, counters), the job config and, last, the manifest
    into ``directory``.  ``ranks``: how many ranks write files into this checkpoint (ZeRO shards);
    the others write their own manifests (``xdlm.checkpoint.manifest``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / JOB_FILE).write_text(config_yaml)
    tmp = directory / (STATE_FILE + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)
    write_manifest(directory, rank=0, step=state["counters"]["step"], ranks=ranks)
    return directory


def read_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {STATE_FILE} in checkpoint {directory}: an incomplete write?")
    return torch.load(path, map_location="cpu", weights_only=False)
