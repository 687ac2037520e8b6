"""A real two-node Ray cluster on loopback for the submission tests: a head and a second node
that joins it, each a ``ray start --block`` process in its own process group, with its own ports,
temp dir and 1 CPU, token authentication on (a token generated here, in a token file).

The pytest process is already a driver of the session's local Ray (tests/conftest.py), so this
cluster is reached only the way a laptop reaches a real one: the Jobs API (``xdlm submit``) and
the state API over HTTP. The second node carries the custom resource ``node2`` so a test can name
it; killing its process group kills the whole node (raylet, agents and the workers it started).

The nodes start with recognisable fake credentials in their environment (``PLANTED``: an AWS
secret key moto accepts, an MLflow user and password the server ignores), as an instance role or
the environment of ``ray start`` would provide real ones: every driver and worker of a submitted
job sees them, and tests/cluster/test_secrets.py searches what a run wrote for them.

``quickstart_job``: the quickstart (tests/cluster/stack.py TWO_NODE_QUICKSTART) submitted once per
session with ``xdlm submit --follow``, tracked to the production stack (PostgreSQL + S3
artifacts), checkpoints in the bucket; the two-node tests read it back, the fault tests compare
their final weights with it, the secrets test searches it.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.cluster.stack import PLANTED, QUICKSTART, TWO_NODE_QUICKSTART

RAY = str(Path(sys.executable).parent / "ray")
# Node death is noticed within ~3 s instead of Ray's default ~15-30 s: the node-kill test waits on it.
FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                          "RAY_health_check_timeout_ms": "1000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(width: int = 40) -> tuple[int, int]:
    """A run of ``width`` ports nobody listens on, away from Ray's default worker ports (10002+)."""
    for _ in range(100):
        low = random.randrange(30000, 45000)
        if all(port_is_free(p) for p in range(low, low + width)):
            return low, low + width - 1
    raise RuntimeError("no free port range for Ray workers")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class TwoNodeCluster:
    """Head (1 CPU, dashboard on 127.0.0.1) + second node (1 CPU, resource ``node2``)."""

    def __init__(self, env: dict[str, str]):
        self.token_dir = Path(tempfile.mkdtemp(prefix="xr-token-"))
        self.token_file = self.token_dir / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        # Ray's own session variables of the pytest process (it is a driver of the session Ray)
        # must not leak into this cluster
        base = {k: v for k, v in env.items() if not k.startswith("RAY_") or k.startswith("RAY_TRAIN_")}
        self.env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "RAY_USAGE_STATS_ENABLED": "0", **FAST_FAILURE_DETECTION,
                    "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
        self.gcs_port = free_port()
        # Ray Train's PlacementGroupCleaner finds "its" cluster by auto-detection, which fails while
        # the session Ray runs on this machine too; pinning the address keeps it on this cluster.
        self.env["RAY_ADDRESS"] = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.head: subprocess.Popen | None = None
        self.node2: subprocess.Popen | None = None
        self.node2_id: str | None = None
        self.temps: list[str] = []

    def _start(self, args: list[str]) -> subprocess.Popen:
        temp = tempfile.mkdtemp(prefix="xr-", dir="/tmp")  # Ray's socket paths must stay short
        self.temps.append(temp)
        low, high = free_range()
        argv = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                f"--temp-dir={temp}", f"--object-store-memory={80 * 1024 * 1024}",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                f"--min-worker-port={low}", f"--max-worker-port={high}", *args]
        return subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def start(self) -> TwoNodeCluster:
        self.head = self._start(["--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
                                 f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
                                 f"--ray-client-server-port={free_port()}"])
        self.start_node2()
        return self

    def start_node2(self, timeout_s: float = 60.0) -> str:
        """(Re)join the second node; return its node id once the cluster lists it ALIVE."""
        before = {n["node_id"] for n in self.nodes() if n["state"] == "ALIVE"} if self.head_up() else set()
        self.node2 = self._start([f"--address=127.0.0.1:{self.gcs_port}", '--resources={"node2": 1}'])
        deadline = time.monotonic() + timeout_s
        while True:
            alive = [n for n in self.nodes() if n["state"] == "ALIVE"] if self.head_up() else []
            joined = [n for n in alive if n["resources_total"].get("node2") and n["node_id"] not in before]
            if joined and len(alive) == 2:
                self.node2_id = joined[0]["node_id"]
                return self.node2_id
            assert self.head.poll() is None and self.node2.poll() is None, "a Ray node exited while starting"
            assert time.monotonic() < deadline, f"the two-node cluster did not come up: {alive}"
            time.sleep(0.5)

    def kill_node2(self) -> None:
        """SIGKILL the second node: raylet, agents and the workers it started, all at once."""
        os.killpg(self.node2.pid, signal.SIGKILL)
        self.node2.wait(timeout=10)

    def raylet_environs(self) -> list[dict[str, str]]:
        """The environment of each node's raylet (which starts every driver and worker there)."""
        import psutil

        found = []
        for proc in (self.head, self.node2):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.name() == "raylet":
                        found.append(child.environ())
        return found

    def job_log_files(self, submission_id: str) -> list[Path]:
        """Ray's log files of a submitted job on both nodes: the driver's and every worker's
        stdout/stderr (worker files carry the Ray job id in their name)."""
        r = requests.get(f"{self.address}/api/jobs/{submission_id}", headers=self.headers(), timeout=10)
        r.raise_for_status()
        job_id = r.json()["job_id"]
        files = []
        for temp in self.temps:
            for session in Path(temp).glob("session_*"):
                if session.is_symlink():  # session_latest: the same directory again
                    continue
                files += [path for path in (session / "logs").glob("*") if path.is_file()
                          and (submission_id in path.name or f"-{job_id}-" in path.name)]
        return sorted(files)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    def head_up(self) -> bool:
        try:
            return requests.get(f"{self.address}/api/authentication_mode", timeout=2).ok
        except requests.RequestException:
            return False

    def state(self, resource: str, **filters: str) -> list[dict]:
        """A list from the state API over HTTP (``/api/v0/<resource>``), with ``key=value`` filters."""
        params = [("limit", "1000"), ("detail", "true")]
        for key, value in filters.items():
            params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        r = requests.get(f"{self.address}/api/v0/{resource}", params=params, headers=self.headers(), timeout=30)
        r.raise_for_status()
        return r.json()["data"]["result"]["result"]

    def nodes(self) -> list[dict]:
        return self.state("nodes")

    def job_actors(self, submission_id: str) -> list[dict]:
        """The actors of a submitted job (the driver's Ray job id, looked up by submission id)."""
        r = requests.get(f"{self.address}/api/jobs/{submission_id}", headers=self.headers(), timeout=10)
        r.raise_for_status()
        job_id = r.json().get("job_id")
        return self.state("actors", job_id=job_id) if job_id else []

    def free_cpus(self) -> float:
        r = requests.get(f"{self.address}/api/cluster_status", headers=self.headers(), timeout=10)
        r.raise_for_status()
        usage = r.json()["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        used, total = usage.get("CPU", [0, 0])
        return float(total) - float(used)

    def stop(self) -> None:
        """SIGKILL to each node's process group: GCS, raylet, agents and workers all share it (the
        node-kill test relies on that too), and nothing of a throwaway cluster needs a graceful end;
        `ray start --block` takes over 3 s to stop on SIGTERM."""
        for proc in (self.node2, self.head):
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for temp in [*self.temps, str(self.token_dir)]:
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="package")
def two_nodes(s3_endpoint, ray_session):
    """The two-node cluster, up while tests/cluster runs (~10 s to start) and stopped after it:
    while a second Ray runs on this machine, Ray Train's PlacementGroupCleaner in the session Ray
    cannot find its cluster by auto-detection, and a later sweep hung on a placement group it
    should have removed; the S3 endpoint's variables and
    the planted credentials are in the nodes' environment, as a cluster's instance role would
    provide them. The session Ray starts first: this process keeps the first Ray auth token it
    reads, so a session Ray started after a submission here would run with this cluster's token
    while its job drivers read ~/.ray/auth_token (InvalidAuthToken, seen in test_submit)."""
    cluster = TwoNodeCluster({**os.environ, **PLANTED})
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def quickstart_job(two_nodes, production_mlflow, s3_endpoint, tmp_path_factory) -> dict:
    """The quickstart submitted with ``--follow`` (module docstring), from a process whose
    environment holds the planted credentials too. Returns its name, job id, what the submitting
    process printed (the followed log included), its storage and data cache, its duration and the
    ids of the cluster's nodes when it ended (the fault test replaces the second node later)."""
    from xdlm.cli import main

    name = f"qs-{uuid.uuid4().hex[:6]}"
    storage = f"s3://{s3_endpoint['bucket']}/two-node"
    cache = str(tmp_path_factory.mktemp("two-node-cache"))  # built by this job, shared by the later ones
    mp = pytest.MonkeyPatch()
    for key, value in {**PLANTED, "RAY_AUTH_TOKEN_PATH": str(two_nodes.token_file)}.items():
        mp.setenv(key, value)
    for key in ("RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI"):
        mp.delenv(key, raising=False)
    out, start = io.StringIO(), time.monotonic()
    try:
        with contextlib.redirect_stdout(out):
            rc = main(["submit", QUICKSTART, *TWO_NODE_QUICKSTART, f"data.cache_dir={cache}",
                       f"cluster.storage_path={storage}", f"tracking.tracking_uri={production_mlflow.url}",
                       "--name", name, "--python", sys.executable, "--address", two_nodes.address, "--follow"])
    finally:
        mp.undo()
    text = out.getvalue()
    assert rc == 0, text[-4000:]
    return {"name": name, "job": text.split(" as job ")[1].split()[0], "out": text, "storage": storage,
            "cache": cache, "seconds": time.monotonic() - start,
            "nodes": {n["node_id"] for n in two_nodes.nodes() if n["state"] == "ALIVE"}}
