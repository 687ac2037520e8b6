"""A tiny sweep: trials of a 2-layer, 64-wide DiT on 300 kB of pydoc English (seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def sweep_data_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xdlm-sweep-cache"))


def tiny_job_overrides(storage: Path, cache: str) -> list[str]:
    return [
        "data.source=stdlib-docs", "data.max_train_bytes=300000", "data.max_eval_bytes=40000",
        "data.bpe_train_bytes=300000", "data.vocab_size=512", "data.seq_len=32",
        f"data.cache_dir={cache}", "data.eval_sets=[]",
        "model.size=custom", "model.n_layers=2", "model.hidden=64", "model.n_heads=2",
        "model.dropout=0.0", "model.max_seq_len=64", "model.cond_dim=32",
        "optim.warmup_steps=1", "optim.ema=0.0", "optim.lr=3e-3",
        "train.steps=6", "train.global_batch=8", "train.micro_batch=8", "train.log_every=1",
        "train.eval_every=2", "train.checkpoint_every=2", "train.eval_batches=2",
        "cluster.max_failures=0", f"cluster.storage_path={storage}",
        "eval.sample_steps=[2]", "eval.num_samples=2", "tracking.log_samples=0",
    ]


@pytest.fixture
def write_sweep(tmp_path, sweep_data_cache):
    """Write a sweep YAML for the tiny job; ``spec`` entries override the defaults below."""

    def write(name: str = "s", base_overrides: tuple[str, ...] = (), **spec) -> Path:
        body = {
            "name": name,
            "base": {"overrides": [*tiny_job_overrides(tmp_path / "runs", sweep_data_cache), *base_overrides]},
            "space": {"diffusion.k": {"kind": "grid", "values": [0.0, 1.0]}},
            "resources": {"num_workers": 1, "cpus_per_worker": 0.8, "trainable_cpus": 0.2},
        }
        body.update(spec)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    return write
