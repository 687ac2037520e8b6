"""`xdlm train` as a user runs it: a fresh process, its exit status and its MLflow run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
XDLM = [sys.executable, "-m", "xdlm.cli"]


def test_bad_override_exits_2_naming_the_field(tmp_path):
    proc = subprocess.run([*XDLM, "train", str(ROOT / "jobs/quickstart.yaml"), "diffusion.k=3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "diffusion.k: must be in [0, 1]" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created


@pytest.mark.slow
def test_sigterm_ends_the_mlflow_run_killed(tmp_path, data_cache):
    from mlflow.tracking import MlflowClient

    args = [*XDLM, "train", str(ROOT / "jobs/quickstart.yaml"), "name=sigterm",
            "data.source=stdlib-docs", "data.max_train_bytes=300000", "data.bpe_train_bytes=300000",
            "data.vocab_size=512", "data.seq_len=32", f"data.cache_dir={data_cache}", "data.eval_sets=[]",
            "model.size=custom", "model.n_layers=2", "model.hidden=64", "model.n_heads=2",
            "train.steps=100000", "train.log_every=1", "cluster.cpus_per_worker=0.5"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if "step 2/" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("xdlm").experiment_id])
    assert run.info.run_name == "sigterm"
    assert run.info.status == "KILLED"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1
