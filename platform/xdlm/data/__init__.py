"""The data layer: text sources, tokenizers, the token cache, packing and batch iterators.

Typical use (a training worker)::

    from xdlm.data import DataConfig, build_datasets

    data = build_datasets(DataConfig())            # stdlib corpus, bpe 4096, seq_len 128
    tok = data.tokenizer                           # vocab_size, bos_id, eos_id, mask_id
    batches = data.train_batches(micro_batch=32, rank=0, world_size=1)
    x = next(batches)                              # LongTensor [32, 128]
    state = batches.state_dict()                   # put in the checkpoint; load_state_dict resumes
    for xv in data.eval_batches(32, name="validation"): ...
    data.unigram_baseline("validation").perplexity # the bar to beat

Modules, bottom up: ``registry`` (SOURCES, TOKENIZERS), ``config`` (DataConfig, checked against
the registries), ``cache`` (atomic token arrays), ``sources`` and ``hub_sources`` (text sources),
``synthetic_sources`` (the ``markov`` entry), ``tokenizers`` (TextTokenizer), ``packing``,
``loader``, ``datasets`` (Datasets), ``markov`` (the Markov source's Datasets), ``build``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The sources and tokenizers register themselves on import: importing them here fills SOURCES and
# TOKENIZERS before any ``xdlm.data.*`` module runs (Python runs this file first), so
# ``DataConfig.validate`` and ``make_source`` always see every name.
from xdlm.data import hub_sources, sources, synthetic_sources, tokenizers  # noqa: F401

# The other exports are resolved lazily (PEP 562) so that ``from xdlm.data.config import
# DataConfig``, used by the job config and the CLI, does not import torch.
_EXPORTS = {
    "Datasets": "xdlm.data.datasets",
    "TokenBlocks": "xdlm.data.datasets",
    "MarkovConfig": "xdlm.data.config",
    "build_datasets": "xdlm.data.build",
    "build_token_blocks": "xdlm.data.build",
    "DataConfig": "xdlm.data.config",
    "EvalBatches": "xdlm.data.loader",
    "TrainBatches": "xdlm.data.loader",
    "UnigramBaseline": "xdlm.data.loader",
    "unigram_baseline": "xdlm.data.loader",
    "unigram_distribution": "xdlm.data.loader",
    "unigram_entropy": "xdlm.data.loader",
    "BlockPacker": "xdlm.data.packing",
    "pack_documents": "xdlm.data.packing",
    "SOURCES": "xdlm.data.registry",
    "TextSource": "xdlm.data.sources",
    "make_source": "xdlm.data.sources",
    "TOKENIZERS": "xdlm.data.registry",
    "TextTokenizer": "xdlm.data.tokenizers",
    "load_tokenizer": "xdlm.data.tokenizers",
}
__all__ = [
    "BlockPacker",
    "DataConfig",
    "Datasets",
    "MarkovConfig",
    "EvalBatches",
    "SOURCES",
    "TOKENIZERS",
    "TextSource",
    "TextTokenizer",
    "TokenBlocks",
    "TrainBatches",
    "UnigramBaseline",
    "build_datasets",
    "build_token_blocks",
    "load_tokenizer",
    "make_source",
    "pack_documents",
    "unigram_baseline",
    "unigram_distribution",
    "unigram_entropy",
]

if TYPE_CHECKING:
    from xdlm.data.build import build_datasets, build_token_blocks
    from xdlm.data.config import DataConfig, MarkovConfig
    from xdlm.data.datasets import Datasets, TokenBlocks
    from xdlm.data.loader import (
        EvalBatches,
        TrainBatches,
        UnigramBaseline,
        unigram_baseline,
        unigram_distribution,
        unigram_entropy,
    )
    from xdlm.data.packing import BlockPacker, pack_documents
    from xdlm.data.registry import SOURCES, TOKENIZERS
    from xdlm.data.sources import TextSource, make_source
    from xdlm.data.tokenizers import TextTokenizer, load_tokenizer


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'xdlm.data' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
