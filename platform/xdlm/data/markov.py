"""The Markov source as the data layer's ``Datasets``: a thin wrapper over
``xdlm.synthetic.markov.MarkovChain``.

- token ids: the V symbols and the mask id V (``SymbolTokenizer``, vocabulary V + 1, no BOS/EOS,
  nothing to train);
- training: an endless stream (``MarkovTrainBatches``), batch b of rank r drawn from the seed
  (markov.seed, data.seed, r, world_size, b), resumable from ``state_dict``;
- held-out: fixed ``validation`` and ``test`` sets of ``markov.validation_sequences`` sequences,
  and a fixed ``train`` sample of the same size (for the unigram baseline);
- ``Datasets.exact_law``: the chain, for exact likelihoods and the oracle.

Everything is a function of the config, so the same config reproduces every sequence bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xdlm.data.config import DataConfig
from xdlm.data.datasets import Datasets, TokenBlocks
from xdlm.errors import UserError
from xdlm.synthetic.markov import MarkovChain, MarkovSpec

log = logging.getLogger(__name__)

SOURCE = "markov"
#: Stream ids mixed into the seeds, one per kind of draw.
_SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}
_TRAIN_STREAM = 3
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def chain_of(cfg: DataConfig) -> MarkovChain:
    """The chain ``cfg.markov`` defines."""
    m = cfg.markov
    return MarkovChain.generate(MarkovSpec(m.num_symbols, m.order, m.concentration, m.sparsity,
                                           m.floor, m.seed))


class SymbolTokenizer:
    """Ids 0..V-1 are the symbols, V is [MASK]; text shows symbols as letters (V <= 26) or
    space-separated numbers, [MASK] as ``_``."""

    name = "symbols"
    origin = "synthetic"
    bos_id = None
    eos_id = None

    def __init__(self, num_symbols: int) -> None:
        self.num_symbols = int(num_symbols)
        self.vocab_size = self.num_symbols + 1
        self.mask_id = self.num_symbols
        self.fingerprint = f"symbols-{self.num_symbols}"
        self._letters = self.num_symbols <= len(_LETTERS)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        shown = [i for i in (int(i) for i in ids) if not (skip_special_tokens and i == self.mask_id)]
        words = ["_" if i == self.mask_id else _LETTERS[i] if self._letters else str(i) for i in shown]
        return ("" if self._letters else " ").join(words)

    def encode(self, text: str) -> list[int]:
        items = list(text.replace(" ", "")) if self._letters else text.split()
        try:
            ids = [self.mask_id if w == "_" else _LETTERS.index(w) if self._letters else int(w) for w in items]
        except ValueError:
            raise UserError(f"--prefix: not a sequence of symbols of this source: {text!r}") from None
        if any(not 0 <= i <= self.mask_id for i in ids):
            raise UserError(f"--prefix: symbols must be in 0..{self.num_symbols - 1}: {text!r}")
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def __repr__(self) -> str:
        return f"SymbolTokenizer(V={self.num_symbols}, mask={self.mask_id})"


class MarkovTrainBatches:
    """Endless ``LongTensor [micro_batch, seq_len]`` batches drawn from the chain; batch b of rank
    r is a function of (markov.seed, data.seed, r, world_size, b) only, so a resumed run draws
    exactly the batches of an uninterrupted one."""

    def __init__(self, chain: MarkovChain, micro_batch: int, seq_len: int, *, seed: int,
                 chain_seed: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        self.chain = chain
        self.micro_batch, self.seq_len = int(micro_batch), int(seq_len)
        self.seed, self.chain_seed = int(seed), int(chain_seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.batch_index = 0

    def __iter__(self) -> MarkovTrainBatches:
        return self

    def __next__(self) -> torch.Tensor:
        rng = np.random.default_rng([self.chain_seed, self.seed, _TRAIN_STREAM, self.rank,
                                     self.world_size, self.batch_index])
        self.batch_index += 1
        return self.chain.sample(self.micro_batch, self.seq_len, rng)

    @property
    def tokens_per_batch(self) -> int:
        return self.micro_batch * self.seq_len

    def state_dict(self) -> dict[str, Any]:
        return {"batch_index": self.batch_index, "seed": self.seed, "chain_seed": self.chain_seed,
                "seq_len": self.seq_len, "micro_batch": self.micro_batch, "rank": self.rank,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any], strict: bool = False) -> None:
        """Continue from ``state``; another stream (seeds, seq_len) is a ``ValueError``; another
        layout continues at the same batch index (with a warning, or ``ValueError`` if strict)."""
        for name in ("seed", "chain_seed", "seq_len"):
            if int(state.get(name, -1)) != getattr(self, name):
                raise ValueError(f"loader state has {name}={state.get(name)} but this loader has "
                                 f"{name}={getattr(self, name)}: it belongs to a different data stream")
        changed = [n for n in ("micro_batch", "rank", "world_size") if int(state[n]) != getattr(self, n)]
        if changed and strict:
            raise ValueError(f"loader state has a different layout ({', '.join(changed)})")
        if changed:
            log.warning("markov stream resumed with a different layout (%s): continuing at batch %d; "
                        "batches differ from an uninterrupted run", ", ".join(changed), state["batch_index"])
        self.batch_index = int(state["batch_index"])


@dataclass
class MarkovDatasets(Datasets):
    """``Datasets`` of the Markov source: generated splits, an endless training stream and the
    exact law (``exact_law``)."""

    chain: MarkovChain | None = None

    @property
    def exact_law(self) -> MarkovChain | None:
        return self.chain

    def train_batches(self, micro_batch: int, *, rank: int = 0, world_size: int = 1,
                      seed: int | None = None, max_epochs: int | None = None) -> MarkovTrainBatches:
        """Endless generated batches (``max_epochs`` does not apply: the stream has no epochs)."""
        return MarkovTrainBatches(self.chain, micro_batch, self.config.seq_len,
                                  seed=self.config.seed if seed is None else seed,
                                  chain_seed=self.config.markov.seed, rank=rank, world_size=world_size)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "markov": self.chain.describe(),
                "block_entropy_per_token": self.chain.block_entropy(self.config.seq_len) / self.config.seq_len}


def held_out(chain: MarkovChain, cfg: DataConfig, split: str) -> TokenBlocks:
    """The fixed ``split`` set: ``markov.validation_sequences`` sequences of ``seq_len``."""
    rng = np.random.default_rng([cfg.markov.seed, _SPLIT_STREAMS[split]])
    blocks = chain.sample(cfg.markov.validation_sequences, cfg.seq_len, rng).numpy()
    meta = {"num_documents": blocks.shape[0], "num_stream_tokens": blocks.size, "generated": True}
    return TokenBlocks(SOURCE, split, blocks, meta, True, Path(f"generated:{SOURCE}/{split}"))


def build_markov_datasets(cfg: DataConfig) -> MarkovDatasets:
    """The ``Datasets`` of ``data.source: markov`` (``cfg`` already validated)."""
    chain = chain_of(cfg)
    split = cfg.validation_split
    return MarkovDatasets(cfg, SymbolTokenizer(chain.num_symbols), held_out(chain, cfg, "train"),
                          held_out(chain, cfg, split), {}, chain)
