"""Checkpoint manifests: a checkpoint is complete, or it is invisible.

Each rank that writes files into a checkpoint directory writes, last, a manifest of them (size
and SHA-256 of every file): ``manifest.json`` from rank 0, which also records the step and how
many ranks wrote files, and ``manifest.rank<r>.json`` from each other writing rank (ZeRO
shards).  Ray copies the directory to storage in no particular order, so a copy that died half
way (a full disk, a killed process) shows up as a missing manifest or a file whose size differs
from it; such a directory is not a checkpoint.  Sizes are checked when checkpoints are listed
(cheap on S3 too); checksums when one is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1


def manifest_name(rank: int) -> str:
    return MANIFEST if rank == 0 else f"manifest.rank{rank}.json"


def is_manifest(name: str) -> bool:
    return name == MANIFEST or (name.startswith("manifest.rank") and name.endswith(".json"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(directory: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of every file under ``directory`` but the manifests."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if not is_manifest(rel):
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    return files


def write_manifest(directory: str | os.PathLike, rank: int, step: int, ranks: int = 1) -> Path:
    """Describe what this rank wrote into ``directory`` (call it last, after every file is
    whole); written through a temp file and a rename, so it is never seen half-written."""
    directory = Path(directory)
    body = {"format": FORMAT, "rank": rank, "files": describe_files(directory)}
    if rank == 0:
        body.update(step=int(step), ranks=int(ranks))
    path = directory / manifest_name(rank)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def verify_local(directory: str | os.PathLike) -> str | None:
    """None when every manifest of the local checkpoint ``directory`` is there and every file
    matches its size and checksum; else what is wrong, in a few words."""
    directory = Path(directory)
    try:
        main = json.loads((directory / MANIFEST).read_text())
        manifests = [main] + [json.loads((directory / manifest_name(r)).read_text()) for r in range(1, main["ranks"])]
    except FileNotFoundError as err:
        return f"no {Path(err.filename).name} (an incomplete write)"
    except (ValueError, KeyError) as err:
        return f"unreadable manifest ({err})"
    for manifest in manifests:
        for rel, want in manifest["files"].items():
            path = directory / rel
            if not path.is_file():
                return f"{rel} is missing"
            if path.stat().st_size != want["size"]:
                return f"{rel} has {path.stat().st_size} bytes, the manifest says {want['size']} (truncated)"
            if sha256_of(path) != want["sha256"]:
                return f"{rel} does not match its checksum (corrupted)"
    return None
