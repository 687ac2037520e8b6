"""An append-only JSONL file that holds logging records the tracking server has not taken yet.

``RunLogger`` keeps undelivered records in memory; when an outage lasts long enough for that
queue to pass its cap, the oldest records move here instead of being dropped, and they are read
back (oldest first) once the server answers again. A process that exits before the server comes
back leaves the file behind; the next ``RunLogger`` for the same run replays it.

Records are tuples whose first item names their kind (``("metric", key, value, ts, step)``...),
written one JSON array per line. Delivery is at-least-once: a crash between sending a chunk and
truncating the file replays it, which MLflow tolerates (duplicate metric points are ignored,
re-logging a param with the same value is allowed).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


class SpillFile:
    """One JSONL file read from a moving offset; only the logger's worker thread touches it."""

    def __init__(self, path: str | os.PathLike, skip_kinds: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.skip_kinds = frozenset(skip_kinds)
        self.read_offset = 0
        self.records_written = 0
        # Tracked in memory (only this object writes the file) so that has_unread(), asked for
        # every record the worker batches, costs no system call.
        self._size = self._stat_size()

    def append(self, records: Iterable[tuple]) -> int:
        """Append records (raises OSError if the disk refuses: the caller keeps them in memory)."""
        lines = [json.dumps(list(record), separators=(",", ":")) + "\n" for record in records]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as file:
            file.write("".join(lines).encode("utf-8"))
            file.flush()
            self._size = file.tell()
        self.records_written += len(lines)
        return len(lines)

    def _stat_size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def has_unread(self) -> bool:
        return self.read_offset < self._size

    def read_chunk(self, max_records: int) -> list[tuple]:
        """Up to ``max_records`` records from the read offset on, advancing it past them."""
        records: list[tuple] = []
        try:
            file = open(self.path, "rb")
        except FileNotFoundError:
            return records
        with file:
            file.seek(self.read_offset)
            while len(records) < max_records:
                line = file.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    # Cut short by a crash mid-write: unusable, and nothing follows it.
                    log.warning("skipping a truncated last line in %s", self.path)
                    self.read_offset = self._size = file.tell()
                    break
                self.read_offset = file.tell()
                try:
                    record = tuple(json.loads(line))
                except ValueError:
                    log.warning("skipping an unreadable line in %s", self.path)
                    continue
                if record and record[0] not in self.skip_kinds:
                    records.append(record)
        return records

    def read_unread(self) -> list[tuple]:
        """Everything not read yet (used when rewriting the file at shutdown)."""
        records: list[tuple] = []
        while chunk := self.read_chunk(10_000):
            records.extend(chunk)
        return records

    def discard(self) -> None:
        """Forget the file's content once all of it has been delivered."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.read_offset = 0
        self._size = 0

    def rewrite(self, records: list[tuple]) -> None:
        """Replace the file's whole content with ``records`` (atomically, via a rename)."""
        if not records:
            self.discard()
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        SpillFile(tmp).append(records)
        os.replace(tmp, self.path)
        self.read_offset = 0
        self._size = self._stat_size()
