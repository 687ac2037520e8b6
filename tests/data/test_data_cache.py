"""The token cache: hits without re-tokenizing, atomic writes, metadata sidecar."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xdlm.data import DataConfig, TextSource, build_token_blocks
from xdlm.data.cache import TokenArrayWriter, atomic_write_text, cache_entry, token_dtype
from xdlm.data.tokenizers import MASK_TOKEN, TextTokenizer, train_byte_level_bpe


class ListSource(TextSource):
    """An in-memory source that counts how often its documents are read."""

    def __init__(self, docs: list[str], fail_after: int | None = None) -> None:
        self.name = "list"
        self.docs = docs
        self.fail_after = fail_after
        self.reads = 0

    def documents(self, split: str) -> Iterator[str]:
        self.reads += 1
        for i, doc in enumerate(self.docs):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("simulated failure mid-write")
            yield doc

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "list", "docs": self.docs}


DOCS = [f"def function_{i}(x):\n    return x * {i} + {i * i}\n" for i in range(400)]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    backend = train_byte_level_bpe(DOCS, vocab_size=300)
    return TextTokenizer(
        backend,
        name="bpe",
        bos_token="[BOS]",
        eos_token="[EOS]",
        mask_token=MASK_TOKEN,
        origin="trained",
    )


class CountingTokenizer:
    """Wraps a tokenizer and counts encode_batch calls (to prove a cache hit tokenizes nothing)."""

    def __init__(self, inner: TextTokenizer) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.calls += 1
        return self.inner.encode_batch(texts)


def tokens_files(cache_dir: Path) -> list[str]:
    root = cache_dir / "tokens"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_second_build_is_a_cache_hit_without_tokenizing(
    tokenizer: TextTokenizer, cache_dir: Path
) -> None:
    cfg = DataConfig(cache_dir=str(cache_dir), seq_len=32, tokenize_batch_docs=50)
    counting = CountingTokenizer(tokenizer)
    source = ListSource(DOCS)
    first = build_token_blocks(cfg, source, "train", counting, None)  # type: ignore[arg-type]
    assert not first.from_cache
    assert counting.calls == 8  # 400 docs / 50 per call
    assert source.reads == 1

    second = build_token_blocks(cfg, ListSource(DOCS), "train", counting, None)  # type: ignore[arg-type]
    assert second.from_cache
    assert counting.calls == 8  # nothing re-tokenized
    np.testing.assert_array_equal(np.asarray(first.blocks), np.asarray(second.blocks))
    assert isinstance(second.blocks, np.memmap)
    assert second.blocks.dtype == np.uint16
    assert not second.blocks.flags.writeable

    # The key covers what matters: another seq_len, split or byte cap is another entry.
    other = build_token_blocks(
        DataConfig(cache_dir=str(cache_dir), seq_len=16),
        ListSource(DOCS),
        "train",
        counting,
        None,  # type: ignore[arg-type]
    )
    assert not other.from_cache and other.seq_len == 16
    capped = build_token_blocks(cfg, ListSource(DOCS), "train", counting, 1000)  # type: ignore[arg-type]
    assert not capped.from_cache and capped.num_blocks < first.num_blocks


def test_cached_content_is_the_packed_token_stream(
    tokenizer: TextTokenizer, cache_dir: Path
) -> None:
    cfg = DataConfig(cache_dir=str(cache_dir), seq_len=24)
    part = build_token_blocks(cfg, ListSource(DOCS), "train", tokenizer, None)
    stream: list[int] = []
    for ids in tokenizer.encode_batch(DOCS):
        stream += [tokenizer.bos_id, *ids, tokenizer.eos_id]
    n = len(stream) // 24
    np.testing.assert_array_equal(
        np.asarray(part.blocks), np.array(stream[: n * 24]).reshape(n, 24)
    )
    meta = json.loads(part.path.with_suffix(".json").read_text())
    assert meta["num_blocks"] == n and meta["seq_len"] == 24 and meta["dtype"] == "<u2"
    assert meta["num_documents"] == len(DOCS)
    assert meta["dropped_tail_tokens"] == len(stream) - n * 24
    assert meta["tokenizer"] == tokenizer.fingerprint
    assert meta["bos_id"] == tokenizer.bos_id and meta["eos_id"] == tokenizer.eos_id


def test_failure_mid_write_leaves_no_entry(tokenizer: TextTokenizer, cache_dir: Path) -> None:
    cfg = DataConfig(cache_dir=str(cache_dir), seq_len=16, tokenize_batch_docs=20)
    failing = ListSource(DOCS, fail_after=250)  # after several batches were written
    with pytest.raises(RuntimeError, match="simulated failure"):
        build_token_blocks(cfg, failing, "train", tokenizer, None)
    leftovers = [n for n in tokens_files(cache_dir) if not n.endswith(".lock")]
    assert leftovers == []  # neither the array, the sidecar nor a temp file

    # The same key (same fingerprint) then builds normally.
    part = build_token_blocks(cfg, ListSource(DOCS), "train", tokenizer, None)
    assert not part.from_cache and part.num_blocks > 0


def test_writer_without_commit_publishes_nothing(cache_dir: Path) -> None:
    entry = cache_entry(cache_dir, "x", {"k": 1})
    with TokenArrayWriter(entry, 4, np.dtype("<u2")) as writer:
        writer.write_blocks(np.ones((3, 4), dtype=np.int64))
    assert entry.read() is None
    assert tokens_files(cache_dir) == []
    with TokenArrayWriter(entry, 4, np.dtype("<u2")) as writer:
        writer.write_blocks(np.ones((3, 4), dtype=np.int64))
        writer.commit({"note": "ok"})
    blocks, meta = entry.read()  # type: ignore[misc]
    assert blocks.shape == (3, 4) and meta["note"] == "ok"


def test_killed_writer_process_leaves_no_visible_entry(cache_dir: Path) -> None:
    """SIGKILL in the middle of writing (no Python cleanup at all): readers see no entry."""
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from xdlm.data.cache import TokenArrayWriter, cache_entry
        entry = cache_entry({str(cache_dir)!r}, "killed", {{"k": 2}})
        with TokenArrayWriter(entry, 8, np.dtype("<u2")) as writer:
            writer.write_blocks(np.zeros((1000, 8), dtype=np.int64))
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    entry = cache_entry(cache_dir, "killed", {"k": 2})
    assert not entry.tokens_path.exists() and not entry.meta_path.exists()
    assert entry.read() is None
    # Only a temp file may remain, and it is not mistaken for an entry.
    assert all(name.endswith(".tmp") for name in tokens_files(cache_dir))


def test_sidecar_without_complete_array_is_a_miss(cache_dir: Path) -> None:
    entry = cache_entry(cache_dir, "torn", {"k": 3})
    with TokenArrayWriter(entry, 4, np.dtype("<u2")) as writer:
        writer.write_blocks(np.ones((5, 4), dtype=np.int64))
        writer.commit({})
    assert entry.exists()
    entry.tokens_path.write_bytes(b"\x00" * 6)  # truncated array
    assert entry.read() is None


def test_atomic_write_text_keeps_old_content_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "t.json"
    atomic_write_text(target, "old")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_token_dtype() -> None:
    assert token_dtype(4096) == np.uint16
    assert token_dtype(2**16) == np.uint16
    assert token_dtype(50258) == np.uint16
    assert token_dtype(2**16 + 1) == np.uint32
