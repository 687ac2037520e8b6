"""A real two-node Ray cluster on loopback for the submission tests: a head and a second node
that joins it, each a ``ray start --block`` process in its own process group, with its own ports,
temp dir and 1 CPU, token authentication on (a token generated here, in a token file).

The pytest process is already a driver of the session's local Ray (tests/conftest.py), so this
cluster is reached only the way a laptop reaches a real one: the Jobs API (``xdlm submit``) and
the state API over HTTP. The second node carries the custom resource ``node2`` so a test can name
it; killing its process group kills the whole node (raylet, agents and the workers it started).
"""

from __future__ import annotations

import json
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
from pathlib import Path

import pytest
import requests

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
                return joined[0]["node_id"]
            assert self.head.poll() is None and self.node2.poll() is None, "a Ray node exited while starting"
            assert time.monotonic() < deadline, f"the two-node cluster did not come up: {alive}"
            time.sleep(0.5)

    def kill_node2(self) -> None:
        """SIGKILL the second node: raylet, agents and the workers it started, all at once."""
        os.killpg(self.node2.pid, signal.SIGKILL)
        self.node2.wait(timeout=10)

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
        for proc in (self.node2, self.head):
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of that node is left
            except ProcessLookupError:
                pass
        for temp in [*self.temps, str(self.token_dir)]:
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def two_nodes(s3_endpoint):
    """The two-node cluster, up for the session (~10 s to start); the S3 endpoint's variables are
    in the nodes' environment, as a cluster's instance role would provide them."""
    cluster = TwoNodeCluster(dict(os.environ))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]
