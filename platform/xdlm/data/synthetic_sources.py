"""Registry entries of the synthetic sources (``data.source: markov``).

A synthetic source yields token ids drawn from a known law, not text: ``build_datasets`` builds
its ``Datasets`` from ``xdlm.data.markov`` instead of tokenizing documents.  This entry only
describes it (its definition, for cache keys and run records), so registering it imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from xdlm.data.config import DataConfig
from xdlm.data.registry import SOURCES
from xdlm.data.sources import TextSource


@SOURCES.register("markov")
class MarkovSource(TextSource):
    """The order-n Markov chain of ``DataConfig.markov`` (docs/synthetic.md)."""

    name = "markov"

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def documents(self, split: str) -> Iterator[str]:
        raise ValueError("data.source: 'markov' generates token ids, not text documents; "
                         "build_datasets builds it directly")

    def fingerprint(self) -> dict[str, Any]:
        return {"source": self.name, "markov": asdict(self.cfg.markov), "seq_len": self.cfg.seq_len}
