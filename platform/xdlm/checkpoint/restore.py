"""Find and load the latest checkpoint of a run directory (for resuming, eval, sampling and
evaluators)."""

from __future__ import annotations

from pathlib import Path

import torch

from xdlm.checkpoint.files import JOB_FILE, STATE_FILE, read_checkpoint
from xdlm.config import JobConfig, load_job
from xdlm.models import build_model


def has_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a checkpoint directory or a run directory holding one."""
    path = Path(path)
    return (path / STATE_FILE).is_file() or any(path.glob(f"checkpoint_*/{STATE_FILE}"))


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete checkpoint directory under ``run_dir`` (or ``run_dir`` itself)."""
    run_dir = Path(run_dir)
    if (run_dir / STATE_FILE).is_file():
        return run_dir
    candidates = sorted(p.parent for p in run_dir.glob(f"checkpoint_*/{STATE_FILE}"))
    if not candidates:
        raise FileNotFoundError(f"no checkpoint with a {STATE_FILE} under {run_dir}")
    return candidates[-1]  # Ray names them checkpoint_<timestamp>: sorted is chronological


def load_model_from_run(run_dir: str | Path, device="cpu", use_ema: bool = True) -> tuple[torch.nn.Module, JobConfig]:
    """Rebuild the model of a run from its latest checkpoint (EMA weights by default)."""
    directory = latest_checkpoint(run_dir)
    job = load_job(directory / JOB_FILE)
    state = read_checkpoint(directory)
    vocab_size = state["model"]["output_head.weight"].shape[0]
    model = build_model(job.model, vocab_size)
    model.load_state_dict(state["model"])
    if use_ema and state["ema"]["decay"] > 0:
        with torch.no_grad():
            for p, s in zip(model.parameters(), state["ema"]["shadow"], strict=True):
                p.copy_(s)
    return model.to(device), job
