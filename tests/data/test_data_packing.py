"""Packing: BOS doc EOS concatenated, cut into seq_len blocks, tail dropped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdlm.data import BlockPacker, pack_documents

BOS, EOS = 0, 1


def stream_of(docs: list[list[int]]) -> list[int]:
    out: list[int] = []
    for doc in docs:
        out += [BOS, *doc, EOS]
    return out


def test_small_example_exact_blocks() -> None:
    docs = [[5, 6, 7], [8], [9, 10, 11, 12]]
    # stream: 0 5 6 7 1 | 0 8 1 0 9 | 10 11 12 1 -> 3 blocks of 5 and a tail of 4
    blocks = pack_documents(docs, seq_len=5, bos_id=BOS, eos_id=EOS)
    assert blocks.shape == (2, 5)
    assert blocks.tolist() == [[0, 5, 6, 7, 1], [0, 8, 1, 0, 9]]


def test_bos_eos_positions_follow_document_lengths() -> None:
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(2, 100, size=int(n))) for n in rng.integers(0, 40, size=60)]
    seq_len = 16
    blocks = pack_documents(docs, seq_len, BOS, EOS)
    flat = blocks.reshape(-1)
    expected_bos, expected_eos, pos = [], [], 0
    for doc in docs:
        expected_bos.append(pos)
        expected_eos.append(pos + len(doc) + 1)
        pos += len(doc) + 2
    kept = len(flat)
    assert np.flatnonzero(flat == BOS).tolist() == [p for p in expected_bos if p < kept]
    assert np.flatnonzero(flat == EOS).tolist() == [p for p in expected_eos if p < kept]


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(2, 500), max_size=30), max_size=40),
    seq_len=st.integers(2, 33),
    split_at=st.integers(0, 40),
)
def test_streaming_equals_concatenation_cut(
    docs: list[list[int]], seq_len: int, split_at: int
) -> None:
    stream = stream_of(docs)
    n_blocks = len(stream) // seq_len
    expected = np.array(stream[: n_blocks * seq_len], dtype=np.int64).reshape(n_blocks, seq_len)

    packer = BlockPacker(seq_len, BOS, EOS, np.uint16)
    parts = [packer.add(docs[:split_at]), packer.add(docs[split_at:])]
    got = np.concatenate(parts, axis=0)
    assert got.dtype == np.uint16
    assert got.shape == (n_blocks, seq_len)
    np.testing.assert_array_equal(got, expected)
    assert packer.dropped_tail_tokens == len(stream) - n_blocks * seq_len
    assert packer.num_documents == len(docs)
    assert packer.num_stream_tokens == len(stream)


def test_seq_len_must_be_at_least_two() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        BlockPacker(1, BOS, EOS)
