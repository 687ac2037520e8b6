"""build_datasets end to end on the offline stdlib corpus."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from xdlm.data import DataConfig, Datasets, build_datasets


def test_build_then_cache_hit(small_config: Callable[..., DataConfig], cache_dir: Path) -> None:
    cfg = small_config()
    first = build_datasets(cfg)
    assert first.tokenized_now == ["stdlib/train", "stdlib/validation", "stdlib-docs/all"]
    assert first.tokenizer.origin == "trained"

    second = build_datasets(cfg)
    assert second.tokenized_now == []
    assert second.tokenizer.origin == "cache"
    assert second.tokenizer.fingerprint == first.tokenizer.fingerprint
    for name in ("train", "validation", "stdlib-docs"):
        np.testing.assert_array_equal(
            np.asarray(first.split(name).blocks), second.split(name).blocks
        )

    tok = second.tokenizer
    assert tok.mask_id < tok.vocab_size and tok.mask_id not in (tok.bos_id, tok.eos_id)
    train = second.train.blocks
    assert train.dtype == np.uint16 and train.shape[1] == 64
    assert int(train.max()) < tok.vocab_size
    assert not np.any(np.asarray(train) == tok.mask_id)  # MASK never occurs in data
    assert train[0, 0] == tok.bos_id  # the stream starts with a document
    bos = int((np.asarray(train) == tok.bos_id).sum())
    eos = int((np.asarray(train) == tok.eos_id).sum())
    assert abs(bos - eos) <= 1 and bos >= 1
    text = tok.decode(train[:4].reshape(-1))
    assert text.startswith("[BOS]")
    summary = second.summary()
    assert summary["train"]["from_cache"] and summary["mask_id"] == tok.mask_id


def test_loaders_and_baseline_from_datasets(small_config: Callable[..., DataConfig]) -> None:
    data = build_datasets(small_config(seed=7))
    batches = data.train_batches(micro_batch=8, rank=1, world_size=2)
    batch = next(batches)
    assert batch.shape == (8, 64) and batch.dtype == torch.long
    assert batches.seed == 7
    state = batches.state_dict()
    expected = [next(batches) for _ in range(3)]
    resumed = data.train_batches(micro_batch=8, rank=1, world_size=2)
    resumed.load_state_dict(state)
    for want in expected:
        torch.testing.assert_close(next(resumed), want)

    evals = data.eval_batches(16, name="stdlib-docs", max_blocks=40)
    assert sum(b.shape[0] for b in evals) == 40
    with pytest.raises(
        ValueError, match="unknown data split 'nope'; available: train, validation, stdlib-docs"
    ):
        data.split("nope")

    baseline = data.unigram_baseline("validation")
    vocab = data.tokenizer.vocab_size
    assert 1.0 < baseline.perplexity < vocab
    assert baseline.entropy_nats <= math.log(vocab) + 1e-9
    shifted = data.unigram_baseline("stdlib-docs")
    assert shifted.perplexity > baseline.perplexity  # English prose is off the code distribution


def test_concurrent_builders_tokenize_once(small_config: Callable[..., DataConfig]) -> None:
    cfg = small_config()
    results: list[Datasets] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(build_datasets(cfg))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 3
    assert sum(r.tokenizer.origin == "trained" for r in results) == 1
    assert sum(not r.train.from_cache for r in results) == 1
    fingerprints = {r.tokenizer.fingerprint for r in results}
    assert len(fingerprints) == 1


def test_barrier_build_then_read(small_config: Callable[..., DataConfig]) -> None:
    cfg = small_config()
    events: list[str] = []
    rank0 = build_datasets(cfg, rank=0, barrier=lambda: events.append("barrier"))
    assert events == ["barrier"] and rank0.tokenized_now  # rank 0 built before the barrier
    rank1 = build_datasets(cfg, rank=1, barrier=lambda: events.append("barrier"))
    assert rank1.tokenized_now == []  # other ranks only read


def test_too_little_text_is_a_clear_error(small_config: Callable[..., DataConfig]) -> None:
    with pytest.raises(ValueError, match="no complete block of seq_len=100000"):
        build_datasets(small_config(seq_len=100_000))


@pytest.mark.slow
def test_default_config_builds_fast_and_caches(tmp_path: Path) -> None:
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    started = time.perf_counter()
    cold = build_datasets(cfg)
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    warm = build_datasets(cfg)
    warm_s = time.perf_counter() - started
    assert cold.tokenized_now and warm.tokenized_now == []
    assert cold_s < 60 and warm_s < 2
    assert warm.tokenizer.vocab_size == 4096 and warm.train.seq_len == 128
    assert warm.train.num_tokens > 1_000_000
    assert set(warm.eval_sets) == {"stdlib-test", "stdlib-docs"}
