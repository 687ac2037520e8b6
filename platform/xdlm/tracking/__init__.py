"""MLflow tracking for xdlm runs: logging that never kills a run, run lifecycle, a local server.

- ``RunLogger`` (logger.py): rank 0's non-blocking, outage-proof logger for one run.
- ``resolve_tracking_uri`` / ``ensure_experiment`` / ``start_run`` / ``close_stale_runs``
  (runs.py): where runs live, their experiment (one artifact root, safe when processes race),
  creating, resuming and nesting runs, cleaning up after killed drivers.
- ``LocalMlflowServer`` (server.py): ``mlflow server`` on loopback for laptops and tests.
- ``flatten_params`` (flatten.py): nested configs -> MLflow's flat string params.
"""

from xdlm.tracking.flatten import flatten_params
from xdlm.tracking.logger import RunLogger
from xdlm.tracking.runs import (
    close_stale_runs,
    ensure_experiment,
    get_or_create_experiment,
    resolve_tracking_uri,
    start_run,
)
from xdlm.tracking.server import LocalMlflowServer

__all__ = [
    "LocalMlflowServer",
    "RunLogger",
    "close_stale_runs",
    "ensure_experiment",
    "flatten_params",
    "get_or_create_experiment",
    "resolve_tracking_uri",
    "start_run",
]
