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

Modules: ``config`` (DataConfig), ``sources`` (SOURCES registry), ``tokenizers`` (TOKENIZERS
registry, TextTokenizer), ``cache`` (atomic token arrays), ``packing``, ``loader``, ``build``.
"""

from xdlm.data.build import Datasets, TokenBlocks, build_datasets, build_token_blocks
from xdlm.data.config import DataConfig
from xdlm.data.loader import (
    EvalBatches,
    TrainBatches,
    UnigramBaseline,
    unigram_baseline,
    unigram_distribution,
    unigram_entropy,
)
from xdlm.data.packing import BlockPacker, pack_documents
from xdlm.data.sources import SOURCES, TextSource, make_source
from xdlm.data.tokenizers import TOKENIZERS, TextTokenizer, load_tokenizer

__all__ = [
    "SOURCES",
    "TOKENIZERS",
    "BlockPacker",
    "DataConfig",
    "Datasets",
    "EvalBatches",
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
