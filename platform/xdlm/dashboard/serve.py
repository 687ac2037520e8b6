"""``xdlm dashboard``: the MLflow UI and the review pages side by side, on loopback by default.

Over a local store (``sqlite:///...``) the MLflow UI is started here as a lean ``mlflow server``
subprocess (``tracking.server``: one worker, no job runner) and stopped with the dashboard; over
a tracking server (``http(s)://``) that server is the UI and nothing else is started.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import threading
from pathlib import Path

from xdlm.errors import UserError
from xdlm.tracking.local_store import ARTIFACT_DIR_NAME, sqlite_database
from xdlm.tracking.server import LocalMlflowServer


def default_tracking_uri() -> str:
    """What the other commands use without a job: MLFLOW_TRACKING_URI, else ``runs/mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return os.environ["MLFLOW_TRACKING_URI"].strip()
    return f"sqlite:///{Path('runs').resolve() / 'mlflow.db'}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int, mlflow_port: int | None, tracking_uri: str) -> str | None:
    """What a bind beyond loopback exposes, or None on loopback."""
    if is_loopback(host):
        return None
    ports = f"ports {port} and {mlflow_port}" if mlflow_port else f"port {port}"
    return (f"warning: --host {host} serves, without authentication, to anyone who can reach this machine on "
            f"{ports}: every run's params, metrics and artifacts in {tracking_uri}"
            + (", and the MLflow UI, which can also rename and delete runs and experiments" if mlflow_port else "")
            + f". Prefer --host 127.0.0.1 and an SSH tunnel (ssh -L {port}:127.0.0.1:{port}"
            + (f" -L {mlflow_port}:127.0.0.1:{mlflow_port}" if mlflow_port else "") + " HOST).")


def check_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"{flag}: cannot listen on {host}:{port} ({err.strerror}); pick another port") from None


class MlflowUI(LocalMlflowServer):
    """``mlflow server`` over an existing store: artifacts of new experiments beside the
    database (as ``local_store.artifact_root`` puts the platform's own), log in the same folder."""

    def __init__(self, tracking_uri: str, host: str, port: int) -> None:
        database = sqlite_database(tracking_uri)
        root = database.parent if database is not None else Path(tempfile.mkdtemp(prefix="xdlm-mlflow-ui-"))
        super().__init__(root, host=host, port=port)
        self.tracking_uri = tracking_uri

    @property
    def backend_store_uri(self) -> str:
        return self.tracking_uri

    @property
    def artifacts_dir(self) -> Path:
        return self.root_dir / ARTIFACT_DIR_NAME

    @property
    def log_path(self) -> Path:
        return self.root_dir / "mlflow-ui.log"


def run_dashboard(tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 8090,
                  mlflow_port: int = 5000, refresh_s: float = 10.0) -> None:
    """Serve until interrupted (Ctrl-C), then stop the MLflow UI it started."""
    import uvicorn

    from xdlm.dashboard.app import create_app

    uri = tracking_uri or default_tracking_uri()
    database = sqlite_database(uri)
    if database is not None and not database.is_file():
        raise UserError(f"--tracking-uri: no MLflow store at {database} (train a run first, or point at another store)")
    remote = uri.startswith(("http://", "https://"))
    check_port_free(host, port, "--port")
    ui = None
    if not remote:
        check_port_free(host, mlflow_port, "--mlflow-port")
    warning = exposure_warning(host, port, None if remote else mlflow_port, uri)
    if warning:
        print(f"xdlm dashboard: {warning}", flush=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if not remote:
        # the pages read the store themselves: they answer at once, while the MLflow UI (tens of
        # seconds on a busy machine) comes up beside them
        ui = MlflowUI(uri, host, mlflow_port)
        print(f"starting the MLflow UI over {uri} (log: {ui.log_path}) ...", flush=True)
        threading.Thread(target=_start_ui, args=(ui, f"http://{shown}:{mlflow_port}/"), daemon=True).start()
    try:
        app = create_app(uri, mlflow_url=uri if remote else None, mlflow_port=mlflow_port, refresh_s=refresh_s)
        print(f"xdlm dashboard: http://{shown}:{port}/   (runs, curves, sweeps, scaling, trajectories)", flush=True)
        if remote:
            print(f"MLflow UI:      {uri}", flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if ui is not None:
            ui.stop()


def _start_ui(ui: MlflowUI, url: str) -> None:
    try:
        ui.start()
        print(f"MLflow UI:      {url}", flush=True)
    except Exception as err:  # the review pages still work; say why the UI does not
        print(f"xdlm dashboard: the MLflow UI did not start: {str(err).splitlines()[0]} (log: {ui.log_path})",
              flush=True)
