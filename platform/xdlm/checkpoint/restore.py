"""Find and load a run's newest complete checkpoint (for resuming, eval, sampling, evaluators).

"Newest complete" is read from storage (``xdlm.checkpoint.store``), then confirmed by the
checksums of the copy that is loaded; a checkpoint that fails is skipped with a warning naming
it and the one used instead, so one corrupt file never stops a resume.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from xdlm.checkpoint.files import JOB_FILE, read_checkpoint
from xdlm.checkpoint.manifest import MANIFEST, verify_local
from xdlm.checkpoint.store import StoredCheckpoint, scan
from xdlm.config import JobConfig, load_job
from xdlm.errors import UserError
from xdlm.models import ModelConfig, build_model

log = logging.getLogger(__name__)


class NoCompleteCheckpoint(UserError):
    """A run directory without any checkpoint that is whole."""


def has_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a checkpoint directory or a run directory holding a complete one."""
    path = Path(path)
    return (path / MANIFEST).is_file() or bool(scan(str(path.resolve()))[0])


def _warn_skipped(skipped: list[tuple[str, str]], used: str) -> None:
    for name, problem in skipped:
        log.warning("checkpoint %s is unusable (%s); using the previous good one, %s", name, problem, used)


@contextlib.contextmanager
def open_newest(run_dir: str) -> Iterator[tuple[Path, StoredCheckpoint] | None]:
    """The newest checkpoint of ``run_dir`` (local or s3://) that is complete and passes its
    checksums, as a local directory (a temporary copy for remote storage), or None when the run
    has no checkpoint at all.  Raises ``NoCompleteCheckpoint`` when it has some but none is
    whole: a resume must never silently start over."""
    complete, broken = scan(run_dir)
    skipped = list(broken.items())
    for candidate in complete:
        with _local_copy(candidate.uri) as directory:
            problem = verify_local(directory)
            if problem is None:
                _warn_skipped([s for s in skipped if s[0] > candidate.name], candidate.name)
                yield directory, candidate
                return
        skipped.append((candidate.name, problem))
    if skipped:
        raise NoCompleteCheckpoint(
            f"run {run_dir} has checkpoints but none is complete: "
            + "; ".join(f"{name}: {problem}" for name, problem in sorted(skipped)))
    yield None


@contextlib.contextmanager
def open_checkpoint(uri: str) -> Iterator[Path]:
    """One given checkpoint directory (local or s3://) as a local directory, checksums verified."""
    with _local_copy(uri) as directory:
        problem = verify_local(directory)
        if problem is not None:
            raise NoCompleteCheckpoint(f"checkpoint {uri} is unusable: {problem}")
        yield directory


@contextlib.contextmanager
def _local_copy(uri: str) -> Iterator[Path]:
    if "://" not in uri or uri.startswith("file://"):
        yield Path(uri.removeprefix("file://"))
        return
    with tempfile.TemporaryDirectory(prefix="xdlm-restore-") as tmp:
        pafs.copy_files(uri, tmp)
        yield Path(tmp)


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete local checkpoint directory of ``run_dir`` (or ``run_dir`` itself when
    it is one), checksums verified."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).is_file():
        problem = verify_local(run_dir)
        if problem:
            raise NoCompleteCheckpoint(f"checkpoint {run_dir} is unusable: {problem}")
        return run_dir
    with open_newest(str(run_dir.resolve())) as found:
        if found is None:
            raise NoCompleteCheckpoint(f"no checkpoint under {run_dir}")
        return found[0]


#: Vocabulary of the skeleton ``saved_vocab_size`` builds (only its parameter names are read).
SKELETON_VOCAB = 256


def saved_vocab_size(model_cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> int:
    """Rows of the output head in a saved state dict, whatever the backbone calls its head
    (the DiT ``output_head.weight``, a Hugging Face model ``net.lm_head.weight`` or its remote
    code's own name): the head's name is read off a skeleton of the backbone built on the meta
    device (no memory, no weights read)."""
    with torch.device("meta"):
        skeleton = build_model(model_cfg, SKELETON_VOCAB)
    head = skeleton.output_head
    name = next(n for n, m in skeleton.named_modules() if m is head)
    key = f"{name}.weight"
    if key not in weights:
        raise UserError(f"checkpoint: no {key} in its weights: it was not written by a "
                        f"{model_cfg.backbone!r} model of this job")
    return int(weights[key].shape[0])


def load_model_from_run(run_dir: str | Path, device="cpu", use_ema: bool = True) -> tuple[torch.nn.Module, JobConfig]:
    """Rebuild the model of a run from its newest complete checkpoint (EMA weights by default)."""
    directory = latest_checkpoint(run_dir)
    job = load_job(directory / JOB_FILE)
    state: dict[str, Any] = read_checkpoint(directory)
    model = build_model(job.model, saved_vocab_size(job.model, state["model"]))
    model.load_state_dict(state["model"])
    if use_ema and state["ema"]["decay"] > 0:
        with torch.no_grad():
            for p, s in zip(model.parameters(), state["ema"]["shadow"], strict=True):
                p.copy_(s)
    return model.to(device), job
