"""Packing: documents -> one token stream ``BOS doc EOS BOS doc EOS ...`` -> fixed-length blocks.

Why pack: diffusion LMs train on fixed-length sequences; packing wastes no compute on padding and
lets the model see document boundaries (BOS/EOS) inside a block. The stream is cut every
``seq_len`` tokens regardless of document boundaries; the final partial block is dropped (its
token count is reported as ``dropped_tail_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class BlockPacker:
    """Streaming packer: feed documents' ids, get complete ``[n, seq_len]`` blocks back.

    Keeps at most ``seq_len - 1`` tokens between calls (the start of the next block), so memory
    stays flat however large the corpus.
    """

    def __init__(self, seq_len: int, bos_id: int, eos_id: int, dtype: np.dtype = np.int64) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.seq_len = seq_len
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.dtype = np.dtype(dtype)
        self._carry = np.empty(0, dtype=self.dtype)
        self.num_documents = 0
        self.num_stream_tokens = 0  # tokens entering the stream, BOS/EOS included

    def add(self, documents: Sequence[Sequence[int]]) -> np.ndarray:
        """Append ``documents`` (lists of ids without BOS/EOS) and return the blocks completed,
        shape ``[n, seq_len]`` (``n`` may be 0)."""
        lengths = [len(doc) + 2 for doc in documents]
        total = sum(lengths)
        stream = np.empty(len(self._carry) + total, dtype=self.dtype)
        stream[: len(self._carry)] = self._carry
        pos = len(self._carry)
        for doc, length in zip(documents, lengths, strict=True):
            stream[pos] = self.bos_id
            stream[pos + 1 : pos + length - 1] = doc
            stream[pos + length - 1] = self.eos_id
            pos += length
        self.num_documents += len(documents)
        self.num_stream_tokens += total
        num_blocks = len(stream) // self.seq_len
        cut = num_blocks * self.seq_len
        self._carry = stream[cut:].copy()
        return stream[:cut].reshape(num_blocks, self.seq_len)

    @property
    def dropped_tail_tokens(self) -> int:
        """Tokens waiting for a block that will be dropped if no more documents come."""
        return len(self._carry)


def pack_documents(
    documents: Iterable[Sequence[int]],
    seq_len: int,
    bos_id: int,
    eos_id: int,
    dtype: np.dtype = np.int64,
) -> np.ndarray:
    """All complete blocks of ``documents`` packed, shape ``[num_blocks, seq_len]``."""
    return BlockPacker(seq_len, bos_id, eos_id, dtype).add(list(documents))
