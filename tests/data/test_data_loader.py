"""Batch iterators (order, sharding, resume) and the unigram baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xdlm.data import (
    EvalBatches,
    TrainBatches,
    unigram_baseline,
    unigram_distribution,
    unigram_entropy,
)


def numbered_blocks(num_blocks: int, seq_len: int = 4) -> np.ndarray:
    """Block i is filled with the value i, so a batch tells which blocks it holds."""
    return np.repeat(np.arange(num_blocks, dtype=np.uint16)[:, None], seq_len, axis=1)


def block_ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0].tolist()


def test_batches_are_long_tensors_of_the_right_shape() -> None:
    it = TrainBatches(numbered_blocks(40, seq_len=7), micro_batch=6, seed=3)
    batch = next(it)
    assert batch.dtype == torch.long and batch.shape == (6, 7)
    assert it.batches_per_epoch == 40 // 6


def test_order_is_deterministic_and_changes_with_epoch_and_seed() -> None:
    blocks = numbered_blocks(64)
    a = TrainBatches(blocks, 8, seed=1)
    b = TrainBatches(blocks, 8, seed=1)
    first_a = [block_ids(next(a)) for _ in range(16)]  # two epochs
    first_b = [block_ids(next(b)) for _ in range(16)]
    assert first_a == first_b
    epoch0 = sum(first_a[:8], [])
    epoch1 = sum(first_a[8:], [])
    assert sorted(epoch0) == sorted(epoch1) == list(range(64))  # each epoch visits every block once
    assert epoch0 != epoch1
    c = TrainBatches(blocks, 8, seed=2)
    assert sum((block_ids(next(c)) for _ in range(8)), []) != epoch0


@pytest.mark.parametrize(("num_blocks", "world_size"), [(60, 4), (61, 4), (7, 3), (12, 1)])
def test_shards_are_disjoint_equal_and_cover(num_blocks: int, world_size: int) -> None:
    blocks = numbered_blocks(num_blocks)
    for epoch in (0, 1):
        shards = [
            TrainBatches(blocks, 1, seed=5, rank=r, world_size=world_size).epoch_order(epoch)
            for r in range(world_size)
        ]
        sizes = {len(s) for s in shards}
        assert sizes == {num_blocks // world_size}
        union = np.concatenate(shards)
        assert len(set(union.tolist())) == len(union)  # disjoint
        assert len(union) == num_blocks - num_blocks % world_size
        if num_blocks % world_size == 0:
            assert sorted(union.tolist()) == list(range(num_blocks))  # covering


def test_iterating_a_shard_yields_exactly_its_blocks() -> None:
    blocks = numbered_blocks(48)
    seen = []
    for rank in range(3):
        it = TrainBatches(blocks, 4, seed=9, rank=rank, world_size=3)
        got = sum((block_ids(next(it)) for _ in range(it.batches_per_epoch)), [])
        assert got == it.epoch_order(0).tolist()
        seen += got
    assert sorted(seen) == list(range(48))


@pytest.mark.parametrize("stop_after", [0, 1, 5, 7, 12, 23])
def test_resume_reproduces_the_following_batches(stop_after: int) -> None:
    blocks = numbered_blocks(30, seq_len=3)
    uninterrupted = TrainBatches(blocks, 4, seed=11, rank=1, world_size=2)
    reference = [next(uninterrupted) for _ in range(stop_after + 10)]

    first = TrainBatches(blocks, 4, seed=11, rank=1, world_size=2)
    for _ in range(stop_after):
        next(first)
    state = first.state_dict()
    assert state["epoch"] * first.batches_per_epoch + state["batch_index"] == stop_after

    resumed = TrainBatches(blocks, 4, seed=11, rank=1, world_size=2)
    resumed.load_state_dict(dict(state))
    for expected in reference[stop_after:]:
        torch.testing.assert_close(next(resumed), expected)


def test_state_from_another_stream_is_refused() -> None:
    a = TrainBatches(numbered_blocks(30), 4, seed=1)
    with pytest.raises(ValueError, match="seed"):
        TrainBatches(numbered_blocks(30), 4, seed=2).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="num_blocks"):
        TrainBatches(numbered_blocks(31), 4, seed=1).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="micro_batch 4 -> 5"):
        TrainBatches(numbered_blocks(30), 5, seed=1).load_state_dict(a.state_dict(), strict=True)


def test_elastic_resume_keeps_epoch_and_fraction() -> None:
    blocks = numbered_blocks(48)
    old = TrainBatches(blocks, 4, seed=3, rank=0, world_size=2)  # 6 batches per epoch
    for _ in range(6 + 3):  # epoch 1, half way
        next(old)
    new = TrainBatches(blocks, 4, seed=3, rank=1, world_size=4)  # 3 batches per epoch
    new.load_state_dict(old.state_dict())
    assert (new.epoch, new.batch_index) == (1, 1)
    assert block_ids(next(new)) == new.epoch_order(1)[4:8].tolist()


def test_max_epochs_and_too_few_blocks() -> None:
    it = TrainBatches(numbered_blocks(10), 5, max_epochs=2)
    assert len(list(it)) == 4
    with pytest.raises(ValueError, match="too few"):
        TrainBatches(numbered_blocks(3), 2, world_size=2)


def test_eval_batches_fixed_order_sharded_and_reiterable() -> None:
    blocks = numbered_blocks(23)
    whole = EvalBatches(blocks, 5)
    assert len(whole) == 5
    assert sum((block_ids(b) for b in whole), []) == list(range(23))
    assert [block_ids(b) for b in whole] == [block_ids(b) for b in whole]
    shards = [EvalBatches(blocks, 4, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    ids = [sum((block_ids(b) for b in s), []) for s in shards]
    assert ids == [list(range(0, 11)), list(range(11, 22))]
    assert sum((block_ids(b) for b in EvalBatches(blocks, 4, max_blocks=6)), []) == list(range(6))


def test_unigram_entropy_and_baseline() -> None:
    tokens = np.array([0, 0, 1, 1, 2, 2, 2, 2], dtype=np.uint16)
    probs = unigram_distribution(tokens, vocab_size=4)
    np.testing.assert_allclose(probs, [0.25, 0.25, 0.5, 0.0])
    expected_h = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert unigram_entropy(probs) == pytest.approx(expected_h)

    exact = unigram_baseline(tokens, tokens, vocab_size=4, add_k=0.0)
    assert exact.cross_entropy_nats == pytest.approx(expected_h)
    assert exact.perplexity == pytest.approx(math.exp(expected_h))
    assert exact.num_tokens == 8

    unseen = unigram_baseline(tokens, np.array([3]), vocab_size=4, add_k=0.0)
    assert unseen.perplexity == math.inf
    smoothed = unigram_baseline(tokens, np.array([3]), vocab_size=4, add_k=0.5)
    assert smoothed.perplexity == pytest.approx(1 / (0.5 / 10))
