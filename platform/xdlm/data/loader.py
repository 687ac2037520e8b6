"""Batch iterators over packed blocks, and the unigram baseline.

* ``TrainBatches``: endless, deterministic, resumable. Epoch ``e`` visits the blocks in the
  permutation drawn from ``(seed, e)``; rank ``r`` of ``world_size`` takes the ``r``-th of
  ``world_size`` equal, disjoint, contiguous slices of that permutation (the
  ``num_blocks % world_size`` left over are skipped that epoch, different ones each epoch). Its
  position is ``(epoch, batch_index)``: ``state_dict()`` / ``load_state_dict()`` carry it into a
  checkpoint so a resumed run yields exactly the batches the uninterrupted one would have
  (given the same layout; after an elastic restart it keeps the epoch and its fraction).
* ``EvalBatches``: fixed order, no shuffle, re-iterable, sharded the same way (each rank gets the
  same number of blocks so collective ops stay in step); the last batch may be shorter.
* ``unigram_baseline``: the perplexity of the best context-free model, the bar a trained model
  must clear.

Batches are ``torch.LongTensor`` of shape ``[micro_batch, seq_len]``, read from the memory-mapped
cache (no copy of the corpus in RAM).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def _check_shard(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


class TrainBatches:
    """Shuffled, sharded, resumable iterator of ``LongTensor [micro_batch, seq_len]`` batches.

    Args:
        blocks: packed blocks ``[num_blocks, seq_len]`` (a memmap is fine).
        micro_batch: blocks per batch on this rank.
        seed: with the epoch number, determines the order (non-negative).
        rank, world_size: this worker's shard.
        max_epochs: stop after this many epochs (``None``: never stop).
    """

    def __init__(
        self,
        blocks: np.ndarray,
        micro_batch: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_epochs: int | None = None,
    ) -> None:
        _check_shard(rank, world_size)
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.blocks = blocks
        self.micro_batch = micro_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.max_epochs = max_epochs
        self.num_blocks = int(blocks.shape[0])
        self.seq_len = int(blocks.shape[1])
        self.blocks_per_rank = self.num_blocks // world_size
        self.batches_per_epoch = self.blocks_per_rank // micro_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{self.num_blocks} blocks are too few for world_size={world_size} x "
                f"micro_batch={micro_batch}: lower the batch or add training data"
            )
        self.epoch = 0
        self.batch_index = 0  # the next batch to yield within ``epoch``
        self._cached_epoch: int | None = None
        self._cached_order: np.ndarray | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's block indices for ``epoch``, in visiting order, shape ``[blocks_per_rank]``."""
        permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        start = self.rank * self.blocks_per_rank
        return permutation[start : start + self.blocks_per_rank]

    def _order(self) -> np.ndarray:
        if self._cached_epoch != self.epoch:
            self._cached_order = self.epoch_order(self.epoch)
            self._cached_epoch = self.epoch
        assert self._cached_order is not None
        return self._cached_order

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self.max_epochs is not None and self.epoch >= self.max_epochs:
            raise StopIteration
        start = self.batch_index * self.micro_batch
        indices = self._order()[start : start + self.micro_batch]
        batch = torch.from_numpy(np.asarray(self.blocks[indices], dtype=np.int64))
        self.batch_index += 1
        if self.batch_index == self.batches_per_epoch:
            self.epoch += 1
            self.batch_index = 0
        return batch

    @property
    def tokens_per_batch(self) -> int:
        return self.micro_batch * self.seq_len

    def state_dict(self) -> dict[str, Any]:
        """Position and identity of the stream (plain ints: JSON- and checkpoint-friendly)."""
        return {
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "seed": self.seed,
            "num_blocks": self.num_blocks,
            "seq_len": self.seq_len,
            "micro_batch": self.micro_batch,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = False) -> None:
        """Continue from ``state`` (from ``state_dict()``).

        Same data (``seed``, ``num_blocks``, ``seq_len``) is required: ``ValueError`` otherwise.
        Same layout (``micro_batch``, ``rank``, ``world_size``) gives the exact continuation. A
        different layout (an elastic restart) raises when ``strict``; otherwise the position is
        carried over as the same epoch and the same fraction of it, with a warning.
        """
        for name in ("seed", "num_blocks", "seq_len"):
            if int(state[name]) != getattr(self, name):
                raise ValueError(
                    f"loader state has {name}={state[name]} but this loader has "
                    f"{name}={getattr(self, name)}: it belongs to a different data stream"
                )
        epoch, index = int(state["epoch"]), int(state["batch_index"])
        layout = ("micro_batch", "rank", "world_size")
        changed = [n for n in layout if int(state[n]) != getattr(self, n)]
        old_per_epoch = (self.num_blocks // int(state["world_size"])) // int(state["micro_batch"])
        if epoch < 0 or not 0 <= index < max(old_per_epoch, 1):
            raise ValueError(f"loader state position out of range: {state}")
        if not changed:
            self.epoch, self.batch_index = epoch, index
            return
        details = ", ".join(f"{n} {state[n]} -> {getattr(self, n)}" for n in changed)
        if strict:
            raise ValueError(f"loader state has a different layout ({details})")
        self.epoch = epoch
        self.batch_index = min(
            index * self.batches_per_epoch // old_per_epoch, self.batches_per_epoch - 1
        )
        log.warning(
            "data loader resumed with a different layout (%s): continuing at epoch %d, batch %d "
            "of %d (same fraction of the epoch); batches are not identical to an uninterrupted run",
            details,
            self.epoch,
            self.batch_index,
            self.batches_per_epoch,
        )


class EvalBatches:
    """Fixed-order ``LongTensor [<= micro_batch, seq_len]`` batches over this rank's shard.

    ``max_blocks`` keeps only the first blocks of the split (before sharding), to bound eval
    time. Iterating twice yields the same batches.
    """

    def __init__(
        self,
        blocks: np.ndarray,
        micro_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        max_blocks: int | None = None,
    ) -> None:
        _check_shard(rank, world_size)
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        total = (
            int(blocks.shape[0]) if max_blocks is None else min(max_blocks, int(blocks.shape[0]))
        )
        per_rank = total // world_size
        self.blocks = blocks
        self.micro_batch = micro_batch
        self.start = rank * per_rank
        self.num_blocks = per_rank

    def __len__(self) -> int:
        return math.ceil(self.num_blocks / self.micro_batch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for offset in range(0, self.num_blocks, self.micro_batch):
            lo = self.start + offset
            hi = self.start + min(offset + self.micro_batch, self.num_blocks)
            yield torch.from_numpy(np.asarray(self.blocks[lo:hi], dtype=np.int64))


# ----- unigram baseline --------------------------------------------------------------------------


def unigram_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Occurrences of each id in ``tokens`` (any shape), shape ``[vocab_size]`` int64."""
    flat = np.asarray(tokens).reshape(-1)
    return np.bincount(flat, minlength=vocab_size)[:vocab_size].astype(np.int64)


def unigram_distribution(tokens: np.ndarray, vocab_size: int, add_k: float = 0.0) -> np.ndarray:
    """Add-``k`` smoothed unigram probabilities of ``tokens``, shape ``[vocab_size]`` float64."""
    counts = unigram_counts(tokens, vocab_size).astype(np.float64) + add_k
    total = counts.sum()
    if total <= 0:
        raise ValueError("no tokens to estimate a unigram distribution from (and add_k = 0)")
    return counts / total


def unigram_entropy(probs: np.ndarray) -> float:
    """Entropy in nats of a distribution ``[vocab_size]`` (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())


@dataclass(frozen=True)
class UnigramBaseline:
    """A unigram model fitted on one split and scored on another.

    Attributes:
        probs: fitted distribution ``[vocab_size]``.
        entropy_nats: entropy of ``probs`` (the baseline's NLL on its own fitting data).
        cross_entropy_nats: mean NLL per token of the scored split under ``probs``.
        perplexity: ``exp(cross_entropy_nats)``: a model that does not beat this has learned no
            more than token frequencies.
        num_tokens: tokens scored.
    """

    probs: np.ndarray
    entropy_nats: float
    cross_entropy_nats: float
    perplexity: float
    num_tokens: int


def unigram_baseline(
    fit_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int, add_k: float = 0.5
) -> UnigramBaseline:
    """Fit an add-``k`` unigram on ``fit_tokens`` (usually train) and score ``eval_tokens``.

    ``add_k > 0`` keeps every id's probability positive so ids unseen in training have a finite
    cost; 0.5 (Krichevsky-Trofimov) is a standard choice.
    """
    probs = unigram_distribution(fit_tokens, vocab_size, add_k)
    counts = unigram_counts(eval_tokens, vocab_size)
    num_tokens = int(counts.sum())
    if num_tokens == 0:
        raise ValueError("no tokens to score")
    seen = counts > 0
    if np.any(probs[seen] == 0):
        cross_entropy = math.inf
    else:
        cross_entropy = float(-(counts[seen] * np.log(probs[seen])).sum() / num_tokens)
    return UnigramBaseline(
        probs=probs,
        entropy_nats=unigram_entropy(probs),
        cross_entropy_nats=cross_entropy,
        perplexity=math.exp(cross_entropy) if math.isfinite(cross_entropy) else math.inf,
        num_tokens=num_tokens,
    )
