"""MLflow fixtures: one real ``mlflow server`` on loopback for the whole session.

Written to be movable as-is to ``tests/conftest.py`` once other test directories need a tracking
server too. Tests that stop the server (outage simulations) must start their own
``LocalMlflowServer`` instead of touching this shared one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from xdlm.tracking.server import LocalMlflowServer


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflowServer]:
    """A running tracking server (SQLite store + proxied artifacts in a session tmp dir)."""
    server = LocalMlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tracking_uri(mlflow_server: LocalMlflowServer) -> str:
    return mlflow_server.url


@pytest.fixture
def mlflow_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


@pytest.fixture
def experiment_name(request: pytest.FixtureRequest) -> str:
    """An experiment name no other test uses, so tests never see each other's runs."""
    return f"{request.node.name[:60]}-{uuid.uuid4().hex[:8]}"
