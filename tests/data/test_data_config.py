"""DataConfig: defaults, validation messages, OmegaConf compatibility."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from xdlm.data import SOURCES, TOKENIZERS, DataConfig
from xdlm.data.config import default_cache_dir


def test_defaults_are_valid_and_offline() -> None:
    cfg = DataConfig().validate()
    assert cfg.source == "stdlib"
    assert cfg.tokenizer == "bpe"
    assert cfg.vocab_size == 4096
    assert cfg.seq_len == 128
    assert cfg.eval_sets == ["stdlib-test", "stdlib-docs"]
    assert cfg.max_train_bytes is not None and cfg.max_train_bytes <= 16_000_000


def test_cache_dir_default_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDLM_CACHE", str(tmp_path / "c"))
    assert DataConfig().resolved_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("XDLM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "xdlm"
    assert DataConfig(cache_dir=str(tmp_path)).resolved_cache_dir() == tmp_path


def test_unknown_source_lists_available() -> None:
    with pytest.raises(ValueError) as info:
        DataConfig(source="no-such-corpus").validate()
    message = str(info.value)
    assert "DataConfig.source" in message and "no-such-corpus" in message
    for name in ("stdlib", "stdlib-test", "stdlib-docs", "openwebtext", "lm1b", "parquet"):
        assert name in message
    assert set(SOURCES.available()) >= {
        "openwebtext",
        "lm1b",
        "wikitext-103",
        "wikitext-2",
        "fineweb-edu",
        "ag_news",
        "pubmed",
        "arxiv",
        "lambada",
        "ptb",
        "text",
        "jsonl",
        "parquet",
        "hf",
    }


def test_unknown_tokenizer_lists_available() -> None:
    with pytest.raises(ValueError) as info:
        DataConfig(tokenizer="sentencepiece-9000").validate()
    message = str(info.value)
    assert "DataConfig.tokenizer" in message
    for name in ("bpe", "gpt2", "bert-base-uncased"):
        assert name in message
    assert TOKENIZERS.available() == sorted(["bpe", "gpt2", "bert-base-uncased", "hf"])


def test_unknown_eval_set_lists_available() -> None:
    with pytest.raises(ValueError, match=r"eval_sets.*available: .*stdlib-docs"):
        DataConfig(eval_sets=["stdlib-docs", "nope"]).validate()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"seq_len": 1}, "seq_len"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"validation_fraction": 0.6, "test_fraction": 0.5}, "test_fraction"),
        ({"max_train_bytes": 0}, "max_train_bytes"),
        ({"validation_split": "dev"}, "validation_split"),
        ({"eval_split": "dev"}, "eval_split"),
        ({"text_sample_by": "word"}, "text_sample_by"),
        ({"source": "text"}, "data_files"),
        ({"source": "hf"}, "hf_path"),
        ({"split_data_files": {"dev": ["a.txt"]}, "source": "text"}, "split_data_files"),
        ({"eval_sets": ["text"]}, "eval_sets"),
        ({"eval_sets": ["stdlib"]}, "eval_split"),
        ({"seed": -1}, "seed"),
        ({"num_proc": 0}, "num_proc"),
    ],
)
def test_invalid_fields_are_named(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"DataConfig\.{field} "):
        DataConfig(**overrides).validate()


def test_training_source_as_eval_set_is_fine_on_test_split() -> None:
    DataConfig(eval_sets=["stdlib"], eval_split="test").validate()


def test_omegaconf_structured_round_trip() -> None:
    base = OmegaConf.structured(DataConfig)
    merged = OmegaConf.merge(
        base,
        OmegaConf.from_dotlist(["source=jsonl", "seq_len=256", "data_files=[a.jsonl,b.jsonl]"]),
        {"split_data_files": {"train": ["t.jsonl"]}},
    )
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, DataConfig)
    assert cfg.seq_len == 256 and cfg.data_files == ["a.jsonl", "b.jsonl"]
    assert cfg.split_data_files == {"train": ["t.jsonl"]}
    cfg.validate()
