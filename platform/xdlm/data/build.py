"""The entry point: ``build_datasets(cfg) -> Datasets``.

It resolves the source, gets the tokenizer (training and caching the BPE if needed), and makes
sure the packed token arrays of the train split, the validation split and every eval set are in
the cache, tokenizing only what is missing. The result holds read-only memory maps plus factories
for the batch iterators, so a Ray Train worker does::

    data = build_datasets(cfg, rank=ctx.get_world_rank(), barrier=torch.distributed.barrier)
    batches = data.train_batches(micro_batch, rank=rank, world_size=world_size)

Concurrency: every cache entry is built under its own file lock, so any number of processes on
one machine may call ``build_datasets`` at once and each entry is tokenized once. With
``barrier`` (e.g. ``torch.distributed.barrier``), rank 0 builds everything first and the other
ranks only read afterwards ("build then read"), which also covers a shared filesystem whose
locks are unreliable. Without a shared ``cache_dir`` each node builds its own identical copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from xdlm.data.cache import TokenArrayWriter, cache_entry, file_lock, token_dtype
from xdlm.data.config import DataConfig
from xdlm.data.loader import EvalBatches, TrainBatches, UnigramBaseline, unigram_baseline
from xdlm.data.packing import BlockPacker
from xdlm.data.sources import TextSource, iter_documents, make_source
from xdlm.data.tokenizers import TextTokenizer, bpe_training_bytes, load_tokenizer

log = logging.getLogger(__name__)

#: Names the packing rule in cache keys; change it when packing changes.
PACKING_RULE = "bos-doc-eos/concat/drop-tail"


@dataclass
class TokenBlocks:
    """One packed split: ``blocks`` is a read-only ``[num_blocks, seq_len]`` array (memmap).

    ``from_cache`` is False when this process tokenized it (a cache miss), True when it was read.
    """

    source: str
    split: str
    blocks: np.ndarray
    meta: dict[str, Any]
    from_cache: bool
    path: Path

    @property
    def num_blocks(self) -> int:
        return int(self.blocks.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.blocks.shape[1])

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.seq_len


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def build_token_blocks(
    cfg: DataConfig,
    source: TextSource,
    split: str,
    tokenizer: TextTokenizer,
    max_bytes: int | None,
) -> TokenBlocks:
    """The packed blocks of ``source``/``split``: read from the cache, or tokenized, packed and
    written there atomically (under a file lock) on a miss."""
    entry = cache_entry(
        cfg.resolved_cache_dir(),
        f"{source.name}-{split}",
        {
            "source": source.fingerprint(),
            "split": split,
            "max_bytes": max_bytes,
            "tokenizer": tokenizer.fingerprint,
            "seq_len": cfg.seq_len,
            "packing": PACKING_RULE,
        },
    )

    def found(hit: tuple[np.ndarray, dict[str, Any]], from_cache: bool) -> TokenBlocks:
        blocks, meta = hit
        return TokenBlocks(source.name, split, blocks, meta, from_cache, entry.tokens_path)

    if (hit := entry.read()) is not None:
        return found(hit, True)
    with file_lock(entry.meta_path, cfg.lock_timeout_s):
        if (hit := entry.read()) is not None:  # built by another process while we waited
            return found(hit, True)
        started = time.perf_counter()
        dtype = token_dtype(tokenizer.vocab_size)
        packer = BlockPacker(cfg.seq_len, tokenizer.bos_id, tokenizer.eos_id, dtype)
        text_bytes = 0
        with TokenArrayWriter(entry, cfg.seq_len, dtype) as writer:
            docs = iter_documents(source, split, max_bytes)
            for texts in _batched(docs, cfg.tokenize_batch_docs):
                text_bytes += sum(len(t.encode("utf-8")) for t in texts)
                writer.write_blocks(packer.add(tokenizer.encode_batch(texts)))
            meta = writer.commit(
                {
                    "source": source.name,
                    "source_fingerprint": source.fingerprint(),
                    "split": split,
                    "max_bytes": max_bytes,
                    "tokenizer": tokenizer.fingerprint,
                    "vocab_size": tokenizer.vocab_size,
                    "bos_id": tokenizer.bos_id,
                    "eos_id": tokenizer.eos_id,
                    "packing": PACKING_RULE,
                    "num_documents": packer.num_documents,
                    "num_text_bytes": text_bytes,
                    "num_stream_tokens": packer.num_stream_tokens,
                    "dropped_tail_tokens": packer.dropped_tail_tokens,
                    "build_seconds": round(time.perf_counter() - started, 3),
                    "created_unix": time.time(),
                }
            )
        log.info(
            "tokenized %s/%s: %d docs, %d bytes -> %d blocks x %d in %.2fs",
            source.name,
            split,
            meta["num_documents"],
            text_bytes,
            meta["num_blocks"],
            cfg.seq_len,
            meta["build_seconds"],
        )
        hit = entry.read()
        if hit is None:  # pragma: no cover - would mean the filesystem lost a committed write
            raise RuntimeError(f"cache entry {entry.meta_path} vanished right after writing")
        return found(hit, False)


@dataclass
class Datasets:
    """Everything a training worker needs from the data layer.

    Attributes:
        config: the validated config it was built from.
        tokenizer: ``vocab_size``, ``bos_id``, ``eos_id``, ``mask_id``, ``encode_batch``, ``decode``.
        train, validation: packed splits of ``config.source``.
        eval_sets: name -> packed ``config.eval_split`` of each ``config.eval_sets`` source.
    """

    config: DataConfig
    tokenizer: TextTokenizer
    train: TokenBlocks
    validation: TokenBlocks
    eval_sets: dict[str, TokenBlocks] = field(default_factory=dict)

    def split(self, name: str) -> TokenBlocks:
        """``train``, ``validation`` or an eval-set name."""
        if name == "train":
            return self.train
        if name == "validation":
            return self.validation
        if name in self.eval_sets:
            return self.eval_sets[name]
        available = ["train", "validation", *self.eval_sets]
        raise ValueError(f"unknown data split {name!r}; available: {', '.join(available)}")

    def train_batches(
        self,
        micro_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
        max_epochs: int | None = None,
    ) -> TrainBatches:
        """Endless shuffled ``LongTensor [micro_batch, seq_len]`` batches of this rank's shard
        (seed defaults to ``config.seed``); checkpoint its ``state_dict()``."""
        return TrainBatches(
            self.train.blocks,
            micro_batch,
            seed=self.config.seed if seed is None else seed,
            rank=rank,
            world_size=world_size,
            max_epochs=max_epochs,
        )

    def eval_batches(
        self,
        micro_batch: int,
        *,
        name: str = "validation",
        rank: int = 0,
        world_size: int = 1,
        max_blocks: int | None = None,
    ) -> EvalBatches:
        """Fixed-order batches of ``name`` (``validation`` or an eval set) for this rank."""
        return EvalBatches(
            self.split(name).blocks,
            micro_batch,
            rank=rank,
            world_size=world_size,
            max_blocks=max_blocks,
        )

    def unigram_baseline(self, name: str = "validation", add_k: float = 0.5) -> UnigramBaseline:
        """A unigram fitted on train, scored on ``name``: the perplexity to beat."""
        return unigram_baseline(
            self.train.blocks, self.split(name).blocks, self.tokenizer.vocab_size, add_k
        )

    @property
    def tokenized_now(self) -> list[str]:
        """``source/split`` labels this call tokenized (empty: everything came from the cache)."""
        parts = [self.train, self.validation, *self.eval_sets.values()]
        return [f"{p.source}/{p.split}" for p in parts if not p.from_cache]

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for logs and tracking (sizes, ids, cache hits)."""

        def describe(part: TokenBlocks) -> dict[str, Any]:
            return {
                "source": part.source,
                "split": part.split,
                "num_blocks": part.num_blocks,
                "num_tokens": part.num_tokens,
                "num_documents": part.meta.get("num_documents"),
                "num_text_bytes": part.meta.get("num_text_bytes"),
                "from_cache": part.from_cache,
                "path": str(part.path),
            }

        return {
            "tokenizer": self.tokenizer.fingerprint,
            "tokenizer_origin": self.tokenizer.origin,
            "vocab_size": self.tokenizer.vocab_size,
            "bos_id": self.tokenizer.bos_id,
            "eos_id": self.tokenizer.eos_id,
            "mask_id": self.tokenizer.mask_id,
            "seq_len": self.config.seq_len,
            "train": describe(self.train),
            "validation": describe(self.validation),
            "eval_sets": {n: describe(p) for n, p in self.eval_sets.items()},
        }


