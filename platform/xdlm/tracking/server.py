"""A local MLflow tracking server, for users without a team server and for tests.

It is a plain ``mlflow server`` subprocess over a SQLite store and a local artifact directory,
both under ``root_dir``, so stopping and starting it again (on the same port) keeps every run:
that is how the tests simulate a tracking-server outage. It is started lean on purpose:
``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` and ``--workers 1`` (otherwise MLflow 3 also starts
a job runner and huey workers, ~2.5 GB RSS instead of ~0.5 GB).

For a shared team deployment see ``infra/mlflow/README.md``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

_HEALTH_POLL_S = 0.1


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; racy but fine for loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalMlflowServer:
    """``mlflow server`` on loopback with a SQLite store and proxied local artifacts (or the
    given ``backend_store_uri`` and ``artifacts_destination``; ``env`` is added to the server's
    environment).

    ``port=None`` picks a free port once; the port then stays fixed for the object's lifetime so
    that ``stop()`` + ``start()`` brings the same server back at the same URL (clients that were
    logging during the outage just resume).
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 120.0,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root_dir = Path(root_dir).resolve()
        self._backend_store_uri = backend_store_uri
        self._artifacts_destination = artifacts_destination
        self.env = dict(env or {})
        self.host = host
        self.port = port if port is not None else find_free_port(host)
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backend_store_uri(self) -> str:
        """The given store (e.g. ``postgresql://...``), else SQLite under ``root_dir``."""
        return self._backend_store_uri or f"sqlite:///{self.root_dir / 'mlflow.db'}"

    @property
    def artifacts_destination(self) -> str:
        """Where the server proxies artifacts to: the given URI (``s3://bucket/prefix``), else
        ``artifacts_dir``."""
        return self._artifacts_destination or str(self.artifacts_dir)

    @property
    def artifacts_dir(self) -> Path:
        return self.root_dir / "artifacts"

    @property
    def log_path(self) -> Path:
        return self.root_dir / "server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
            "--host", self.host,
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip

    def start(self) -> LocalMlflowServer:
        """Start the server and return once ``/health`` answers (raises if it never does)."""
        if self.is_running():
            return self
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        env.update(self.env)
        # A tracking URI inherited from the caller would make no difference to the server, but a
        # stray one pointing at this very server confuses debugging: drop it.
        env.pop("MLFLOW_TRACKING_URI", None)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # Own process group: stop() can then end the server and anything it spawned (uvicorn)
        # by this group's id, without touching other processes.
        self._process = subprocess.Popen(
            self.command(),
            cwd=self.root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self._process.returncode} during startup; "
                    f"log tail:\n{self._log_tail()}"
                )
            if self.healthy():
                return
            time.sleep(_HEALTH_POLL_S)
        raise TimeoutError(
            f"mlflow server at {self.url} not healthy after {self.startup_timeout_s:.0f} s; "
            f"log tail:\n{self._log_tail()}"
        )

    def healthy(self, timeout_s: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 15.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after ``timeout_s``)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=timeout_s)
        if process is not None:
            # Children that outlived the leader (uvicorn workers) are still in its group.
            self._signal_group(process, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @staticmethod
    def _signal_group(process: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _log_tail(self, n_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalMlflowServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LocalMlflowServer({self.url}, root_dir={str(self.root_dir)!r}, {state})"
