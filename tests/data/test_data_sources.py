"""Sources: the stdlib corpus split, local files, Hub field/split mapping (offline)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xdlm.data import DataConfig, build_datasets, make_source
from xdlm.data.hub_sources import HUB_DATASETS, HubDatasetSpec, HubSource
from xdlm.data.sources import StdlibSource, iter_documents, split_of

# ----- stdlib ------------------------------------------------------------------------------------


def test_stdlib_split_is_deterministic_disjoint_and_complete() -> None:
    a = StdlibSource("stdlib", "code", 0.05, 0.05)
    b = StdlibSource("stdlib", "code", 0.05, 0.05)
    splits = {s: a.split_keys(s) for s in ("train", "validation", "test")}
    assert splits == {s: b.split_keys(s) for s in splits}
    sets = {s: set(keys) for s, keys in splits.items()}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    all_keys = set(a.keys())
    assert sets["train"] | sets["validation"] | sets["test"] == all_keys
    assert len(all_keys) > 300
    assert 0.01 < len(sets["validation"]) / len(all_keys) < 0.12
    # Keys are relative POSIX paths: the same on every machine.
    assert all(not k.startswith("/") and "\\" not in k for k in all_keys)
    assert not any(k.startswith("test/") for k in all_keys)
    assert not any("site-packages" in k for k in all_keys)


def test_stdlib_domains() -> None:
    tests = StdlibSource("stdlib-test", "test", 0.05, 0.05).keys()
    assert tests and all(k.startswith("test/") and k.endswith(".py") for k in tests)
    docs = StdlibSource("stdlib-docs", "docs", 0.05, 0.05)
    topics = docs.keys()
    assert len(topics) > 50
    text = next(iter(docs.documents("all")))
    assert isinstance(text, str) and len(text) > 20


def test_split_depends_on_relative_path_only(tmp_path: Path) -> None:
    for root in (tmp_path / "one" / "lib", tmp_path / "two" / "other" / "lib"):
        for i in range(40):
            pkg = root / f"pkg{i % 4}"
            pkg.mkdir(parents=True, exist_ok=True)
            (pkg / f"mod{i}.py").write_text(f"x = {i}\n")
        (root / "test").mkdir()
        (root / "test" / "test_a.py").write_text("assert True\n")
        (root / "site-packages").mkdir()
        (root / "site-packages" / "third.py").write_text("y = 1\n")
    one = StdlibSource("s", "code", 0.2, 0.2, root=tmp_path / "one" / "lib")
    two = StdlibSource("s", "code", 0.2, 0.2, root=tmp_path / "two" / "other" / "lib")
    assert len(one.keys()) == 40
    for split in ("train", "validation", "test"):
        assert one.split_keys(split) == two.split_keys(split)
        assert list(one.documents(split)) == list(two.documents(split))
    assert StdlibSource("s", "test", 0.2, 0.2, root=tmp_path / "one" / "lib").keys() == [
        "test/test_a.py"
    ]


def test_split_of_respects_fractions() -> None:
    labels = [split_of(f"k{i}", 0.1, 0.2) for i in range(20_000)]
    assert abs(labels.count("validation") / 20_000 - 0.1) < 0.01
    assert abs(labels.count("test") / 20_000 - 0.2) < 0.01


def test_byte_cap_and_blank_documents() -> None:
    source = StdlibSource("stdlib", "code", 0.05, 0.05)
    docs = list(iter_documents(source, "train", 50_000))
    sizes = [len(d.encode()) for d in docs]
    assert sum(sizes) >= 50_000 and sum(sizes[:-1]) < 50_000
    assert all(d.strip() for d in docs)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        list(iter_documents(source, "dev", None))


def test_unknown_source_lists_available() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'c4'; available: .*openwebtext.*stdlib"):
        make_source("c4", DataConfig())


# ----- local files -------------------------------------------------------------------------------


def paragraphs(n: int, tag: str) -> list[str]:
    return [
        f"{tag} paragraph {i}: the quick brown fox jumps over the lazy dog {i * 7}."
        for i in range(n)
    ]


def write_local(kind: str, path: Path, texts: list[str]) -> None:
    if kind == "text":
        path.write_text("\n\n".join(texts), encoding="utf-8")
    elif kind == "jsonl":
        path.write_text(
            "".join(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(texts))
        )
    else:
        pq.write_table(pa.table({"body": texts, "id": list(range(len(texts)))}), path)


@pytest.mark.parametrize("kind", ["text", "jsonl", "parquet"])
def test_local_files_load_split_and_tokenize(
    kind: str, tmp_path: Path, small_config: Callable[..., DataConfig]
) -> None:
    suffix = {"text": "txt", "jsonl": "jsonl", "parquet": "parquet"}[kind]
    files = []
    for part in range(2):
        path = tmp_path / f"corpus{part}.{suffix}"
        write_local(kind, path, paragraphs(150, f"{kind}{part}"))
        files.append(str(path))
    cfg = small_config(
        source=kind,
        data_files=files,
        text_field="body",
        validation_fraction=0.2,
        test_fraction=0.1,
        vocab_size=300,
        seq_len=16,
        eval_sets=[],
    )
    source = make_source(kind, cfg)
    split_docs = {s: list(source.documents(s)) for s in ("train", "validation", "test")}
    everything = paragraphs(150, f"{kind}0") + paragraphs(150, f"{kind}1")
    assert sorted(sum(split_docs.values(), [])) == sorted(everything)
    assert not set(split_docs["train"]) & set(split_docs["validation"])
    assert 30 < len(split_docs["validation"]) < 90

    data = build_datasets(cfg)
    assert data.train.num_blocks > 0 and data.validation.num_blocks > 0
    decoded = data.tokenizer.decode(data.validation.blocks.reshape(-1), skip_special_tokens=True)
    first_validation_doc = split_docs["validation"][0]
    assert first_validation_doc in decoded


def test_local_split_files(tmp_path: Path, small_config: Callable[..., DataConfig]) -> None:
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    write_local("jsonl", train, paragraphs(200, "train"))
    write_local("jsonl", valid, paragraphs(40, "valid"))
    cfg = small_config(
        source="jsonl",
        split_data_files={"train": [str(train)], "validation": [str(valid)]},
        text_field="body",
        vocab_size=300,
        seq_len=16,
        eval_sets=[],
    )
    source = make_source("jsonl", cfg)
    assert list(source.documents("validation")) == paragraphs(40, "valid")
    with pytest.raises(ValueError, match="no files for split 'test'"):
        list(source.documents("test"))
    data = build_datasets(cfg)
    text = data.tokenizer.decode(data.validation.blocks.reshape(-1), skip_special_tokens=True)
    assert "valid paragraph 1:" in text and "train paragraph" not in text


def test_local_missing_text_field(tmp_path: Path, small_config: Callable[..., DataConfig]) -> None:
    path = tmp_path / "c.jsonl"
    write_local("jsonl", path, paragraphs(5, "x"))
    source = make_source(
        "jsonl", small_config(source="jsonl", data_files=[str(path)], text_field="text")
    )
    with pytest.raises(ValueError, match="no text field 'text'; columns: body, id"):
        list(source.documents("all"))


# ----- Hugging Face Hub sources (offline: fake loader or local folders) -------------------------


def test_hub_table_names_real_datasets() -> None:
    expected = {
        "openwebtext": ("Skylion007/openwebtext", None, "text"),
        "lm1b": ("billion-word-benchmark/lm1b", "plain_text", "text"),
        "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1", "text"),
        "wikitext-2": ("Salesforce/wikitext", "wikitext-2-raw-v1", "text"),
        "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", "text"),
        "ag_news": ("fancyzhx/ag_news", None, "text"),
        "pubmed": ("ccdv/pubmed-summarization", "section", "abstract"),
        "arxiv": ("ccdv/arxiv-summarization", "section", "abstract"),
        "lambada": ("EleutherAI/lambada_openai", "en", "text"),
        "ptb": ("ptb-text-only/ptb_text_only", "penn_treebank", "sentence"),
    }
    got = {n: (s.path, s.config, s.text_field) for n, s in HUB_DATASETS.items()}
    assert got == expected
    assert HUB_DATASETS["fineweb-edu"].streaming
    assert HUB_DATASETS["lm1b"].split_map["validation"] == "test"


class FakeHub:
    """Stands in for ``datasets.load_dataset``: records calls, serves in-memory tables."""

    def __init__(self, rows: dict[str, list[Any]]) -> None:
        self.rows = rows
        self.calls: list[tuple[Any, ...]] = []

    def __call__(
        self, path: str, name: str | None, *, split: str, streaming: bool, **kw: Any
    ) -> Any:
        from datasets import Dataset

        self.calls.append((path, name, split, streaming))
        table = Dataset.from_dict(
            {
                k: [f"{split}:{v}" if isinstance(v, str) else v for v in vals]
                for k, vals in self.rows.items()
            }
        )
        return table.to_iterable_dataset() if streaming else table


def test_hub_source_maps_fields_and_splits() -> None:
    fake = FakeHub({"article": ["long body a", "long body b"], "abstract": ["abs a", "abs b"]})
    pubmed = HubSource("pubmed", HUB_DATASETS["pubmed"], load_dataset=fake)
    assert list(pubmed.documents("test")) == ["test:abs a", "test:abs b"]
    assert fake.calls[-1] == ("ccdv/pubmed-summarization", "section", "test", False)

    lm1b = HubSource("lm1b", HUB_DATASETS["lm1b"], load_dataset=FakeHub({"text": ["s"]}))
    assert list(lm1b.documents("validation")) == ["test:s"]
    assert lm1b.hub_splits("all") == ["test", "train"]

    lambada = HubSource("lambada", HUB_DATASETS["lambada"], load_dataset=FakeHub({"text": ["s"]}))
    with pytest.raises(ValueError, match="no 'train' split"):
        list(lambada.documents("train"))


def test_streaming_holdout_splits_are_disjoint() -> None:
    spec = HubDatasetSpec(
        "some/stream",
        None,
        "text",
        {"train": "train", "validation": "train", "test": "train"},
        streaming=True,
        streaming_holdout_docs=3,
    )
    fake = FakeHub({"text": [f"d{i}" for i in range(10)]})
    source = HubSource("stream", spec, load_dataset=fake)
    assert list(source.documents("validation")) == ["train:d0", "train:d1", "train:d2"]
    assert list(source.documents("test")) == ["train:d3", "train:d4", "train:d5"]
    assert list(source.documents("train")) == [f"train:d{i}" for i in range(6, 10)]
    assert all(call[3] for call in fake.calls)


def test_generic_hf_source_reads_a_local_dataset_folder(
    tmp_path: Path, small_config: Callable[..., DataConfig]
) -> None:
    """The real ``load_dataset`` path, offline: a local folder laid out like a Hub repo."""
    repo = tmp_path / "hub-like"
    (repo / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"content": paragraphs(300, "tr")}), repo / "data" / "train-00000.parquet"
    )
    pq.write_table(
        pa.table({"content": paragraphs(60, "va")}), repo / "data" / "validation-00000.parquet"
    )
    cfg = small_config(
        source="hf",
        hf_path=str(repo),
        text_field="content",
        eval_sets=[],
        vocab_size=300,
        seq_len=16,
        hf_cache_dir=str(tmp_path / "hf-cache"),
    )
    source = make_source("hf", cfg)
    assert list(source.documents("validation")) == paragraphs(60, "va")
    data = build_datasets(cfg)
    assert "va paragraph 3:" in data.tokenizer.decode(data.validation.blocks.reshape(-1))

    streamed = make_source(
        "hf",
        small_config(
            source="hf",
            hf_path=str(repo),
            text_field="content",
            hf_streaming=True,
            hf_cache_dir=str(tmp_path / "hf-cache"),
        ),
    )
    assert list(streamed.documents("train"))[:2] == paragraphs(2, "tr")
