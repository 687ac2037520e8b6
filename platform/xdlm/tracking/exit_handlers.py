"""How the end of a process reaches its run: SIGTERM/SIGINT end it KILLED, an uncaught exception
FAILED, interpreter exit with the run's ``status_at_exit``.

``ProcessEndHandlers`` is one run's set of handlers. They are chained, never replacing: the
handler that was there before still runs after ours (and for signals whose default is to die,
the process still dies), and uninstalling puts back only what is still ours.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

log = logging.getLogger(__name__)


class EndableRun(Protocol):
    """What the handlers need of the run they end (``RunLogger`` is one)."""

    run_id: str

    @property
    def closed(self) -> bool: ...

    def close(self, status: str | None = "FINISHED", timeout: float | None = None) -> bool: ...


class ProcessEndHandlers:
    """Signal, excepthook and atexit handlers that end ``run`` when the process ends.

    Args:
        run: the run to end; its ``close`` must be wrapped in ``closing()``.
        status_at_exit: how a run that was never closed ends when the interpreter exits.
        signal_timeout_s: how long a signal handler lets ``close`` deliver (a SIGKILL usually
            follows a SIGTERM within some grace period, so keep it well under that).
    """

    def __init__(self, run: EndableRun, *, status_at_exit: str, signal_timeout_s: float) -> None:
        self.status_at_exit = status_at_exit
        self.signal_timeout_s = signal_timeout_s
        self._run = run
        self._previous_signal_handlers: dict[int, Any] = {}
        self._previous_excepthook = None
        self._atexit_registered = False
        # How a signal that arrives while the run is closing is handled (see _on_signal).
        self._closing_thread: threading.Thread | None = None
        self._closing_done = threading.Event()
        self._deferred_signal: int | None = None
        self._cut_close_short: Callable[[], None] | None = None

    def install(self) -> None:
        """Install the handlers; signal handlers only from the main thread (Python's rule)."""
        atexit.register(self._at_exit)
        self._atexit_registered = True
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        if threading.current_thread() is not threading.main_thread():
            return  # e.g. a Ray Train worker thread: no signal handlers there
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # the process chose to survive this signal; so does the run
            try:
                signal.signal(signum, self._on_signal)
            except (ValueError, OSError):
                continue
            self._previous_signal_handlers[signum] = previous

    def uninstall(self) -> None:
        """Put back the previous handlers wherever ours are still the current ones."""
        if self._atexit_registered:
            atexit.unregister(self._at_exit)
            self._atexit_registered = False
        if self._previous_excepthook is not None and sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_excepthook
        # A handler installed on top of ours keeps chaining through ours, which passes the signal
        # on once the run is closed (the previous handlers stay recorded for that).
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous_signal_handlers.items():
                if signal.getsignal(signum) == self._on_signal:
                    try:
                        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
                    except (ValueError, OSError):
                        pass

    @contextmanager
    def closing(self, cut_short: Callable[[], None]) -> Iterator[None]:
        """Wrap the run's ``close``: the handlers come off first, and a signal that interrupts the
        close in its own thread calls ``cut_short`` (stop waiting for delivery) and is passed on
        once the close is done, so the process dies only after the run is ended or spilled."""
        self._closing_thread = threading.current_thread()
        self._cut_close_short = cut_short
        self.uninstall()
        try:
            yield
        finally:
            self._closing_done.set()
            if self._deferred_signal is not None:
                signum, self._deferred_signal = self._deferred_signal, None
                self._chain_signal(signum, None)

    def _on_signal(self, signum: int, frame) -> None:
        if not self._run.closed:
            log.warning("signal %d: ending MLflow run %s as KILLED", signum, self._run.run_id)
            self._run.close("KILLED", timeout=self.signal_timeout_s)
        elif not self._closing_done.is_set():
            if self._closing_thread is threading.current_thread():
                # The signal interrupted the close in this very thread: waiting here would
                # wait on ourselves. Let the close cut its wait short and pass the signal on.
                self._deferred_signal = signum
                if self._cut_close_short is not None:
                    self._cut_close_short()
                return
            self._closing_done.wait(self.signal_timeout_s)  # the close runs in another thread
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
            if not self._run.closed:
                self._run.close(status_for_exception(exc_type, exc))
        finally:
            previous = self._previous_excepthook or sys.__excepthook__
            previous(exc_type, exc, tb)

    def _at_exit(self) -> None:
        if not self._run.closed:
            self._run.close(self.status_at_exit)


def status_for_exception(exc_type, exc) -> str:
    """How a run should end given the exception leaving its scope (None: FINISHED)."""
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    if issubclass(exc_type, SystemExit) and getattr(exc, "code", None) in (None, 0):
        return "FINISHED"
    return "FAILED"
