from __future__ import annotations

import pytest

from xdlm.config import load_job


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xdlm-cache"))


@pytest.fixture
def small_job(tmp_path, data_cache):
    """A job that trains in seconds: a 2-layer DiT on 300 kB of pydoc English, 2 workers."""

    def make(*overrides: str, name: str = "t"):
        return load_job(None, [
            f"name={name}",
            "data.source=stdlib-docs", "data.max_train_bytes=300000", "data.max_eval_bytes=40000",
            "data.bpe_train_bytes=300000", "data.vocab_size=512", "data.seq_len=32",
            f"data.cache_dir={data_cache}", "data.eval_sets=[]",
            "model.size=custom", "model.n_layers=2", "model.hidden=64", "model.n_heads=2",
            "model.dropout=0.1", "model.max_seq_len=64", "model.cond_dim=32",
            "optim.warmup_steps=2", "optim.ema=0.9", "optim.lr=3e-3",
            "train.steps=6", "train.global_batch=8", "train.micro_batch=2", "train.log_every=1",
            "train.eval_every=3", "train.checkpoint_every=2", "train.eval_batches=2",
            "cluster.num_workers=2", "cluster.cpus_per_worker=0.5",
            f"cluster.storage_path={tmp_path / 'runs'}", "cluster.max_failures=0",
            "eval.sample_steps=[2]", "eval.num_samples=2", "tracking.log_samples=1",
            *overrides,
        ])

    return make


def without_clock(counters: dict) -> dict:
    """A checkpoint's counters but the wall clock (``wall_time_s``), which no two runs share."""
    return {key: value for key, value in counters.items() if key != "wall_time_s"}
