"""``RunLogger``: metrics, params and artifacts to MLflow without ever stalling or killing training.

Synchronous MLflow logging raises into the training loop when the tracking server is down, and
MLflow's own async mode only logs failures and can lose its queue at exit; runs of many hours
have been lost either way. Here every ``log_*`` call only appends a tuple to an in-memory queue
(microseconds, never raises). A background thread batches the queue into ``log_batch`` requests
within MLflow's limits and, while the server is unreachable or erroring, keeps the records and
retries with exponential backoff, so everything arrives once the server is back. If an outage
outlasts the memory cap, the oldest records go to a JSONL spill file (``spill.py``) and are
replayed later; a run that ends before the server returns leaves that file for the next
``RunLogger`` of the same run to replay.

The run's end is logged too: ``close()`` (or the ``with`` block) ends it FINISHED/FAILED; an
uncaught exception ends it FAILED, SIGTERM/SIGINT end it KILLED, and interpreter exit flushes,
so a run is not left RUNNING by a process that had a chance to say otherwise.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from xdlm.tracking.flatten import clean_tags, flatten_params, to_plain_container
from xdlm.tracking.runs import TERMINAL_STATUSES, is_transient_error, make_client
from xdlm.tracking.spill import SpillFile

log = logging.getLogger(__name__)

_BATCHABLE = ("metric", "param", "tag")
_SPILL_CHUNK_RECORDS = MAX_ENTITIES_PER_BATCH
_IDLE_POLL_S = 0.05
_MIN_BACKOFF_S = 0.25
_OUTAGE_LOG_EVERY_S = 60.0


def default_spill_dir() -> Path:
    return Path(tempfile.gettempdir()) / "xdlm-mlflow-spill"


def _now_ms() -> int:
    return int(time.time() * 1000)


class _FlushMarker:
    """Placed in the queue by ``flush``; the worker marks it done once everything before it is."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class RunLogger:
    """Rank 0's handle on one MLflow run: non-blocking, non-raising, nothing dropped on outages.

    Args:
        tracking_uri: ``http(s)://`` server or any URI MLflow accepts (``sqlite:///...``).
        run_id: an existing run (see ``xdlm.tracking.runs.start_run``).
        spill_dir: where undelivered records overflow to (one ``<run_id>.jsonl`` per run). Put it
            in the run directory so a resumed run finds and replays it.
        max_queued_records: in-memory cap (at least 2000); beyond it the oldest records spill
            to disk.
        install_handlers: end the run on uncaught exceptions (FAILED) and SIGTERM/SIGINT
            (KILLED), flush at exit. Signal handlers only go in from the main thread; previous
            handlers are chained, not replaced.
        status_at_exit: how a run that was never closed ends when the interpreter exits (MLflow's
            own convention is FINISHED; uncaught exceptions are handled before that).
        close_timeout_s: default time ``close`` waits for delivery before spilling the rest.
        signal_timeout_s: delivery wait inside a signal handler (a SIGKILL usually follows a
            SIGTERM within some grace period, so keep it well under that).
        max_backoff_s: longest pause between retries while the server is down.

    Records of one thread are delivered in order; artifacts (``log_text``/``log_dict``/
    ``log_artifact``) are uploaded by the worker too, so a file given to ``log_artifact`` must
    stay in place until ``flush`` returns.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        *,
        spill_dir: str | os.PathLike | None = None,
        max_queued_records: int = 100_000,
        install_handlers: bool = True,
        status_at_exit: str = "FINISHED",
        close_timeout_s: float = 30.0,
        signal_timeout_s: float = 10.0,
        max_backoff_s: float = 15.0,
    ) -> None:
        if status_at_exit not in TERMINAL_STATUSES:
            raise ValueError(f"status_at_exit must be one of {TERMINAL_STATUSES}")
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.max_queued_records = max(int(max_queued_records), 2 * MAX_ENTITIES_PER_BATCH)
        self.status_at_exit = status_at_exit
        self.close_timeout_s = close_timeout_s
        self.signal_timeout_s = signal_timeout_s
        self.max_backoff_s = max_backoff_s
        self._client = make_client(tracking_uri)

        # Shared with callers. Callers only ever append to the deque and assign plain
        # attributes: no locks on their side, so a signal handler that interrupts a log_* call
        # in the main thread and then closes the logger cannot deadlock on them.
        self._pending: deque = deque()
        self._closed = False
        self._closing_done = threading.Event()
        self._stop = False
        self._wake_generation = 0
        self._deferred_signal: int | None = None
        self._closing_thread: threading.Thread | None = None

        # Worker-only state.
        self._batch: list | None = None
        self._isolating = False
        self._replay: deque = deque()
        self._markers: dict[int, _FlushMarker] = {}
        self._marker_ids = itertools.count()
        self._backoff_s = _MIN_BACKOFF_S
        self._outage_since: float | None = None
        self._last_outage_log = 0.0
        self._spill_lock = threading.RLock()

        spill_root = Path(spill_dir) if spill_dir is not None else default_spill_dir()
        self.spill_path = spill_root / f"{run_id}.jsonl"
        self._leftovers = self._adopt_leftover_spills(spill_root)
        self._spill = SpillFile(self.spill_path)

        self._logged_params: dict[str, str] = {}
        self.stats = {"delivered": 0, "dropped": 0, "spilled": 0, "failed_requests": 0}

        # Daemon: a logger nobody closed must not keep the interpreter alive; atexit closes it.
        self._worker = threading.Thread(
            target=self._work, name=f"xdlm-mlflow-{run_id[:8]}", daemon=True
        )
        self._worker.start()

        # Last, so that a signal arriving from here on finds a complete logger to close.
        self._previous_signal_handlers: dict[int, Any] = {}
        self._previous_excepthook = None
        self._atexit_registered = False
        if install_handlers:
            self._install_handlers()

    # ------------------------------------------------------------------ caller-side API

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Queue metric values (anything ``float()`` accepts: Python/numpy/torch scalars)."""
        if self._closed:
            return self._warn_closed("log_metrics")
        timestamp = _now_ms()
        try:
            step = int(step) if step is not None else 0
            records = [
                ("metric", str(key), float(value), timestamp, step)
                for key, value in metrics.items()
            ]
        except Exception:
            records = self._metric_records_one_by_one(metrics, step, timestamp)
        self._pending.extend(records)

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Queue a (nested) config as flat dotted-key params, e.g. ``optim.lr``.

        MLflow params are immutable: re-logging a key with the same value is skipped, with a
        different value it is refused here (with a warning) instead of failing at the server.
        """
        if self._closed:
            return self._warn_closed("log_params")
        try:
            flat = flatten_params(params)
        except Exception as error:
            return log.warning("log_params: cannot flatten %r: %s", type(params), error)
        for key, value in flat.items():
            previous = self._logged_params.get(key)
            if previous == value:
                continue
            if previous is not None:
                log.warning(
                    "param %r already logged as %r; MLflow params cannot change, keeping it "
                    "(new value %r not logged)", key, previous, value,
                )  # fmt: skip
                continue
            self._logged_params[key] = value
            self._pending.append(("param", key, value))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._closed:
            return self._warn_closed("set_tags")
        try:
            for key, value in clean_tags(tags).items():
                self._pending.append(("tag", key, value))
        except Exception as error:
            log.warning("set_tags: ignoring unusable tags (%s)", error)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_text(self, text: str, artifact_file: str) -> None:
        """Queue ``text`` as the run artifact ``artifact_file`` (e.g. ``"samples/step_100.txt"``)."""
        if self._closed:
            return self._warn_closed("log_text")
        self._pending.append(("text", str(text), str(artifact_file)))

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        """Queue a dict (or OmegaConf config) as YAML (``.yaml``/``.yml``) or JSON (otherwise).

        Serialized now, so later changes to ``dictionary`` do not leak into the artifact.
        """
        if self._closed:
            return self._warn_closed("log_dict")
        try:
            text = serialize_dict(dictionary, artifact_file)
        except Exception as error:
            return log.warning("log_dict(%r): cannot serialize: %s", artifact_file, error)
        self._pending.append(("text", text, str(artifact_file)))

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Queue a file or directory for upload (it must stay in place until ``flush``)."""
        if self._closed:
            return self._warn_closed("log_artifact")
        self._pending.append(("file", os.path.abspath(local_path), artifact_path))

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until everything queued before this call is delivered; False on timeout."""
        if not self._worker.is_alive():
            return self._nothing_left()
        marker = _FlushMarker()
        self._pending.append(marker)
        self._wake_generation += 1  # cut short the worker's backoff or idle wait
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while not marker.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if not self._worker.is_alive() or self._deferred_signal is not None:
                return marker.done
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return True

    def close(self, status: str | None = "FINISHED", timeout: float | None = None) -> bool:
        """Flush, end the run with ``status`` and stop the worker; True if all was delivered.

        ``status=None`` stops logging without ending the run (e.g. replaying a spill file for a
        run that lives on elsewhere). Records still undelivered after ``timeout`` (default
        ``close_timeout_s``) are written to the spill file for a later ``RunLogger`` of this run;
        the end status itself is not kept there (a resumed run must not be ended by it).
        Calling it again is a no-op.
        """
        if self._closed:
            return self._nothing_left()
        self._closed = True
        self._closing_thread = threading.current_thread()
        self._uninstall_handlers()
        timeout = self.close_timeout_s if timeout is None else timeout
        try:
            if status is not None:
                if status not in TERMINAL_STATUSES:
                    log.warning("close: unknown status %r, using FAILED", status)
                    status = "FAILED"
                self._pending.append(("end", status, _now_ms()))
            delivered = self.flush(timeout)
            self._stop = True
            self._wake_generation += 1
            self._worker.join(timeout=2.0 if delivered else 1.0)
            if not delivered or not self._nothing_left():
                self._spill_everything_left()
            return delivered
        except Exception as error:  # never raise out of close
            log.warning("RunLogger.close failed: %s", error)
            return False
        finally:
            self._closing_done.set()
            if self._deferred_signal is not None:
                signum, self._deferred_signal = self._deferred_signal, None
                self._chain_signal(signum, None)

    @property
    def closed(self) -> bool:
        return self._closed

    def queued_records(self) -> int:
        """Records not delivered yet (approximate while the worker is running)."""
        batch = self._batch or ()
        return len(self._pending) + len(self._replay) + len(batch)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(status_for_exception(exc_type, exc))

    # ------------------------------------------------------------------ handlers

    def _install_handlers(self) -> None:
        atexit.register(self._at_exit)
        self._atexit_registered = True
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal only works there (e.g. not in a Ray Train worker thread)
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # the process chose to survive this signal; so does the run
            try:
                signal.signal(signum, self._on_signal)
            except (ValueError, OSError):
                continue
            self._previous_signal_handlers[signum] = previous

    def _uninstall_handlers(self) -> None:
        if self._atexit_registered:
            atexit.unregister(self._at_exit)
            self._atexit_registered = False
        if self._previous_excepthook is not None and sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_excepthook
        # Restore only where our handler is still the current one; one installed on top of ours
        # keeps chaining through it, and it passes the signal on once we are closed (the
        # previous handlers stay recorded for that).
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous_signal_handlers.items():
                if signal.getsignal(signum) == self._on_signal:
                    try:
                        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
                    except (ValueError, OSError):
                        pass

    def _on_signal(self, signum: int, frame) -> None:
        if not self._closed:
            log.warning("signal %d: ending MLflow run %s as KILLED", signum, self.run_id)
            self.close("KILLED", timeout=self.signal_timeout_s)
        elif not self._closing_done.is_set():
            if self._closing_thread is threading.current_thread():
                # The signal interrupted our own close() in this thread: let it cut its wait
                # short and spill, then pass the signal on from its finally block.
                self._deferred_signal = signum
                return
            self._closing_done.wait(self.signal_timeout_s)  # close() running in another thread
        self._chain_signal(signum, frame)

    def _chain_signal(self, signum: int, frame) -> None:
        previous = self._previous_signal_handlers.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous is signal.SIG_IGN:
            return
        else:  # SIG_DFL (or a handler installed outside Python): die the way it would have
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def _excepthook(self, exc_type, exc, tb) -> None:
        try:
            if not self._closed:
                self.close(status_for_exception(exc_type, exc))
        finally:
            previous = self._previous_excepthook or sys.__excepthook__
            previous(exc_type, exc, tb)

    def _at_exit(self) -> None:
        if not self._closed:
            self.close(self.status_at_exit)

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

    # ------------------------------------------------------------------ misc

    @staticmethod
    def _metric_records_one_by_one(metrics: Any, step: Any, timestamp: int) -> list[tuple]:
        """The slow path of log_metrics: keep every usable value, warn about the rest."""
        try:
            step = int(step) if step is not None else 0
        except Exception:
            log.warning("log_metrics: step %r is not an integer; using 0", step)
            step = 0
        try:
            items = list(metrics.items())
        except Exception as error:
            log.warning("log_metrics: expected a mapping, got %r (%s)", type(metrics), error)
            return []
        records = []
        for key, value in items:
            try:
                records.append(("metric", str(key), float(value), timestamp, step))
            except Exception:
                log.warning("log_metrics: %r=%r is not a number; skipped", key, value)
        return records

    def _warn_closed(self, what: str) -> None:
        log.debug("%s after close() ignored (run %s)", what, self.run_id)

    def __repr__(self) -> str:
        return f"RunLogger(run_id={self.run_id!r}, tracking_uri={self.tracking_uri!r})"


def status_for_exception(exc_type, exc) -> str:
    """How a run should end given the exception leaving its scope (None: FINISHED)."""
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    if issubclass(exc_type, SystemExit) and getattr(exc, "code", None) in (None, 0):
        return "FINISHED"
    return "FAILED"


def serialize_dict(dictionary: Any, artifact_file: str) -> str:
    """YAML for ``.yaml``/``.yml`` files, JSON otherwise; unknown objects become strings."""
    plain = json.loads(json.dumps(to_plain_container(dictionary), default=str))
    if str(artifact_file).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)
    return json.dumps(plain, indent=2)


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
