"""On-disk cache of packed token arrays: tokenize once, memory-map afterwards.

An entry is two files under ``<cache_dir>/tokens/``:

* ``<stem>.bin``: the packed blocks as one flat little-endian array of ``num_blocks * seq_len``
  token ids, ``uint16`` when every id fits (vocab_size <= 65536) else ``uint32``;
* ``<stem>.json``: the metadata sidecar (what was tokenized, with what, shapes, dtype, timings).

Both are written atomically (temp file in the same directory, ``fsync``, ``os.replace``), the
array first and the sidecar last: the sidecar is the commit marker, so a reader that finds it
finds a complete array, and a build that dies half-way leaves no entry (at most a stray temp file,
removed on the way out when Python gets the chance). A per-entry file lock makes concurrent
builders (e.g. all Ray Train workers on a node) build each entry once; the others wait and read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from filelock import FileLock

#: Bump when the on-disk layout or packing rule changes: older entries are then ignored.
CACHE_FORMAT_VERSION = 1


def stable_hash(obj: Any, length: int = 20) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj`` (sorted keys): equal inputs, equal keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype holding ids ``0 .. vocab_size - 1``."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Exclusive inter-process lock on ``<path>.lock`` (``filelock.Timeout`` after ``timeout_s``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout_s):
        yield


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on clean exit fsync it and rename it onto ``path``.

    On an exception the temp file is deleted and ``path`` is untouched (absent if it was absent).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename (best effort: not every filesystem allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_writer(path, "w") as handle:
        handle.write(text)


@dataclass(frozen=True)
class CacheEntry:
    """The paths of one cached token array."""

    root: Path
    stem: str

    @property
    def tokens_path(self) -> Path:
        return self.root / f"{self.stem}.bin"

    @property
    def meta_path(self) -> Path:
        return self.root / f"{self.stem}.json"

    def exists(self) -> bool:
        """True when a complete, readable entry is there."""
        return self.read() is not None

    def read(self) -> tuple[np.ndarray, dict[str, Any]] | None:
        """``(blocks [num_blocks, seq_len] read-only memmap, meta)`` or ``None`` on a miss.

        A sidecar without a matching array (size mismatch, missing file, other format) is a miss.
        """
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            dtype = np.dtype(meta["dtype"])
            shape = (int(meta["num_blocks"]), int(meta["seq_len"]))
            size = self.tokens_path.stat().st_size
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            return None
        if size != shape[0] * shape[1] * dtype.itemsize:
            return None
        if shape[0] == 0:  # an empty file cannot be memory-mapped
            return np.zeros(shape, dtype=dtype), meta
        blocks = np.memmap(self.tokens_path, dtype=dtype, mode="r", shape=shape)
        return blocks, meta


def cache_entry(cache_dir: Path, label: str, key_parts: dict[str, Any]) -> CacheEntry:
    """The entry for ``key_parts`` (hashed) under ``<cache_dir>/tokens``; ``label`` only makes the
    file name readable (e.g. ``stdlib-train``)."""
    key = stable_hash({"format_version": CACHE_FORMAT_VERSION, **key_parts})
    safe_label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return CacheEntry(Path(cache_dir) / "tokens", f"{safe_label}-{key}")


class TokenArrayWriter:
    """Append packed blocks to a temp file; ``commit(meta)`` publishes the entry atomically.

    Use as a context manager: leaving it without ``commit`` (an exception, a kill) discards the
    temp file and publishes nothing.
    """

    def __init__(self, entry: CacheEntry, seq_len: int, dtype: np.dtype) -> None:
        self.entry = entry
        self.seq_len = seq_len
        self.dtype = np.dtype(dtype)
        self.num_blocks = 0
        self._stack = contextlib.ExitStack()
        self._handle: IO[bytes] | None = None
        self._committed = False

    def __enter__(self) -> TokenArrayWriter:
        self._handle = self._stack.enter_context(atomic_writer(self.entry.tokens_path, "wb"))
        return self

    def write_blocks(self, blocks: np.ndarray) -> None:
        """Append ``blocks`` [n, seq_len] (cast to the cache dtype)."""
        if blocks.ndim != 2 or blocks.shape[1] != self.seq_len:
            raise ValueError(f"expected blocks of shape [n, {self.seq_len}], got {blocks.shape}")
        if self._handle is None:
            raise RuntimeError("TokenArrayWriter used outside its with-block")
        self._handle.write(np.ascontiguousarray(blocks, dtype=self.dtype).tobytes())
        self.num_blocks += blocks.shape[0]

    def commit(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Publish the array, then the sidecar (the commit marker). Returns the full metadata."""
        self._stack.close()  # flush + fsync + rename the array
        self._handle = None
        full_meta = {
            **meta,
            "format_version": CACHE_FORMAT_VERSION,
            "dtype": self.dtype.str,
            "seq_len": self.seq_len,
            "num_blocks": self.num_blocks,
            "num_tokens": self.num_blocks * self.seq_len,
        }
        atomic_write_text(self.entry.meta_path, json.dumps(full_meta, indent=2, sort_keys=True))
        self._committed = True
        return full_meta

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._committed:
            return
        # Not committed: make the array's atomic writer discard its temp file.
        err = exc if isinstance(exc, BaseException) else RuntimeError("not committed")
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(err), err, None)
