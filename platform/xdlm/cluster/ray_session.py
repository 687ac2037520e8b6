"""Start or join Ray, with settings measured to matter on small machines (docs/cluster.md)."""

from __future__ import annotations

import os

from xdlm.errors import UserError

# Ray Train V2 polls its workers every 2 s by default, so each report cost ~2 s; at 0.2 s the
# polling itself took ~3 % of a step on 2 cores. xdlm reports only at evaluations and
# checkpoints, so 1 s is the balance. Train's own metrics and print patch (which echoed every
# progress line twice) cost CPU on small machines too. Users can override all of these.
RAY_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
# What workers must see as well (the offline switches travel to remote nodes too). Never a
# credential: Ray records a job's runtime_env where anyone with dashboard access reads it, so
# keys reach workers from the nodes' own environment (an instance role, or the environment of
# `ray start`; a local Ray started here inherits this process's).
FORWARDED_ENV = (
    "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "XDLM_CACHE", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL", "TRITON_INTERPRET",
)


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in RAY_ENV_DEFAULTS.items()}
    env.update({k: os.environ[k] for k in (*RAY_ENV_DEFAULTS, *FORWARDED_ENV) if k in os.environ})
    return env


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory_mb: int = 512,
    include_dashboard: bool = True,
) -> None:
    """Join ``address`` (or RAY_ADDRESS); without one start a local Ray bound to 127.0.0.1.

    The dashboard stays on by default: Ray Train's placement-group cleaner and Tune trials that
    start Train runs rely on the state API it serves.
    """
    import ray

    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": worker_env()}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    # "local", not None: with no address Ray would join the latest `ray start` cluster on this
    # machine (/tmp/ray/ray_current_cluster), which may be someone else's or already gone.
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_memory_mb * 1024 * 1024,
        include_dashboard=include_dashboard,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        runtime_env=runtime_env,
        log_to_driver=True,
    )


def check_resources(num_workers: int, cpus_per_worker: float, use_gpu: bool, what: str = "cluster") -> None:
    """Fail fast, naming what is there, when the workers cannot all be placed (Ray would wait forever)."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    need_cpus = num_workers * cpus_per_worker
    problems = []
    if need_cpus > cpus + 1e-9:
        problems.append(f"{need_cpus:g} CPUs ({num_workers} workers x {cpus_per_worker:g})")
    if use_gpu and num_workers > gpus:
        problems.append(f"{num_workers} GPUs")
    if problems:
        raise UserError(
            f"cluster.num_workers={num_workers} needs {' and '.join(problems)}, but the {what} has "
            f"{cpus:g} CPUs and {gpus:g} GPUs: lower cluster.num_workers / cluster.cpus_per_worker "
            "or add nodes"
        )
