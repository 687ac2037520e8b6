"""What ``build_datasets`` returns: packed splits (``TokenBlocks``) and the ``Datasets`` facade a
training worker uses (tokenizer, batch iterators, unigram baseline, summary).

Text corpora fill it from the token cache (``xdlm.data.build``); the synthetic Markov source
(``xdlm.data.markov``) subclasses it with an endless generated training stream and the exact law.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xdlm.data.config import DataConfig
from xdlm.data.loader import EvalBatches, TrainBatches, UnigramBaseline, unigram_baseline
from xdlm.data.tokenizers import TextTokenizer


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

    @property
    def exact_law(self) -> Any:
        """The data's exact law when it is known (a synthetic source: ``MarkovChain``), else None."""
        return None

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
