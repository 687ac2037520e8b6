"""A store to review: one real sweep over k in {0, 1} of the tiny sweep job (two short runs of
different k, each a Ray Train run nested under the sweep's MLflow run), and a denoising
trajectory recorded from one of them by ``xdlm sample --trajectory``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.tune.conftest import tiny_job_overrides


@dataclass
class ReviewStore:
    tracking_uri: str
    sweep_name: str
    parent_run_id: str
    runs: dict[str, str]
    """k (as the runs' ``xdlm.k`` tag writes it) -> MLflow run id."""
    trajectory_run_id: str
    trajectory_artifact: str
    seconds: float


@pytest.fixture(scope="session")
def review_store(ray_session, tmp_path_factory) -> ReviewStore:
    from mlflow import MlflowClient

    from xdlm.checkpoint import RUN_RECORD
    from xdlm.cli import main
    from xdlm.tune.runner import run_sweep

    started = time.monotonic()
    root = tmp_path_factory.mktemp("xdlm-review")
    sweep_file = root / "review.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "review",
        "base": {"overrides": [*tiny_job_overrides(root / "runs", str(root / "cache")), "eval.sample_steps=[4]"]},
        "space": {"diffusion.k": {"kind": "grid", "values": [0.0, 1.0]}},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.8, "trainable_cpus": 0.2},
    }, sort_keys=False))
    outcome = run_sweep(sweep_file)
    assert sorted(outcome.statuses.values()) == ["completed", "completed"], outcome.statuses
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    runs = {run.data.tags["xdlm.k"]: run.info.run_id for run in children}
    assert len(runs) == 2, runs
    # a trajectory of the k = 1 run (uniform noise: tokens can change, not only unmask)
    run_id = runs[max(runs, key=float)]
    target = next(d for d in sorted((Path(outcome.directory) / "trials").iterdir())
                  if (d / RUN_RECORD).is_file() and run_id in (d / RUN_RECORD).read_text())
    assert main(["sample", str(target), "--steps", "8", "--num-samples", "2", "--trajectory", "2"]) == 0
    artifact = client.get_run(run_id).data.tags["xdlm.trajectory"]
    return ReviewStore(outcome.tracking_uri, outcome.name, outcome.parent_run_id, runs, run_id, artifact,
                       time.monotonic() - started)