def build_datasets(
    cfg: DataConfig,
    *,
    rank: int = 0,
    barrier: Callable[[], Any] | None = None,
) -> Datasets:
    """Validate ``cfg``, then build (or read from the cache) tokenizer, train, validation and
    eval sets.

    Args:
        cfg: the data config.
        rank: this process's global rank (only used with ``barrier``).
        barrier: a collective barrier (e.g. ``torch.distributed.barrier``). When given, rank 0
            builds first and every rank then reads; every rank must call this function.

    Raises:
        ValueError: invalid config, or a split too small to give one block of ``seq_len``.
    """
    cfg.validate()
    if barrier is None:
        return _build(cfg)
    if rank == 0:
        data = _build(cfg)
        barrier()
        return data
    barrier()
    return _build(cfg)


def _build(cfg: DataConfig) -> Datasets:
    started = time.perf_counter()
    source = make_source(cfg.source, cfg)
    tokenizer = load_tokenizer(
        cfg,
        lambda: iter_documents(source, "train", bpe_training_bytes(cfg)),
        source.fingerprint(),
    )
    train = build_token_blocks(cfg, source, "train", tokenizer, cfg.max_train_bytes)
    validation = build_token_blocks(
        cfg, source, cfg.validation_split, tokenizer, cfg.max_eval_bytes
    )
    eval_sets = {
        name: build_token_blocks(
            cfg, make_source(name, cfg), cfg.eval_split, tokenizer, cfg.max_eval_bytes
        )
        for name in cfg.eval_sets
    }
    for part in (train, validation, *eval_sets.values()):
        if part.num_blocks == 0:
            raise ValueError(
                f"{part.source}/{part.split} has no complete block of seq_len={cfg.seq_len} "
                f"({part.meta.get('num_stream_tokens', 0)} tokens): add text, raise the byte caps "
                "or lower seq_len"
            )
    data = Datasets(cfg, tokenizer, train, validation, eval_sets)
    log.info(
        "data ready in %.2fs (tokenized now: %s)",
        time.perf_counter() - started,
        ", ".join(data.tokenized_now) or "nothing",
    )
    return data
