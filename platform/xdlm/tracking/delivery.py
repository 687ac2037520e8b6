"""The background half of ``RunLogger``: batching records into ``log_batch`` requests, retrying
through outages with backoff, and spilling to disk what memory cannot hold (a mixin)."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from xdlm.tracking.runs import is_transient_error
from xdlm.tracking.spill import SpillFile

log = logging.getLogger("xdlm.tracking.logger")

_BATCHABLE = ("metric", "param", "tag")
_SPILL_CHUNK_RECORDS = MAX_ENTITIES_PER_BATCH
_IDLE_POLL_S = 0.05
_MIN_BACKOFF_S = 0.25
_OUTAGE_LOG_EVERY_S = 60.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class _FlushMarker:
    """Placed in the queue by ``flush``; the worker marks it done once everything before it is."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class DeliveryWorker:
    """The worker thread of a ``RunLogger``: everything that talks to the tracking server."""

    def _work(self) -> None:
        while True:
            try:
                if self._stop:
                    return
                progressed = self._deliver_once()
                if not progressed:
                    self._pause(_IDLE_POLL_S)
            except Exception as error:  # the worker must outlive any surprise
                log.warning("MLflow logging worker error (continuing): %s", error, exc_info=True)
                self._pause(1.0)

    def _deliver_once(self) -> bool:
        """Send one batch; False when there was nothing to send or sending failed."""
        if self._batch is None:
            self._batch = self._take_batch()
            self._isolating = False
            if self._batch is None:
                return False
        try:
            if self._isolating:
                self._send_one_by_one()
            else:
                self._send(self._batch)
                self.stats["delivered"] += len(self._batch)
        except Exception as error:
            if is_transient_error(error):
                self._on_transient_failure(error)
                return False
            if len(self._batch) > 1 and not self._isolating:
                # Something in the batch is unacceptable (bad key, deleted run...): find out
                # which by sending records one at a time, dropping only the refused ones.
                self._isolating = True
                return True
            self._drop(self._batch[:1], error)
            del self._batch[:1]
            if self._batch:
                return True
        self._batch = None
        self._on_success()
        return True

    def _send_one_by_one(self) -> None:
        while self._batch:
            record = self._batch[0]
            try:
                self._send([record])
                self.stats["delivered"] += 1
            except Exception as error:
                if is_transient_error(error):
                    raise
                self._drop([record], error)
            del self._batch[0]

    def _send(self, batch: list[tuple]) -> None:
        kind = batch[0][0]
        if kind in _BATCHABLE:
            metrics, params, tags = [], [], []
            for record in batch:
                if record[0] == "metric":
                    metrics.append(Metric(record[1], record[2], record[3], record[4]))
                elif record[0] == "param":
                    params.append(Param(record[1], record[2]))
                else:
                    tags.append(RunTag(record[1], record[2]))
            self._client.log_batch(self.run_id, metrics, params, tags, synchronous=True)
        elif kind == "text":
            self._client.log_text(self.run_id, batch[0][1], batch[0][2])
        elif kind == "file":
            _, local_path, artifact_path = batch[0]
            if not os.path.exists(local_path):
                raise FileNotFoundError(f"artifact {local_path} no longer exists")
            self._client.log_artifact(self.run_id, local_path, artifact_path)
        elif kind == "end":
            self._client.set_terminated(self.run_id, status=batch[0][1], end_time=batch[0][2])
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def _take_batch(self) -> list[tuple] | None:
        """The next records in queue order that fit one request (or one artifact/end record)."""
        batch: list[tuple] = []
        n_metrics = n_params = n_tags = 0
        while True:
            source = self._next_source()
            if source is None:
                break
            record = source[0]
            if isinstance(record, _FlushMarker) or record[0] == "flush":
                if batch:
                    break  # first deliver what precedes the marker
                source.popleft()
                self._mark_flushed(record)
                continue
            kind = record[0]
            if kind not in _BATCHABLE:
                if not batch:
                    batch.append(source.popleft())
                break
            n_metrics += kind == "metric"
            n_params += kind == "param"
            n_tags += kind == "tag"
            if (
                n_metrics > MAX_METRICS_PER_BATCH
                or n_params > MAX_PARAMS_TAGS_PER_BATCH
                or n_tags > MAX_PARAMS_TAGS_PER_BATCH
                or len(batch) >= MAX_ENTITIES_PER_BATCH
            ):
                break
            batch.append(source.popleft())
        return batch or None

    def _next_source(self) -> deque | None:
        """The deque holding the oldest undelivered record: spill replays first, then memory."""
        if self._replay:
            return self._replay
        while self._leftovers:
            chunk = self._leftovers[0].read_chunk(_SPILL_CHUNK_RECORDS)
            if chunk:
                self._replay.extend(chunk)
                return self._replay
            self._leftovers.pop(0).discard()
        if self._spill.has_unread():
            with self._spill_lock:
                chunk = self._spill.read_chunk(_SPILL_CHUNK_RECORDS)
            if chunk:
                self._replay.extend(chunk)
                return self._replay
        if self._spill.read_offset:  # read to the end and handed on: the file has done its job
            with self._spill_lock:
                self._spill.discard()
        if self._pending:
            return self._pending
        return None

    def _mark_flushed(self, marker) -> None:
        if isinstance(marker, _FlushMarker):
            marker.done = True
        else:  # ("flush", id) read back from the spill file
            spilled = self._markers.pop(marker[1], None)
            if spilled is not None:
                spilled.done = True

    def _on_success(self) -> None:
        self._backoff_s = _MIN_BACKOFF_S
        if self._outage_since is not None:
            log.warning(
                "MLflow tracking server reachable again after %.0f s; delivering backlog",
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

    def _on_transient_failure(self, error: BaseException) -> None:
        self.stats["failed_requests"] += 1
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        if now - self._last_outage_log >= _OUTAGE_LOG_EVERY_S:
            self._last_outage_log = now
            log.warning(
                "MLflow logging failed (%s); keeping %d records, retrying with backoff",
                _describe(error), self.queued_records(),
            )  # fmt: skip
        self._pause(self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)

    def _pause(self, seconds: float) -> None:
        """Sleep, spilling overflow meanwhile; a flush/close (new wake generation) cuts it short."""
        generation = self._wake_generation
        deadline = time.monotonic() + seconds
        while True:
            self._spill_overflow()
            if self._wake_generation != generation:
                self._backoff_s = _MIN_BACKOFF_S
                return
            if self._stop:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, _IDLE_POLL_S))

    def _drop(self, records: list[tuple], error: BaseException) -> None:
        self.stats["dropped"] += len(records)
        dropped = self.stats["dropped"]
        if dropped <= 10 or dropped % 1000 == 0:  # a deleted run refuses everything: stay terse
            log.warning(
                "MLflow refused %s (%s); dropping it (%d dropped so far)",
                _summarize(records[0]), _describe(error), dropped,
            )  # fmt: skip

    # ------------------------------------------------------------------ spilling

    def _spill_overflow(self) -> None:
        """Move the oldest in-memory records to the spill file once the queue passes its cap."""
        excess = len(self._pending) - self.max_queued_records
        if excess <= 0:
            return
        n_move = excess + self.max_queued_records // 2
        with self._spill_lock:
            moved = []
            for _ in range(n_move):
                try:
                    moved.append(self._pending.popleft())
                except IndexError:
                    break
            try:
                self._spill.append(self._to_spillable(moved))
                self.stats["spilled"] += len(moved)
            except OSError as error:
                log.warning(
                    "cannot spill to %s (%s); keeping records in memory", self.spill_path, error
                )
                self._pending.extendleft(reversed(moved))

    def _to_spillable(self, records: list, keep_markers: bool = True) -> list[tuple]:
        spillable = []
        for record in records:
            if isinstance(record, _FlushMarker):
                if keep_markers:
                    marker_id = next(self._marker_ids)
                    self._markers[marker_id] = record
                    spillable.append(("flush", marker_id))
            else:
                spillable.append(record)
        return spillable

    def _spill_everything_left(self) -> None:
        """At close: write all undelivered records, oldest first, to the spill file."""
        with self._spill_lock:
            records = list(self._batch or [])
            records.extend(self._replay)
            records.extend(self._spill.read_unread())
            while True:
                try:
                    records.append(self._pending.popleft())
                except IndexError:
                    break
            self._batch, self._replay = None, deque()
            # Drop markers and the end status: a resumed run replaying this must not be ended.
            records = [
                r for r in self._to_spillable(records, keep_markers=False)
                if r[0] not in ("end", "flush")
            ]  # fmt: skip
            try:
                self._spill.rewrite(records)
            except OSError as error:
                log.error("lost %d MLflow records: cannot write %s (%s)",
                          len(records), self.spill_path, error)  # fmt: skip
                return
        if records:
            log.warning(
                "MLflow server unreachable at close: %d records kept in %s; a RunLogger for run "
                "%s replays them", len(records), self.spill_path, self.run_id,
            )  # fmt: skip

    def _adopt_leftover_spills(self, spill_root: Path) -> list[SpillFile]:
        """Spill files of earlier processes for this run, oldest first, to replay before anything."""
        try:
            if self.spill_path.exists():
                renamed = spill_root / f"{self.run_id}.{time.time_ns()}.leftover.jsonl"
                os.replace(self.spill_path, renamed)
            leftovers = sorted(spill_root.glob(f"{self.run_id}.*.leftover.jsonl"))
        except OSError as error:
            log.warning("cannot look for spilled MLflow records in %s: %s", spill_root, error)
            return []
        if leftovers:
            log.warning("replaying %d spilled MLflow record file(s) for run %s",
                        len(leftovers), self.run_id)  # fmt: skip
        return [SpillFile(path, skip_kinds=("end", "flush")) for path in leftovers]

    def _nothing_left(self) -> bool:
        return not (
            self._pending or self._replay or self._batch or self._leftovers
            or self._spill.has_unread()
        )  # fmt: skip


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def _summarize(record: tuple) -> str:
    kind = record[0]
    if kind in _BATCHABLE:
        return f"{kind} {record[1]!r}"
    if kind == "text":
        return f"artifact {record[2]!r}"
    if kind == "file":
        return f"artifact {record[1]!r}"
    return f"{kind} record"
