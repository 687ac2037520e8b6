"""A throwaway PostgreSQL server from Debian's packages, for tests that need a production-like
MLflow backend store.

``LocalPostgres`` runs ``initdb`` into a temporary data directory, starts ``postgres`` on
127.0.0.1 and a free port (its unix socket in the same directory, never /var/run), and can be
stopped and started again on the same directory and port: that is how tests restart the database
behind a running MLflow server. PostgreSQL refuses to run as root, so as root every command runs
as the ``postgres`` user (``runuser``) on a directory chowned to it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` (Debian's layout), or
    the directory of an ``initdb`` on PATH; None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """One PostgreSQL cluster in ``root`` (data in ``root/data``, socket and log in ``root``).

    ``start()`` returns once the server accepts connections; ``stop()`` is a fast shutdown
    (open connections are cut, as in a real restart); ``restart(down_s)`` stops, waits, starts.
    ``uri(db)`` is a SQLAlchemy URL with the psycopg2 driver.
    """

    user = "postgres"

    def __init__(self, root: str | os.PathLike, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb): run scripts/setup.sh as root")
        self.bin = bin_dir
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.port = port or _free_port()
        self.log_path = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0

    # ------------------------------------------------------------------ commands

    def _run(self, *argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # LC_ALL=C: initdb refuses locales the machine does not have
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {proc.stderr[-2000:]}"
                               f"{self._log_tail()}")
        return proc

    def _log_tail(self) -> str:
        try:
            return "\nlog tail:\n" + self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def init(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            # the postgres user must own the directory and reach it through its parents
            # (and reach it: keep ``root`` directly under a world-traversable directory like /tmp)
            shutil.chown(self.root, self.user, self.user)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "--encoding=UTF8",
                      "--no-sync")
        return self

    def start(self, timeout_s: float = 30.0) -> LocalPostgres:
        # fsync off: a test database needs no durability, and on 2 busy cores fsync stalls commits
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w",
                  "-t", str(int(timeout_s)), "start", timeout=timeout_s + 10)
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (cutting every open connection), stay down ``down_s`` seconds, start again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return self.uri(name)

    def uri(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{db}"

    def __repr__(self) -> str:
        return f"LocalPostgres(127.0.0.1:{self.port}, data={str(self.data)!r})"
