"""``DriverLog``: a copy of what the driver process prints, for the run's artifacts.

While active, ``sys.stdout`` and ``sys.stderr`` write both to where they wrote before and to a
file. Ray prints the workers' output through the driver's ``sys.stdout``/``sys.stderr``, so
their lines (``(RayTrainWorker pid=...) ...``) are in the file too; what bypasses Python's
streams (C++ logs of Ray's core, logging handlers that kept a reference to the original stream)
is not. Writing to the file never raises into the caller.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO


class _Tee:
    def __init__(self, stream: TextIO, copy: TextIO, lock: threading.Lock) -> None:
        self._stream, self._copy, self._lock = stream, copy, lock

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        try:
            with self._lock:
                self._copy.write(text)
        except Exception:
            pass
        return written

    def flush(self) -> None:
        self._stream.flush()
        try:
            with self._lock:
                self._copy.flush()
        except Exception:
            pass

    def __getattr__(self, name: str):  # fileno, isatty, encoding... of the real stream
        return getattr(self._stream, name)


class DriverLog:
    """``with DriverLog(path): ...`` (or ``start()`` ... ``stop()``): ``path`` holds a copy of
    everything printed in between."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None
        self._saved: tuple[TextIO, TextIO] | None = None

    def __enter__(self) -> DriverLog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> DriverLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", errors="replace", buffering=1)
        lock = threading.Lock()
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, self._file, lock)
        sys.stderr = _Tee(sys.stderr, self._file, lock)
        return self

    def flush(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.flush()

    def stop(self) -> None:
        """Put the streams back and close the file (again: nothing)."""
        if self._saved is not None:
            # put back only what is still ours (someone may have wrapped the streams after us)
            if isinstance(sys.stdout, _Tee) and sys.stdout._copy is self._file:
                sys.stdout = self._saved[0]
            if isinstance(sys.stderr, _Tee) and sys.stderr._copy is self._file:
                sys.stderr = self._saved[1]
            self._saved = None
        if self._file is not None:
            self._file.close()
            self._file = None
