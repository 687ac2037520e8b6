"""Hugging Face Hub datasets by name (``openwebtext``, ``lm1b``, ``wikitext-103``, ``wikitext-2``,
``fineweb-edu`` streaming, the zero-shot sets) and the generic ``hf`` source, registered in
``xdlm.data.registry.SOURCES``. They need a network (or a warm ``datasets`` cache); tests drive them
through an injected ``load_dataset`` and a local folder laid out like a Hub repository.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from xdlm.data.config import DataConfig
from xdlm.data.registry import SOURCES
from xdlm.data.sources import TextSource, check_split, texts_of

_IDENTITY_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_TEST_ONLY = {"validation": "test", "test": "test"}


@dataclass(frozen=True)
class HubDatasetSpec:
    """How to read one Hub dataset: id, config, text column, and our split -> Hub split expression.

    ``streaming_holdout_docs`` (streaming datasets with only a train split): the first N documents
    of the stream are ``validation``, the next N ``test``, the rest ``train``.
    """

    path: str
    config: str | None
    text_field: str
    split_map: Mapping[str, str] = field(default_factory=lambda: dict(_IDENTITY_SPLITS))
    streaming: bool = False
    streaming_holdout_docs: int = 0


#: The named Hub sources. Ids are the current Hub repositories (legacy script datasets moved to
#: organisation namespaces; the Hub serves their Parquet exports).
HUB_DATASETS: dict[str, HubDatasetSpec] = {
    # Pretraining corpora.
    "openwebtext": HubDatasetSpec(
        "Skylion007/openwebtext",
        None,
        "text",
        # Only a train split upstream: hold out its last 1% (~80k documents) as in common practice.
        {"train": "train[:99%]", "validation": "train[99%:]", "test": "train[99%:]"},
    ),
    "lm1b": HubDatasetSpec(
        "billion-word-benchmark/lm1b", "plain_text", "text", {"train": "train", **_TEST_ONLY}
    ),
    "wikitext-103": HubDatasetSpec("Salesforce/wikitext", "wikitext-103-raw-v1", "text"),
    "wikitext-2": HubDatasetSpec("Salesforce/wikitext", "wikitext-2-raw-v1", "text"),
    "fineweb-edu": HubDatasetSpec(
        "HuggingFaceFW/fineweb-edu",
        "sample-10BT",
        "text",
        {"train": "train", "validation": "train", "test": "train"},
        streaming=True,
        streaming_holdout_docs=10_000,
    ),
    # Zero-shot evaluation sets.
    "ag_news": HubDatasetSpec("fancyzhx/ag_news", None, "text", {"train": "train", **_TEST_ONLY}),
    "pubmed": HubDatasetSpec("ccdv/pubmed-summarization", "section", "abstract"),
    "arxiv": HubDatasetSpec("ccdv/arxiv-summarization", "section", "abstract"),
    "lambada": HubDatasetSpec("EleutherAI/lambada_openai", "en", "text", dict(_TEST_ONLY)),
    "ptb": HubDatasetSpec("ptb-text-only/ptb_text_only", "penn_treebank", "sentence"),
}


class HubSource(TextSource):
    """A Hugging Face Hub dataset read with ``datasets.load_dataset`` (needs a network or a warm
    ``HF_DATASETS_CACHE``)."""

    def __init__(
        self,
        name: str,
        spec: HubDatasetSpec,
        *,
        num_proc: int = 1,
        cache_dir: str | None = None,
        load_dataset: Callable[..., Any] | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.num_proc = num_proc
        self.cache_dir = cache_dir
        # Injected in tests; the real function is imported lazily (``datasets`` is slow to import).
        self._load_dataset = load_dataset

    def hub_splits(self, split: str) -> list[str]:
        """The Hub split expressions that make up ``split`` (``all``: test first, then the rest)."""
        check_split(split)
        if split == "all":
            wanted = [s for s in ("test", "validation", "train") if s in self.spec.split_map]
            return list(dict.fromkeys(self.spec.split_map[s] for s in wanted))
        try:
            return [self.spec.split_map[split]]
        except KeyError:
            raise ValueError(
                f"source {self.name!r} has no {split!r} split; available: "
                f"{', '.join(self.spec.split_map)}"
            ) from None

    def load(self, hub_split: str) -> Any:
        """The ``datasets`` object of one Hub split."""
        load_dataset = self._load_dataset
        if load_dataset is None:
            from datasets import load_dataset
        kwargs: dict[str, Any] = {"split": hub_split, "streaming": self.spec.streaming}
        if not self.spec.streaming and self.num_proc > 1:
            kwargs["num_proc"] = self.num_proc
        if self.cache_dir is not None:
            kwargs["cache_dir"] = self.cache_dir
        return load_dataset(self.spec.path, self.spec.config, **kwargs)

    def documents(self, split: str) -> Iterator[str]:
        holdout = self.spec.streaming_holdout_docs if self.spec.streaming else 0
        for hub_split in self.hub_splits(split):
            dataset = self.load(hub_split)
            if holdout and split != "all":
                if split == "validation":
                    dataset = dataset.take(holdout)
                elif split == "test":
                    dataset = dataset.skip(holdout).take(holdout)
                else:
                    dataset = dataset.skip(2 * holdout)
            yield from texts_of(dataset, self.spec.text_field, self.name)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "hub",
            "path": self.spec.path,
            "config": self.spec.config,
            "text_field": self.spec.text_field,
            "split_map": dict(self.spec.split_map),
            "streaming": self.spec.streaming,
            "streaming_holdout_docs": self.spec.streaming_holdout_docs,
        }


def _register_hub(name: str, spec: HubDatasetSpec) -> None:
    @SOURCES.register(name)
    def factory(cfg: DataConfig) -> TextSource:
        return HubSource(name, spec, num_proc=cfg.num_proc, cache_dir=cfg.hf_cache_dir)


for _name, _spec in HUB_DATASETS.items():
    _register_hub(_name, _spec)


@SOURCES.register("hf")
def _generic_hub(cfg: DataConfig) -> TextSource:
    if not cfg.hf_path:
        raise ValueError("DataConfig.hf_path is required for source 'hf'")
    spec = HubDatasetSpec(
        cfg.hf_path,
        cfg.hf_config,
        cfg.text_field,
        {**_IDENTITY_SPLITS, **cfg.hf_split_map},
        streaming=cfg.hf_streaming,
    )
    return HubSource(f"hf:{cfg.hf_path}", spec, num_proc=cfg.num_proc, cache_dir=cfg.hf_cache_dir)
