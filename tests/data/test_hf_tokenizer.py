"""``data.tokenizer: hf``: a Hugging Face tokenizer from a local ``save_pretrained`` directory.

The tokenizers are built here from the project's own BPE (no download) and saved the way a hub
repository ships one (``tokenizer.json`` + ``tokenizer_config.json``); the platform must give the
same ids as ``transformers`` itself and find BOS, EOS and the mask token as documented.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from xdlm.data import DataConfig, build_datasets
from xdlm.data.tokenizers import BPE_BOS, BPE_EOS, MASK_TOKEN, load_tokenizer, train_byte_level_bpe
from xdlm.errors import UserError

TEXTS = ["def add(a, b):\n    return a + b\n", "the quick brown fox jumps over the lazy dog\n"] * 50


def save_tokenizer(directory: Path, **specials: str) -> Path:
    """The project's BPE (ids 0-2 are [BOS], [EOS], [MASK]) as a transformers fast tokenizer."""
    fast = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(TEXTS, 300), **specials)
    fast.save_pretrained(directory)
    return directory


def load(cfg: DataConfig):
    return load_tokenizer(cfg.validate(), lambda: iter(()), {})


def test_hf_tokenizer_matches_transformers_ids_and_finds_its_special_tokens(tmp_path, small_config) -> None:
    path = save_tokenizer(tmp_path / "tok", bos_token=BPE_BOS, eos_token=BPE_EOS, mask_token=MASK_TOKEN)
    tok = load(small_config(tokenizer="hf", hf_tokenizer=str(path)))
    reference = AutoTokenizer.from_pretrained(path)
    text = "def add(x, y):\n    return x + y  # the quick fox\n"
    assert tok.encode(text) == reference(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(tok.encode(text)) == text
    assert (tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2)
    assert tok.vocab_size == len(reference)
    assert tok.origin == "local" and tok.fingerprint.startswith("hf-")
    assert 2 not in tok.encode("a literal [MASK] in text")  # raw text never yields the mask id


def test_mask_token_named_by_the_job_or_added_when_the_tokenizer_has_none(tmp_path, small_config) -> None:
    path = save_tokenizer(tmp_path / "tok", eos_token=BPE_EOS)  # no BOS, no mask (as LLaDA's declares none)
    size = len(AutoTokenizer.from_pretrained(path))
    named = load(small_config(tokenizer="hf", hf_tokenizer=str(path), hf_tokenizer_mask=MASK_TOKEN))
    assert (named.bos_id, named.eos_id, named.mask_id, named.vocab_size) == (1, 1, 2, size)
    with pytest.raises(UserError, match=r"data\.hf_tokenizer_mask: '<\|mdm_mask\|>' is not a token"):
        load(small_config(tokenizer="hf", hf_tokenizer=str(path), hf_tokenizer_mask="<|mdm_mask|>"))
    path = tmp_path / "plain"  # a word-level tokenizer with no [MASK] at all
    plain = Tokenizer(models.WordLevel({"<eot>": 0, "abc": 1, "abd": 2, "<unk>": 3}, unk_token="<unk>"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=plain, eos_token="<eot>").save_pretrained(path)
    before = len(AutoTokenizer.from_pretrained(path))
    added = load(small_config(tokenizer="hf", hf_tokenizer=str(path)))
    assert added.mask_id == before and added.vocab_size == before + 1  # [MASK] appended
    assert added.encode("abc abd") == [1, 2] and added.decode([1, added.mask_id]) == "abc [MASK]"
    assert len(AutoTokenizer.from_pretrained(path)) == before  # the saved tokenizer is untouched


def test_hf_tokenizer_config_errors_name_the_field(tmp_path, small_config) -> None:
    with pytest.raises(ValueError, match=r"DataConfig\.hf_tokenizer = None is invalid: tokenizer 'hf' needs"):
        small_config(tokenizer="hf").validate()
    with pytest.raises(UserError, match=r"data\.hf_tokenizer: cannot load '.*missing'"):
        load(small_config(tokenizer="hf", hf_tokenizer=str(tmp_path / "missing")))


def test_datasets_build_with_an_hf_tokenizer(tmp_path, small_config: Callable[..., DataConfig]) -> None:
    path = save_tokenizer(tmp_path / "tok", bos_token=BPE_BOS, eos_token=BPE_EOS, mask_token=MASK_TOKEN)
    data = build_datasets(small_config(tokenizer="hf", hf_tokenizer=str(path), max_train_bytes=40_000,
                                       max_eval_bytes=20_000, eval_sets=[]))
    blocks = data.train.blocks
    assert blocks.shape[1] == 64 and int(blocks.max()) < data.tokenizer.vocab_size
    assert int((blocks == 0).sum()) > 0  # documents are packed with the tokenizer's BOS
