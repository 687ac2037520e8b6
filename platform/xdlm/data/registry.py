"""The data layer's registries: text sources (``SOURCES``) and tokenizers (``TOKENIZERS``) by name.

They live apart from their entries so that ``DataConfig.validate`` can check names against them
without importing any source or tokenizer. The entries register themselves, next to their
definitions, when their module is imported; ``xdlm.data`` imports all of them, and Python runs it
before any ``xdlm.data.*`` module, so the registries are full before a name can be looked up.

Entries: ``SOURCES[name](cfg: DataConfig) -> TextSource`` (``sources.py``, ``hub_sources.py``);
``TOKENIZERS[name](cfg, training_texts, source_fingerprint) -> TextTokenizer`` (``tokenizers.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xdlm.registry import Registry

# Typed loosely: naming DataConfig, TextSource or TextTokenizer here would make this module import
# the modules that import it (the precise signatures are ``SourceFactory`` and ``TokenizerFactory``
# next to the entries).
SOURCES: Registry[Callable[..., Any]] = Registry("dataset")
TOKENIZERS: Registry[Callable[..., Any]] = Registry("tokenizer")
