"""Session fixtures for the production-like services (registered by ``tests/conftest.py``).

- ``postgres``: a ``LocalPostgres`` started once per session in a temp dir under /tmp.
- ``production_mlflow``: a ``ProductionMlflow`` (MLflow server on that PostgreSQL, artifacts
  proxied to ``s3://<s3_endpoint bucket>/mlflow`` on the moto endpoint). Its ``url`` is the
  tracking URI (``tracking.tracking_uri=...``); ``restart_postgres(down_s)`` restarts the database
  under it (same data directory and port). Tests that restart it must leave it running.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.services.mlflow_stack import ProductionMlflow, start_production_mlflow
from tests.services.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    # directly under /tmp: the postgres user must reach it, and the socket path must stay short
    root = tempfile.mkdtemp(prefix="xdlm-pg-", dir="/tmp")
    server = LocalPostgres(root).init().start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def production_mlflow(postgres, s3_endpoint, tmp_path_factory) -> Iterator[ProductionMlflow]:
    stack = start_production_mlflow(tmp_path_factory.mktemp("mlflow-production"), postgres,
                                    s3_endpoint["url"], s3_endpoint["bucket"])
    try:
        yield stack
    finally:
        stack.server.stop()
