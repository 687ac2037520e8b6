"""The checkpoints of a run on its storage (a local path or s3://), whatever Ray recorded.

Ray keeps its own list of a run's checkpoints, but a checkpoint can be whole on storage and not
in that list (the process died while reporting it), or in the list and not whole (a full disk).
This module reads storage itself: every ``checkpoint_*`` directory whose manifests are present
and whose files have the sizes they list is a candidate, newest step first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pyarrow.fs as pafs

from xdlm.checkpoint.files import JOB_FILE
from xdlm.checkpoint.manifest import MANIFEST, manifest_name

log = logging.getLogger(__name__)
PREFIX = "checkpoint_"
# A manifest that exists but could not be read may be a passing storage error, not a broken
# checkpoint: such a directory is reported but never pruned.
UNREADABLE = "unreadable manifest"


@dataclass(frozen=True)
class StoredCheckpoint:
    uri: str
    """Where the directory is: a local path or s3://bucket/key."""
    step: int
    name: str


def _filesystem(run_dir: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(run_dir if "://" in run_dir else f"file://{run_dir}")


def _uri(run_dir: str, name: str) -> str:
    return f"{run_dir.rstrip('/')}/{name}"


def _read_json(fs: pafs.FileSystem, path: str) -> dict:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _problem(fs: pafs.FileSystem, directory: str) -> tuple[str | None, int]:
    """(what is wrong or None, step) from the manifests and the sizes on storage."""
    try:
        main = _read_json(fs, f"{directory}/{MANIFEST}")
        manifests = [main] + [_read_json(fs, f"{directory}/{manifest_name(r)}") for r in range(1, main["ranks"])]
    except FileNotFoundError:
        return "no manifest (an incomplete write)", -1
    except (OSError, ValueError, KeyError) as err:
        return f"{UNREADABLE} ({err})", -1
    wanted = {rel: spec["size"] for m in manifests for rel, spec in m["files"].items()}
    infos = fs.get_file_info([f"{directory}/{rel}" for rel in wanted])
    for (rel, size), info in zip(wanted.items(), infos, strict=True):
        if info.type != pafs.FileType.File:
            return f"{rel} is missing", main["step"]
        if info.size != size:
            return f"{rel} has {info.size} bytes, the manifest says {size} (truncated)", main["step"]
    return None, int(main["step"])


def scan(run_dir: str) -> tuple[list[StoredCheckpoint], dict[str, str]]:
    """(complete checkpoints, newest step first; {directory name: problem} of the others)."""
    fs, root = _filesystem(run_dir)
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except FileNotFoundError:
        return [], {}
    complete, broken = [], {}
    for entry in entries:
        if entry.type != pafs.FileType.Directory or not entry.base_name.startswith(PREFIX):
            continue
        problem, step = _problem(fs, entry.path)
        if problem is None:
            complete.append(StoredCheckpoint(_uri(run_dir, entry.base_name), step, entry.base_name))
        else:
            broken[entry.base_name] = problem
    complete.sort(key=lambda c: (c.step, c.name), reverse=True)
    return complete, broken


def delete(uri: str) -> None:
    fs, path = _filesystem(uri)
    fs.delete_dir(path)


def branch_steps(run_dir: str) -> set[int]:
    """The steps whose checkpoints ``run_dir`` keeps for decay branches, from the job file the
    driver writes there (``train.branch_horizons``; ``OptimConfig.branch_starts``); empty
    without a job file.  Raises ``ValueError`` when the job file cannot be read."""
    from omegaconf import OmegaConf

    from xdlm.config import from_dict

    fs, root = _filesystem(run_dir)
    try:
        with fs.open_input_stream(f"{root}/{JOB_FILE}") as f:
            text = f.read().decode()
    except FileNotFoundError:
        return set()
    try:
        job = from_dict(OmegaConf.to_container(OmegaConf.create(text)))  # type: ignore[arg-type]
    except Exception as err:
        raise ValueError(f"{JOB_FILE} of {run_dir} is unreadable ({str(err).splitlines()[0]})") from None
    return job.optim.branch_starts(job.train.steps, job.train.branch_horizons)


def prune(run_dir: str, keep: int, pinned: set[int] | None = None) -> list[str]:
    """Keep the ``keep`` newest complete checkpoints; delete older complete ones and incomplete
    ones older than the newest complete one (an incomplete one newer than that may still be
    being written).  The newest complete checkpoint is never deleted, nor one at a ``pinned``
    step (default: the run's branch starts, ``branch_steps``; when those cannot be read nothing
    is deleted).  Returns what went."""
    if pinned is None:
        try:
            pinned = branch_steps(run_dir)
        except (OSError, ValueError) as err:
            log.warning("not pruning checkpoints of %s: cannot tell which are kept for branches: %s", run_dir, err)
            return []
    try:
        complete, broken = scan(run_dir)
    except OSError as err:  # a listing that failed says nothing about what is safe to delete
        log.warning("not pruning checkpoints of %s: cannot list them: %s", run_dir, err)
        return []
    if not complete:
        return []
    gone = [c.uri for c in complete[max(1, keep):] if c.step not in pinned]
    # Ray names directories checkpoint_<timestamp>: an incomplete one whose name sorts before the
    # newest complete one is a leftover, not a write in progress
    gone += [_uri(run_dir, name) for name, problem in broken.items()
             if name < complete[0].name and not problem.startswith(UNREADABLE)]
    for uri in gone:
        try:
            delete(uri)
        except OSError as err:  # retention is housekeeping: never fail a run for it
            log.warning("could not delete old checkpoint %s: %s", uri, err)
    return gone
