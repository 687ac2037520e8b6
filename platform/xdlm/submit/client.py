"""Talk to a Ray cluster's job server (the dashboard, http://HEAD:8265) with its auth token.

Ray Jobs run the driver on the cluster, so the laptop may close once a job is submitted; Ray
Client (``ray://HEAD:10001``) keeps the driver on the laptop and is refused here.

Authentication: a Ray 2.60 cluster started with ``RAY_AUTH_MODE=token`` answers the jobs API only
to requests carrying ``Authorization: Bearer <token>``. The token is looked up where Ray itself
looks: ``RAY_AUTH_TOKEN``, then the file named by ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``; it is sent explicitly, so the client works whatever this process's own
``RAY_AUTH_MODE`` says. A cluster without authentication runs any code sent to its port, so
submitting to one needs an explicit opt-out.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from xdlm.errors import UserError

DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
HTTP_TIMEOUT_S = 10.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def resolve_address(address: str | None) -> str:
    """``--address``, else ``RAY_ADDRESS``; it must be the dashboard's http(s) address."""
    given = address or os.environ.get("RAY_ADDRESS")
    source = "--address" if address else "RAY_ADDRESS"
    if not given:
        raise UserError("--address: give the cluster's dashboard address, e.g. --address http://HEAD:8265 "
                        "(or set RAY_ADDRESS to it)")
    if given.startswith("ray://"):
        raise UserError(f"{source}: {given} is a Ray Client address; Ray Jobs need the dashboard address "
                        "http://HEAD:8265 (the job then runs on the cluster, not on this machine)")
    if not given.startswith(("http://", "https://")):
        raise UserError(f"{source}: {given!r} is not a dashboard address; Ray Jobs need http://HEAD:8265")
    return given.rstrip("/")


