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
from itertools import islice
from typing import Any

import numpy as np

from xdlm.data.cache import TokenArrayWriter, cache_entry, file_lock, token_dtype
from xdlm.data.config import DataConfig
from xdlm.data.datasets import Datasets, TokenBlocks
from xdlm.data.markov import build_markov_datasets
from xdlm.data.packing import BlockPacker
from xdlm.data.sources import TextSource, iter_documents, make_source
from xdlm.data.synthetic_sources import MarkovSource
from xdlm.data.tokenizers import TextTokenizer, bpe_training_bytes, load_tokenizer

log = logging.getLogger(__name__)

#: Names the packing rule in cache keys; change it when packing changes.
PACKING_RULE = "bos-doc-eos/concat/drop-tail"


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
    if isinstance(source, MarkovSource):  # generated token ids: nothing to tokenize or cache
        return build_markov_datasets(cfg)
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
