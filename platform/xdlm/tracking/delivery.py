"""``DeliveryWorker``: the background thread that takes one run's queued records to MLflow.

It batches the queue into ``log_batch`` requests within MLflow's limits and, while the server is
unreachable or erroring, keeps the records and retries with exponential backoff, so everything
arrives once the server is back. When an outage outlasts the memory cap, the oldest records move
to a JSONL spill file (``spill.py``) and are replayed later; what is still undelivered when the
worker closes stays in that file, and the next worker of the same run replays it first.

The caller's side (``enqueue``, ``flush``, ``close``) only appends to a deque and assigns plain
attributes, never takes a lock: a signal handler that interrupts an ``enqueue`` in the main thread
and then closes the worker cannot deadlock.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from xdlm.tracking.records import BATCHABLE_KINDS, describe_record, send_records
from xdlm.tracking.runs import describe_error, is_transient_error
from xdlm.tracking.spill import SpillFile

log = logging.getLogger(__name__)

_SPILL_CHUNK_RECORDS = MAX_ENTITIES_PER_BATCH
_IDLE_POLL_S = 0.05
_MIN_BACKOFF_S = 0.25
_OUTAGE_LOG_EVERY_S = 60.0
# Below two full batches the worker could not fill a request while the rest waits in memory.
_MIN_QUEUED_RECORDS = 2 * MAX_ENTITIES_PER_BATCH
# Meaningful only to the process that queued them: a flush marker's waiter is gone, and a resumed
# run must not be ended by the end status of the attempt before it.
_NOT_REPLAYED_KINDS = ("end", "flush")


class _FlushMarker:
    """Placed in the queue by ``flush``; the worker marks it done once everything before it is.

    Spilled to disk as ``("flush", id)`` so that a flush waiting through an outage is still
    answered when the records before it come back from the file.
    """

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class DeliveryWorker:
    """Delivers a run's records in queue order on a daemon thread, started on construction.

    Args:
        client: the client requests go through (fast-failing HTTP, see ``runs.make_client``).
        run_id: the run every record belongs to.
        spill_dir: where ``<run_id>.jsonl`` overflows to and leftovers of earlier workers are.
        max_queued_records: in-memory cap (raised to 2000); beyond it the oldest records spill.
        max_backoff_s: longest pause between retries while the server is down.

    ``stats`` counts records delivered, dropped (refused by the server), spilled, and failed
    requests; ``spill_path`` is this run's spill file.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        spill_dir: Path,
        *,
        max_queued_records: int,
        max_backoff_s: float,
    ) -> None:
        self.run_id = run_id
        self.max_queued_records = max(int(max_queued_records), _MIN_QUEUED_RECORDS)
        self.max_backoff_s = max_backoff_s
        self.stats = {"delivered": 0, "dropped": 0, "spilled": 0, "failed_requests": 0}
        self._client = client

        # Written by callers (appends, counter bumps, flags), read by the worker.
        self._pending: deque = deque()
        self._stop = False
        self._wake_generation = 0
        self._waits_cut_short = False

        # Worker-only state.
        self._batch: list | None = None
        self._isolating = False
        self._replay: deque = deque()
        self._markers: dict[int, _FlushMarker] = {}
        self._marker_ids = itertools.count()
        self._backoff_s = _MIN_BACKOFF_S
        self._outage_since: float | None = None
        self._last_outage_log = 0.0
        # close() spills from the caller's thread while a worker that missed its join may still
        # be reading the file.
        self._spill_lock = threading.RLock()

        self.spill_path = spill_dir / f"{run_id}.jsonl"
        self._leftovers = self._adopt_leftover_spills(spill_dir)
        self._spill = SpillFile(self.spill_path)

        # Daemon: a worker nobody closed must not keep the interpreter alive.
        self._thread = threading.Thread(
            target=self._work, name=f"xdlm-mlflow-{run_id[:8]}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def enqueue(self, record: tuple) -> None:
        """Queue one record (see ``records.py``) for delivery after everything queued before it."""
        self._pending.append(record)

    def enqueue_all(self, new_records: Iterable[tuple]) -> None:
        """Queue records in order, after everything queued before them."""
        self._pending.extend(new_records)

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until everything queued before this call is delivered; False on timeout."""
        if not self._thread.is_alive():
            return self.everything_delivered()
        marker = _FlushMarker()
        self._pending.append(marker)
        self._wake_generation += 1  # cut short the worker's backoff or idle wait
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while not marker.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if not self._thread.is_alive() or self._waits_cut_short:
                return marker.done
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return True

    def cut_waits_short(self) -> None:
        """Make every ``flush`` (running or later) return at once with what it has.

        For a process about to die (a signal arrived during ``close``): the rest is spilled
        instead of waited for.
        """
        self._waits_cut_short = True

    def close(self, timeout: float | None) -> bool:
        """Deliver for up to ``timeout`` s, stop the thread, spill what is left; True if all arrived."""
        delivered = self.flush(timeout)
        self._stop = True
        self._wake_generation += 1
        self._thread.join(timeout=2.0 if delivered else 1.0)
        if not delivered or not self.everything_delivered():
            self._spill_everything_left()
        return delivered

    def queued_records(self) -> int:
        """Records not delivered yet, spill files aside (approximate while the thread runs)."""
        batch = self._batch or ()
        return len(self._pending) + len(self._replay) + len(batch)

    def everything_delivered(self) -> bool:
        """Nothing waits in memory or in a spill file."""
        return not (
            self._pending or self._replay or self._batch or self._leftovers
            or self._spill.has_unread()
        )  # fmt: skip

    # ------------------------------------------------------------------ worker thread

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
                send_records(self._client, self.run_id, self._batch)
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
                send_records(self._client, self.run_id, [record])
                self.stats["delivered"] += 1
            except Exception as error:
                if is_transient_error(error):
                    raise
                self._drop([record], error)
            del self._batch[0]

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
            if kind not in BATCHABLE_KINDS:
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
                describe_error(error), self.queued_records(),
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

    def _drop(self, refused: list[tuple], error: BaseException) -> None:
        self.stats["dropped"] += len(refused)
        dropped = self.stats["dropped"]
        if dropped <= 10 or dropped % 1000 == 0:  # a deleted run refuses everything: stay terse
            log.warning(
                "MLflow refused %s (%s); dropping it (%d dropped so far)",
                describe_record(refused[0]), describe_error(error), dropped,
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

    def _to_spillable(self, queued: list, keep_markers: bool = True) -> list[tuple]:
        spillable = []
        for record in queued:
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
            left = list(self._batch or [])
            left.extend(self._replay)
            left.extend(self._spill.read_unread())
            while True:
                try:
                    left.append(self._pending.popleft())
                except IndexError:
                    break
            self._batch, self._replay = None, deque()
            left = [
                r for r in self._to_spillable(left, keep_markers=False)
                if r[0] not in _NOT_REPLAYED_KINDS
            ]  # fmt: skip
            try:
                self._spill.rewrite(left)
            except OSError as error:
                log.error("lost %d MLflow records: cannot write %s (%s)",
                          len(left), self.spill_path, error)  # fmt: skip
                return
        if left:
            log.warning(
                "MLflow server unreachable at close: %d records kept in %s; a RunLogger for run "
                "%s replays them", len(left), self.spill_path, self.run_id,
            )  # fmt: skip

    def _adopt_leftover_spills(self, spill_dir: Path) -> list[SpillFile]:
        """Spill files of earlier processes for this run, oldest first, to replay before anything."""
        try:
            if self.spill_path.exists():
                renamed = spill_dir / f"{self.run_id}.{time.time_ns()}.leftover.jsonl"
                os.replace(self.spill_path, renamed)
            leftovers = sorted(spill_dir.glob(f"{self.run_id}.*.leftover.jsonl"))
        except OSError as error:
            log.warning("cannot look for spilled MLflow records in %s: %s", spill_dir, error)
            return []
        if leftovers:
            log.warning("replaying %d spilled MLflow record file(s) for run %s",
                        len(leftovers), self.run_id)  # fmt: skip
        return [SpillFile(path, skip_kinds=_NOT_REPLAYED_KINDS) for path in leftovers]
