"""URLs into the MLflow UI. Every link the dashboard prints goes through these, so a change of
MLflow's URL scheme is one edit here.

MLflow 3 opens an experiment in its GenAI layout (traces, judges) unless told otherwise; the
``workflowType=machine_learning`` query (inside the hash route) opens the training layout: run
table, metric charts, system metrics.
"""

from __future__ import annotations

from urllib.parse import quote

from xdlm.tracking.runs import TRAINING_LAYOUT_QUERY

TRAINING_LAYOUT = TRAINING_LAYOUT_QUERY


def experiment_url(mlflow_url: str, experiment_id: str) -> str:
    """The experiment's run table, in the training layout."""
    return f"{mlflow_url.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs?{TRAINING_LAYOUT}"


def run_url(mlflow_url: str, experiment_id: str, run_id: str, tab: str | None = None) -> str:
    """One run's page (``tab``: ``model-metrics``, ``system-metrics``, ``artifacts``, ...)."""
    base = f"{mlflow_url.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}"
    return f"{base}/{quote(tab)}?{TRAINING_LAYOUT}" if tab else f"{base}?{TRAINING_LAYOUT}"


def compare_url(mlflow_url: str, experiment_ids: list[str], run_ids: list[str]) -> str:
    """MLflow's own side-by-side comparison of runs (params, metrics)."""
    runs = ",".join(f"%22{r}%22" for r in run_ids)
    exps = ",".join(f"%22{e}%22" for e in sorted(set(experiment_ids)))
    return f"{mlflow_url.rstrip('/')}/#/compare-runs?runs=[{runs}]&experiments=[{exps}]&{TRAINING_LAYOUT}"