def read_token() -> tuple[str, str] | None:
    """(token, where it came from), in Ray's own order of lookup; None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    for path, what in ((named, "RAY_AUTH_TOKEN_PATH"), (str(DEFAULT_TOKEN_FILE), None)):
        if not path:
            continue
        file = Path(path).expanduser()
        text = file.read_text().strip() if file.is_file() else ""
        if text:
            return text, str(file)
        if what:  # named explicitly but unusable: say so rather than fall back silently
            raise UserError(f"{what}: {file} does not exist or is empty")
    return None


def auth_mode(address: str) -> str:
    """``token`` or ``disabled``, as the cluster reports it (``/api/authentication_mode`` is public)."""
    import requests

    try:
        r = requests.get(f"{address}/api/authentication_mode", timeout=HTTP_TIMEOUT_S)
        if r.status_code == 200:
            return str(r.json().get("authentication_mode", "disabled"))
        # a server without that endpoint: does the jobs API answer a request without a token?
        r = requests.get(f"{address}/api/jobs/", timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as err:
        raise UserError(f"--address: no Ray dashboard answers at {address} ({type(err).__name__})") from None
    return "token" if r.status_code in (401, 403) else "disabled"


@dataclass
class Connection:
    client: object  # ray.job_submission.JobSubmissionClient
    address: str
    authenticated: bool
    token_source: str | None
    headers: dict[str, str] | None = None


def connect(address: str | None, submitting: bool = False, allow_unauthenticated: bool = False) -> Connection:
    """A ``JobSubmissionClient`` for ``address`` with the token, after checking the cluster's
    auth mode: no token for a token cluster, or a submission to an open cluster without the
    opt-out, is refused before anything is sent."""
    address = resolve_address(address)
    mode = auth_mode(address)
    headers, source = {}, None
    if mode == "token":
        found = read_token()
        if found is None:
            raise UserError(f"the cluster at {address} requires a Ray auth token and none was found: set "
                            "RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or write it to "
                            "~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
        token, source = found
        headers = {"Authorization": f"Bearer {token}"}
    elif submitting and not allow_unauthenticated:
        raise UserError(f"the cluster at {address} runs without authentication: anyone who can reach its "
                        "port can run code on it, so xdlm will not submit there. Start it with "
                        "RAY_AUTH_MODE=token (docs/submit.md), or pass --allow-unauthenticated if the port "
                        "is reachable only by you")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address, headers=headers)
    except AuthenticationError:
        raise UserError(f"the cluster at {address} refused the auth token from {source}: it is not this "
                        "cluster's token") from None
    except ConnectionError as err:
        raise UserError(f"--address: {err}") from None
    return Connection(client, address, mode == "token", source, headers)


def job_info(conn: Connection, job_id: str):
    """The job's ``JobDetails``; an unknown id is the user's mistake."""
    try:
        return conn.client.get_job_info(job_id)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise UserError(f"no job {job_id!r} on the cluster at {conn.address} (see `xdlm jobs list`)") from None
        raise


def describe(info) -> dict[str, str]:
    """One job as the columns ``xdlm jobs`` shows: id, status, kind, name, start, end."""
    import time

    def stamp(ms):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"

    meta = info.metadata or {}
    return {"id": info.submission_id or info.job_id or "?", "status": str(info.status.value),
            "kind": meta.get("xdlm.kind", "-"), "name": meta.get("xdlm.name", "-"),
            "start": stamp(info.start_time), "end": stamp(info.end_time)}


def list_jobs(conn: Connection) -> list[dict[str, str]]:
    """Submitted jobs, oldest first (drivers started by hand on the head are left out)."""
    jobs = [j for j in conn.client.list_jobs() if j.submission_id]
    return [describe(j) for j in sorted(jobs, key=lambda j: j.start_time or 0)]


def stop(conn: Connection, job_id: str) -> bool:
    """Ask Ray to stop the job; False when it had already ended."""
    job_info(conn, job_id)
    return bool(conn.client.stop_job(job_id))


def live_actors(conn: Connection, job_id: str) -> list[dict]:
    """The job's actors that are not DEAD, from the state API over HTTP (detached ones left out:
    Ray Train's placement-group cleaner and autoscaling coordinator outlive runs by design and
    hold no CPUs)."""
    import requests

    ray_job_id = job_info(conn, job_id).job_id
    if not ray_job_id:  # stopped before its driver connected: it never had actors
        return []
    params = [("limit", "10000"), ("detail", "true"), ("filter_keys", "job_id"), ("filter_predicates", "="),
              ("filter_values", ray_job_id)]
    r = requests.get(f"{conn.address}/api/v0/actors", params=params, headers=conn.headers or {},
                     timeout=HTTP_TIMEOUT_S)
    r.raise_for_status()
    actors = r.json()["data"]["result"]["result"]
    return [a for a in actors if a.get("state") != "DEAD" and not a.get("is_detached")]


def wait_stopped(conn: Connection, job_id: str, timeout_s: float = 60.0) -> list[dict]:
    """Wait until the job is terminal and none of its actors is left (the driver's SIGTERM
    handler aborts Ray Train, and Ray ends what the dead driver owned); the actors still there
    when ``timeout_s`` runs out (empty: all ended)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        ended = str(job_info(conn, job_id).status.value) in TERMINAL
        left = live_actors(conn, job_id) if ended else []
        if (ended and not left) or time.monotonic() > deadline:
            return left if ended else [{"class_name": "(the driver)", "state": "RUNNING"}]
        time.sleep(1.0)


def logs(conn: Connection, job_id: str) -> str:
    job_info(conn, job_id)
    return conn.client.get_job_logs(job_id)


def follow(conn: Connection, job_id: str, out=None) -> str:
    """Stream the job's logs to ``out`` until it ends; return its final status."""
    out = out or sys.stdout
    job_info(conn, job_id)

    async def tail():
        async for chunk in conn.client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    # the stream closes when the job ends; the status may lag it by a moment
    import time

    deadline = time.monotonic() + 30
    while True:
        status = str(job_info(conn, job_id).status.value)
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
