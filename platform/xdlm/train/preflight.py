"""Preflight: every check of a job against the machine and the services it will use, before Ray
starts, an MLflow run exists, or a single step trains.

The config's own validation (``JobConfig.validate``) checks values; this checks the world: the
storage can be written, the tracking store is reachable, the data files and the evaluator exist,
the Ray address answers, a local Ray can hold the workers.  Each failure is a ``UserError``
naming the field.  Nothing here writes anything.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from xdlm.checkpoint import has_checkpoint
from xdlm.cluster import storage
from xdlm.config import JobConfig
from xdlm.data.config import DataConfig
from xdlm.errors import UserError
from xdlm.models import backbone_info

TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
CONNECT_TIMEOUT_S = 5.0


def preflight(job: JobConfig, tracking_uri: str | None, address: str | None, ray_running: bool = False) -> None:
    """Raise ``UserError`` for the first thing that would make this job fail after it started.

    ``ray_running``: this process already joined a Ray cluster (a sweep's trial, a test session):
    its size is checked by ``check_resources`` instead of this machine's CPU count."""
    check_trainable(job)
    check_memory(job)
    check_storage(job.cluster.storage_path)
    if tracking_uri is not None:
        check_tracking_uri(tracking_uri, "tracking.tracking_uri")
    check_data(job.data)
    check_evaluator(job.eval.evaluator)
    if ray_running:
        return
    if address:
        check_ray_address(address)
    else:
        check_local_capacity(job)


def check_trainable(job: JobConfig) -> None:
    """A backbone without trainable parameters (the exact ``oracle``) is not trained."""
    if not backbone_info(job.model.backbone).trainable:
        raise UserError(f"model.backbone: {job.model.backbone!r} has no trainable parameters and is "
                        "not trained; run `xdlm oracle` for its study, or train a learned backbone (dit)")


def check_memory(job: JobConfig) -> None:
    """Print the memory plan of a DeepSpeed job, or of any job given ``cluster.gpu_memory_gb``,
    and refuse one whose configuration cannot fit a GPU (``xdlm.train.memory_plan``). A model
    that cannot be built on the meta device here (a Hugging Face model not available locally)
    skips the plan with a note: the workers will say what is wrong with it."""
    if not (job.train.deepspeed or job.cluster.gpu_memory_gb):
        return
    from xdlm.train.memory_plan import architecture_of, check_plan

    try:
        arch = architecture_of(job)
    except Exception as err:  # the plan is advice: never the reason a buildable job fails here
        print(f"xdlm: memory plan unavailable: the model could not be built on the meta device "
              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})", flush=True)
        return
    check_plan(job, arch, echo=lambda text: print(text, flush=True))


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_local_directory(path: str | os.PathLike, field: str) -> None:
    """``path`` is a directory we can write, or can be created as one."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"{field}: {path} is a file, not a directory")
    base = _first_existing(path)
    if not base.is_dir():
        raise UserError(f"{field}: cannot create {path}: {base} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{field}: {base} is not writable, so {path} cannot be written")


def check_storage(storage_path: str) -> None:
    if storage.is_local(storage_path):
        check_local_directory(storage_path.removeprefix("file://"), "cluster.storage_path")
        return
    bucket, _ = storage.bucket_and_key(storage_path)
    import boto3
    import botocore.config
    import botocore.exceptions

    if boto3.Session().get_credentials() is None:
        raise UserError(
            f"cluster.storage_path: {storage_path} needs S3 credentials, and none were found "
            "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role; "
            "AWS_ENDPOINT_URL for an S3-compatible store)")
    client = boto3.client("s3", config=botocore.config.Config(
        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=CONNECT_TIMEOUT_S, retries={"max_attempts": 1}))
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as err:
        raise UserError(f"cluster.storage_path: bucket {bucket!r} is not usable "
                        f"(S3 answered {storage.s3_error_code(err) or '?'})") from None
    except botocore.exceptions.BotoCoreError as err:
        raise UserError(f"cluster.storage_path: cannot reach S3 for bucket {bucket!r} ({err})") from None


def check_tracking_uri(uri: str, field: str) -> None:
    """A URI MLflow can use: a reachable server, or a store whose directory we can write."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise UserError(f"{field}: {uri!r} is not a tracking URI; use http(s)://HOST:PORT, "
                        "sqlite:///PATH/mlflow.db, postgresql://..., or set MLFLOW_TRACKING_URI")
    if scheme in ("http", "https"):
        _check_mlflow_server(uri, field)
    elif scheme == "sqlite":
        db = uri.removeprefix("sqlite:///")
        if not db or db == uri:
            raise UserError(f"{field}: {uri!r}: a sqlite URI looks like sqlite:///absolute/path/mlflow.db")
        check_local_directory(Path("/" + db.lstrip("/")).parent, field)
    elif scheme == "file":
        check_local_directory(parsed.path, field)


