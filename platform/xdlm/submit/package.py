"""What ``xdlm submit`` sends: the job or sweep validated here, its entrypoint and runtime_env.

The project directory travels as the job's ``working_dir`` (the job file with it, so the path the
entrypoint names is the one validated here), and the ``xdlm`` package as a ``py_modules`` entry,
so the driver and every worker import the code that was validated, not whatever version the
cluster has installed. Only dependencies (torch, ray, mlflow, ...) must be installed on the
cluster.

No secrets travel: Ray records a job's runtime_env and entrypoint and shows them to anyone who
can list jobs, so AWS keys, tokens and passwords come from the cluster's own environment.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from xdlm.errors import UserError

#: Left out of the upload (gitignore syntax, relative to the project): run outputs, environments,
#: caches, weights and figures; Ray also honours the project's .gitignore.
EXCLUDES = [
    "/runs/", "/mlruns/", "/.venv/", "/.git/", "/.xdlm/", "/build/", "/dist/", "/docs/img/",
    "/benchmarks/results/", "__pycache__/", "*.pyc", "*.egg-info/", ".pytest_cache/", ".hypothesis/",
    ".ruff_cache/", "*.pt", "*.safetensors", "*.ckpt",
]
AGENT_WAIT_S = 60.0
STOP_GRACE_S = 20
#: Names that look like credentials: refused in --env, whatever their value.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|SESSION|AUTH", re.IGNORECASE)


@dataclass
class Submission:
    kind: str  # "train" or "sweep"
    name: str
    file: str  # relative to the project
    tracking_uri: str
    experiment: str
    storage: str  # the run's or the sweep's directory, as the cluster sees it
    entrypoint: str
    runtime_env: dict
    metadata: dict[str, str]
    submission_id: str = field(default="")


def project_root() -> Path:
    """The directory that holds ``platform/xdlm`` (an editable install: scripts/setup.sh)."""
    import xdlm

    root = Path(xdlm.__file__).resolve().parents[2]
    if not ((root / "pyproject.toml").is_file() and (root / "platform" / "xdlm").is_dir()):
        raise UserError(f"xdlm submit uploads the project directory, but xdlm is installed from {root}, "
                        "which is not a checkout; run it from a checkout set up by scripts/setup.sh")
    return root


def kind_of(path: Path) -> str:
    """``sweep`` for a sweep file (it has ``base:`` or ``space:``), else ``train``."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return "sweep" if isinstance(data, dict) and ("base" in data or "space" in data) else "train"


