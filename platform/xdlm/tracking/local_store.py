"""A ``sqlite:///`` tracking store on local disk: where its artifacts go, and opening it safely.

Without a team server, runs live in a SQLite file (``resolve_tracking_uri`` puts it in the run
directory). Two things MLflow leaves to the caller there:

- The artifact root. MLflow would put a local store's artifacts under the current directory of
  whichever process created the experiment; ``artifact_root`` pins them next to the database,
  one rule for every caller (training, sweeps, ``xdlm eval``), so the run directory stays
  self-contained and the first creator no longer decides.
- Opening a new database. MLflow creates and migrates the tables on first open with no lock, and
  SQLite commits each schema change on its own: processes opening a fresh file at once (sweep
  trials) fail, and can leave it half-migrated. ``exclusive_open`` serializes the opening
  across processes with a lock file next to the database.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_SQLITE_PREFIX = "sqlite:///"
# Beside MLflow's own default for ``mlflow server``, so a store moved behind a server keeps
# the same layout.
ARTIFACT_DIR_NAME = "mlartifacts"


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute), None for any other store."""
    if not tracking_uri.startswith(_SQLITE_PREFIX):
        return None
    path = tracking_uri[len(_SQLITE_PREFIX) :].split("?", 1)[0]  # drop driver options
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment of this store keeps its artifacts.

    ``sqlite:///<dir>/mlflow.db`` -> ``file://<dir>/mlartifacts``; None for servers (and any
    other store), which decide for themselves (e.g. ``mlflow server --artifacts-destination``).
    """
    database = sqlite_database(tracking_uri)
    if database is None:
        return None
    return (database.parent / ARTIFACT_DIR_NAME).as_uri()


@contextmanager
def exclusive_open(tracking_uri: str) -> Iterator[None]:
    """Hold a lock, shared by all processes, while opening a ``sqlite:///`` store.

    A no-op for other stores. If the lock file cannot be created the store is opened without it
    (the database beside it would not be writable either, and MLflow says so more clearly).
    """
    database = sqlite_database(tracking_uri)
    if database is None:
        yield
        return
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(database.with_name(database.name + ".lock"), "a")  # noqa: SIM115
    except OSError as error:
        log.debug("opening %s without a lock: %s", database, error)
        yield
        return
    with lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
        yield