def _check_mlflow_server(uri: str, field: str) -> None:
    import urllib.error
    import urllib.request

    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=CONNECT_TIMEOUT_S) as response:  # noqa: S310 (a URI the user chose)
            if response.status != 200:
                raise UserError(f"{field}: the MLflow server at {uri} answered {response.status} on /health")
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # up, behind authentication: the MLflow client brings the credentials
        raise UserError(f"{field}: the MLflow server at {uri} answered {err.code} on /health") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"{field}: the MLflow server at {uri} is not reachable ({reason}); start it "
                        "(infra/mlflow/) or point MLFLOW_TRACKING_URI elsewhere") from None


def check_data(data: DataConfig) -> None:
    cache = data.resolved_cache_dir()
    check_local_directory(cache, "data.cache_dir")
    files = [*data.data_files, *(f for fs in data.split_data_files.values() for f in fs)]
    missing = [f for f in files if not any(ch in f for ch in "*?[") and not Path(f).expanduser().is_file()]
    if missing:
        field = "data.data_files" if any(f in data.data_files for f in missing) else "data.split_data_files"
        raise UserError(f"{field}: missing files: {', '.join(missing)}")


def looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.sep in spec and Path(spec).expanduser().exists()


def check_evaluator(spec: str | None) -> None:
    """An evaluator directory must exist and hold a causal run's checkpoint or a Hugging Face
    model; anything else is taken as a Hugging Face hub name (needs a network)."""
    if not spec:
        return
    path = Path(spec).expanduser()
    if looks_like_path(spec) and not path.exists():
        raise UserError(f"eval.evaluator: {spec} does not exist (a run directory of jobs/ar_evaluator.yaml, "
                        "a Hugging Face model directory, or a hub name)")
    if path.is_dir() and not (has_checkpoint(path) or (path / "config.json").is_file()):
        raise UserError(f"eval.evaluator: {spec} is a directory with neither an xdlm checkpoint nor a "
                        "Hugging Face config.json")


def check_ray_address(address: str) -> None:
    """``ray://HOST:PORT`` (Ray Client), ``HOST:PORT`` (GCS) or ``auto``: the port must answer."""
    if address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"cluster.address: {address!r} must look like ray://HOST:10001, HOST:6379 or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise UserError(f"cluster.address: nothing answers at {address} ({err.strerror or err})") from None


def check_local_capacity(job: JobConfig) -> None:
    """A local Ray gets this machine's CPUs: refuse workers that could never all be placed."""
    cpus = os.cpu_count() or 1
    need = job.cluster.num_workers * job.cluster.cpus_per_worker
    if need > cpus + 1e-9:
        raise UserError(f"cluster.num_workers={job.cluster.num_workers} x cluster.cpus_per_worker="
                        f"{job.cluster.cpus_per_worker:g} needs {need:g} CPUs; this machine has {cpus} "
                        "(lower them, or give cluster.address of a bigger cluster)")
    if job.cluster.use_gpu:
        import torch

        if torch.cuda.device_count() < job.cluster.num_workers:
            raise UserError(f"cluster.use_gpu: {job.cluster.num_workers} workers need as many GPUs; "
                            f"this machine has {torch.cuda.device_count()}")