def inside(path: Path, root: Path, what: str) -> str:
    """``path`` relative to the project; files outside it would not travel with the upload."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        raise UserError(f"{what}: {path} is outside the project {root}, so it would not travel to the "
                        "cluster; copy it into the project (e.g. jobs/ or sweeps/) and submit that") from None


def check_storage(storage_path: str, field_name: str) -> None:
    """On the cluster the job's working directory is Ray's temporary copy of the project: a
    relative local path would put the run there, and it would be deleted with it."""
    from xdlm.cluster import storage

    if storage.is_local(storage_path) and not os.path.isabs(os.path.expanduser(storage_path.removeprefix("file://"))):
        raise UserError(f"{field_name}: {storage_path!r} is relative; on the cluster it would land in Ray's "
                        "temporary copy of the project and be lost. Give s3://BUCKET/PREFIX or an absolute path "
                        f"every node shares, e.g. {field_name}=/mnt/shared/runs")


def forwarded_env(extra: list[str]) -> dict[str, str]:
    """The env_vars of the runtime_env: non-secret settings only (module docstring)."""
    env = {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",  # the driver's ray.init adds env_vars of its own
           # `xdlm jobs stop` sends SIGTERM; Ray's default 3 s before SIGKILL is too short for the
           # driver to abort Ray Train and end its MLflow run KILLED (launch.sigterm_aborts_training)
           "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if urlparse(uri).password:
            raise UserError("MLFLOW_TRACKING_URI carries a password, which Ray would record with the job; set "
                            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD in the cluster's environment instead")
        env["MLFLOW_TRACKING_URI"] = uri
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UserError(f"--env: give NAME=VALUE, got {item!r}")
        if SECRET_NAME.search(key):
            raise UserError(f"--env: {key} looks like a credential; Ray records a job's env_vars where anyone who "
                            "can list jobs sees them, so set it in the cluster's own environment")
        env[key] = value
    return env


def prepare(file: str, overrides: list[str], resume: bool = False, name: str | None = None,
            python: str = "python", env: list[str] | None = None) -> Submission:
    """Validate the job or sweep exactly as ``xdlm train``/``xdlm sweep`` do before Ray starts,
    and build what is sent; ``UserError`` naming the field otherwise. Nothing is contacted."""
    from xdlm.train.launch import tracking_uri_of
    from xdlm.train.preflight import check_memory, check_trainable

    root = project_root()
    path = Path(file).expanduser()
    if not path.is_file():
        raise UserError(f"{file}: no such job or sweep file")
    relative = inside(path, root, file)
    kind = kind_of(path)
    overrides = [*overrides, *([f"name={name}"] if name else [])]
    if kind == "train":
        from xdlm.config import load_job

        job = load_job(path, overrides)
        check_trainable(job)
        check_memory(job)  # the plan is printed, and a job that cannot fit refused, before submitting
        check_storage(job.cluster.storage_path, "cluster.storage_path")
        run_name, storage = job.name, job.run_dir()
        command = ["train", relative, *overrides, *(["--resume"] if resume else [])]
    else:
        from xdlm.tune.layout import sweep_dir
        from xdlm.tune.sweep import load_sweep

        sweep = load_sweep(path, overrides)
        job = sweep.job
        inside(Path(sweep.spec.base.job), root, "base.job")
        storage_path = sweep.spec.storage_path or job.cluster.storage_path
        check_storage(storage_path, "storage_path" if sweep.spec.storage_path else "cluster.storage_path")
        check_trainable(job)
        run_name, storage = sweep.spec.name, str(sweep_dir(storage_path, sweep.spec.name))
        # `xdlm sweep --resume NAME` reads the sweep back from its storage, not from the file
        command = (["sweep", "--resume", run_name, "--storage", storage_path] if resume
                   else ["sweep", relative, *overrides])
    runtime_env = {
        "working_dir": str(root),
        "py_modules": [str(root / "platform" / "xdlm")],
        "excludes": list(EXCLUDES),
        "env_vars": forwarded_env(env or []),
    }
    return Submission(
        kind=kind, name=run_name, file=relative, tracking_uri=tracking_uri_of(job),
        experiment=job.tracking.experiment, storage=storage,
        entrypoint=" ".join(shlex.quote(part) for part in [python, "-m", "xdlm.cli", *command]),
        runtime_env=runtime_env,
        metadata={"xdlm.kind": kind, "xdlm.name": run_name, "xdlm.file": relative,
                  "xdlm.resume": str(resume).lower()},
    )


def new_submission_id(sub: Submission) -> str:
    """Readable and unique: ``xdlm-<kind>-<name>-<time>-<4 hex>``."""
    return f"xdlm-{sub.kind}-{sub.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def submit(conn, sub: Submission) -> str:
    """Send ``sub`` through the connection's JobSubmissionClient; return the submission id."""
    sub.submission_id = new_submission_id(sub)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return conn.client.submit_job(entrypoint=sub.entrypoint, runtime_env=sub.runtime_env,
                                          submission_id=sub.submission_id, metadata=sub.metadata)
        except RuntimeError as err:  # a head that just started answers before its job agent is up
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def wait_started(conn, job_id: str, timeout_s: float = 120.0) -> str:
    """Wait while the job is PENDING (the upload is unpacked, the runtime_env built); its status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(conn.client.get_job_status(job_id).value)
        if status != "PENDING" or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
