"""``RunLogger``: metrics, params and artifacts to MLflow without ever stalling or killing training.

Synchronous MLflow logging raises into the training loop when the tracking server is down, and
MLflow's own async mode only logs failures and can lose its queue at exit; runs of many hours
have been lost either way. Here every ``log_*`` call only turns its arguments into records
(``records.py``) and queues them (microseconds, never raises); the logger's ``DeliveryWorker``
(``delivery.py``) takes them to the server from a background thread, retrying through outages
and spilling to disk what memory cannot hold, so everything arrives once the server is back.

The run's end is logged too: ``close()`` (or the ``with`` block) ends it FINISHED/FAILED; the
logger registers with ``ProcessEndHandlers`` (``exit_handlers.py``) so that an uncaught exception
ends it FAILED, SIGTERM/SIGINT end it KILLED, and interpreter exit closes it, so a run is not left
RUNNING by a process that had a chance to say otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xdlm.tracking.delivery import DeliveryWorker
from xdlm.tracking.exit_handlers import ProcessEndHandlers, status_for_exception
from xdlm.tracking.flatten import clean_tags, flatten_params, to_plain_container
from xdlm.tracking.records import now_ms
from xdlm.tracking.runs import TERMINAL_STATUSES, make_client

log = logging.getLogger(__name__)


def default_spill_dir() -> Path:
    return Path(tempfile.gettempdir()) / "xdlm-mlflow-spill"


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
            (KILLED), close it at exit. Signal handlers only go in from the main thread;
            previous handlers are chained, not replaced.
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
        self.close_timeout_s = close_timeout_s
        self._closed = False
        self._logged_params: dict[str, str] = {}
        self._delivery = DeliveryWorker(
            make_client(tracking_uri),
            run_id,
            Path(spill_dir) if spill_dir is not None else default_spill_dir(),
            max_queued_records=max_queued_records,
            max_backoff_s=max_backoff_s,
        )
        self._process_end = ProcessEndHandlers(
            self, status_at_exit=status_at_exit, signal_timeout_s=signal_timeout_s
        )
        # Last, so that a signal arriving from here on finds a complete logger to close.
        if install_handlers:
            self._process_end.install()

    # ------------------------------------------------------------------ configuration and state

    @property
    def spill_path(self) -> Path:
        return self._delivery.spill_path

    @property
    def stats(self) -> dict[str, int]:
        """Records delivered, dropped (refused by the server), spilled; failed requests."""
        return self._delivery.stats

    @property
    def max_queued_records(self) -> int:
        return self._delivery.max_queued_records

    @property
    def max_backoff_s(self) -> float:
        return self._delivery.max_backoff_s

    @property
    def status_at_exit(self) -> str:
        return self._process_end.status_at_exit

    @property
    def signal_timeout_s(self) -> float:
        return self._process_end.signal_timeout_s

    # ------------------------------------------------------------------ caller-side API

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Queue metric values (anything ``float()`` accepts: Python/numpy/torch scalars)."""
        if self._closed:
            return self._warn_closed("log_metrics")
        timestamp = now_ms()
        try:
            step = int(step) if step is not None else 0
            records = [
                ("metric", str(key), float(value), timestamp, step)
                for key, value in metrics.items()
            ]
        except Exception:
            records = self._metric_records_one_by_one(metrics, step, timestamp)
        self._delivery.enqueue_all(records)

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
            self._delivery.enqueue(("param", key, value))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._closed:
            return self._warn_closed("set_tags")
        try:
            for key, value in clean_tags(tags).items():
                self._delivery.enqueue(("tag", key, value))
        except Exception as error:
            log.warning("set_tags: ignoring unusable tags (%s)", error)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_text(self, text: str, artifact_file: str) -> None:
        """Queue ``text`` as the run artifact ``artifact_file`` (e.g. ``"samples/step_100.txt"``)."""
        if self._closed:
            return self._warn_closed("log_text")
        self._delivery.enqueue(("text", str(text), str(artifact_file)))

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
        self._delivery.enqueue(("text", text, str(artifact_file)))

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Queue a file or directory for upload (it must stay in place until ``flush``)."""
        if self._closed:
            return self._warn_closed("log_artifact")
        self._delivery.enqueue(("file", os.path.abspath(local_path), artifact_path))

    def log_table(self, columns: Mapping[str, list], artifact_file: str) -> None:
        """Queue rows for the MLflow table ``artifact_file`` (``.json``): ``{column: [values]}``,
        appended to the rows it already has. Tables of the same name are what the MLflow UI's
        evaluation view puts side by side across runs."""
        if self._closed:
            return self._warn_closed("log_table")
        try:
            plain = {str(k): [to_plain_container(v) for v in values] for k, values in columns.items()}
        except Exception as error:
            return log.warning("log_table(%r): unusable columns: %s", artifact_file, error)
        self._delivery.enqueue(("table", plain, str(artifact_file)))

    def log_inputs(self, datasets: list[Mapping[str, Any]]) -> None:
        """Queue MLflow dataset inputs, each built by ``records.dataset_input`` (the run page's
        Datasets column and drawer show them)."""
        if self._closed:
            return self._warn_closed("log_inputs")
        self._delivery.enqueue(("inputs", [dict(d) for d in datasets]))

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until everything queued before this call is delivered; False on timeout."""
        return self._delivery.flush(timeout)

    def close(self, status: str | None = "FINISHED", timeout: float | None = None) -> bool:
        """Flush, end the run with ``status`` and stop the worker; True if all was delivered.

        ``status=None`` stops logging without ending the run (e.g. replaying a spill file for a
        run that lives on elsewhere). Records still undelivered after ``timeout`` (default
        ``close_timeout_s``) are written to the spill file for a later ``RunLogger`` of this run;
        the end status itself is not kept there (a resumed run must not be ended by it).
        Calling it again is a no-op.
        """
        if self._closed:
            return self._delivery.everything_delivered()
        self._closed = True
        with self._process_end.closing(cut_short=self._delivery.cut_waits_short):
            try:
                if status is not None:
                    if status not in TERMINAL_STATUSES:
                        log.warning("close: unknown status %r, using FAILED", status)
                        status = "FAILED"
                    self._delivery.enqueue(("end", status, now_ms()))
                return self._delivery.close(self.close_timeout_s if timeout is None else timeout)
            except Exception as error:  # never raise out of close
                log.warning("RunLogger.close failed: %s", error)
                return False

    @property
    def closed(self) -> bool:
        return self._closed

    def queued_records(self) -> int:
        """Records not delivered yet (approximate while the worker is running)."""
        return self._delivery.queued_records()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(status_for_exception(exc_type, exc))

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


def serialize_dict(dictionary: Any, artifact_file: str) -> str:
    """YAML for ``.yaml``/``.yml`` files, JSON otherwise; unknown objects become strings."""
    plain = json.loads(json.dumps(to_plain_container(dictionary), default=str))
    if str(artifact_file).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)
    return json.dumps(plain, indent=2)
