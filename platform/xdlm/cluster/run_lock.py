"""One writer per run: a lock file in the run's directory, taken atomically.

Taking a run name must be one atomic step, not a check followed seconds later by a write: two
``xdlm train`` of the same name would otherwise both start and interleave their checkpoints.
The lock is created exclusively (``O_CREAT | O_EXCL`` on a local path, a conditional PUT with
``If-None-Match: *`` on S3), holds who took it (host, pid, since when) and is removed when the
run ends.  A lock left by a process that died is recognised as stale when it was taken on this
host (its pid is gone); it is taken over only when asked (``take_over``), since a holder on
another host cannot be checked from here.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass

from xdlm.cluster import storage
from xdlm.errors import UserError

LOCK_FILE = "xdlm_lock.json"


class RunLocked(UserError):
    """Another process holds the run."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: str
    token: str

    def alive(self) -> bool | None:
        """True/False for a holder on this host; None when it cannot be known from here."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since}"


def _create_exclusive(uri: str, body: str) -> bool:
    """Write ``body`` at ``uri`` unless something is there; False if something was."""
    if storage.is_local(uri):
        path = storage.local_path(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        return True
    bucket, key = storage.bucket_and_key(uri)
    try:
        storage.s3_client().put_object(Bucket=bucket, Key=key, Body=body.encode(), IfNoneMatch="*")
    except Exception as err:  # botocore ClientError
        if storage.s3_error_code(err) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return False
        raise
    return True


def _read_holder(uri: str) -> Holder | None:
    """Who holds the lock at ``uri``; None when there is no lock (any more)."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        return None
    except Exception as err:
        if storage.s3_error_code(err) in ("NoSuchKey", "404"):
            return None
        raise
    try:
        return Holder(**json.loads(text))
    except (ValueError, TypeError):  # a torn or foreign file: a holder we cannot describe
        return Holder(host="?", pid=-1, since="?", token="?")


class RunLock:
    """The lock of one run directory; ``release()`` removes it if it is still ours."""

    def __init__(self, run_dir: str, holder: Holder) -> None:
        self.uri = f"{run_dir.rstrip('/')}/{LOCK_FILE}"
        self.holder = holder

    def release(self) -> None:
        current = _read_holder(self.uri)
        if current is not None and current.token == self.holder.token:
            storage.delete(self.uri)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(run_dir: str, name: str, take_over: bool = False) -> RunLock:
    """Take run ``name`` (its directory ``run_dir``) for this process, or raise ``RunLocked``
    naming the holder.  ``take_over``: replace a lock whose holder is gone (or cannot be
    checked from this host); a live holder on this host is never displaced."""
    uri = f"{run_dir.rstrip('/')}/{LOCK_FILE}"
    mine = Holder(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%S%z"), uuid.uuid4().hex)
    body = json.dumps(asdict(mine))
    for _ in range(2):
        if _create_exclusive(uri, body):
            return RunLock(run_dir, mine)
        holder = _read_holder(uri)
        if holder is None:
            continue  # released in between: try again
        alive = holder.alive()
        if take_over and alive is not True:
            storage.delete(uri)
            continue
        if alive is False:
            raise RunLocked(f"name: run {name!r} has a stale lock ({holder.describe()}: that process is "
                            "gone); pass --take-over to take the run over")
        raise RunLocked(f"name: run {name!r} is being written by another process ({holder.describe()}); "
                        "wait for it, choose another name, or, if that process is gone, pass --take-over")
    raise RunLocked(f"name: run {name!r}: could not take its lock at {uri}")
