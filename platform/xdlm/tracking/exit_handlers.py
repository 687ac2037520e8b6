"""How a process ending reaches the run: SIGTERM/SIGINT end it KILLED, an uncaught exception
FAILED, interpreter exit flushes (a mixin of ``RunLogger``)."""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading

log = logging.getLogger("xdlm.tracking.logger")


class ProcessEndHandlers:
    """Signal, excepthook and atexit handlers of a ``RunLogger`` (chained, never replacing)."""

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


def status_for_exception(exc_type, exc) -> str:
    """How a run should end given the exception leaving its scope (None: FINISHED)."""
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    if issubclass(exc_type, SystemExit) and getattr(exc, "code", None) in (None, 0):
        return "FINISHED"
    return "FAILED"
