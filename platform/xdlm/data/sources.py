"""Text sources: where documents come from, and how they are split into train/validation/test.

A source turns a split name into a stream of documents (``str``). Three families are registered in
``SOURCES`` (``xdlm.data.registry``; ``@SOURCES.register(name)`` next to each):

* the **embedded offline corpus**, the interpreter's own standard library, present on every machine
  with Python: ``stdlib`` (its ``.py`` sources outside ``Lib/test``: code), ``stdlib-test`` (the
  ``Lib/test`` suite: a shifted code domain) and ``stdlib-docs`` (``pydoc_data.topics``: English
  documentation). Files are assigned to splits by a hash of their path *relative to the stdlib
  directory*, so the split is the same on every machine with the same Python version;
* **Hugging Face Hub datasets** (module ``hub_sources``) by name (``openwebtext``, ``lm1b``, ``wikitext-103``,
  ``wikitext-2``, ``fineweb-edu`` streaming, and the zero-shot sets ``ag_news``, ``pubmed``,
  ``arxiv``, ``lambada``, ``ptb``) and the generic ``hf`` (``DataConfig.hf_path``/``hf_config``);
* **local files** ``text``, ``jsonl``, ``parquet`` read with ``datasets.load_dataset``.

Every source also reports a ``fingerprint()``: a JSON-able description of what determines its
content, used in cache keys. Byte caps and blank-document filtering are applied uniformly by
``iter_documents``, not by each source.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import sysconfig
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from xdlm.data.config import EVAL_SPLITS, LOCAL_FILE_SOURCES, DataConfig
from xdlm.data.registry import SOURCES


class TextSource(ABC):
    """A corpus that yields documents per split."""

    name: str

    @abstractmethod
    def documents(self, split: str) -> Iterator[str]:
        """Documents of ``split`` (``train``/``validation``/``test``/``all``) in a fixed order."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able identity of the content (what must change the cache key when it changes)."""


#: The signature of a ``SOURCES`` entry.
SourceFactory = Callable[[DataConfig], TextSource]


def make_source(name: str, cfg: DataConfig) -> TextSource:
    """Instantiate the registered source ``name`` (``ValueError`` listing the names if unknown)."""
    return SOURCES.get(name)(cfg)


def iter_documents(source: TextSource, split: str, max_bytes: int | None) -> Iterator[str]:
    """``source.documents(split)`` without blank documents, stopped once ``max_bytes`` of UTF-8 text
    were yielded (the document that crosses the cap is kept whole)."""
    check_split(split)
    total = 0
    for text in source.documents(split):
        if not text or not text.strip():
            continue
        yield text
        total += len(text.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            return


# ----- deterministic hash split ------------------------------------------------------------------


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def hash_fraction(key: str) -> float:
    """A number in [0, 1) that depends only on ``key`` (first 8 bytes of its SHA-256)."""
    return int.from_bytes(_digest(key)[:8], "big") / 2.0**64


def split_of(key: str, validation_fraction: float, test_fraction: float) -> str:
    """Assign ``key`` to ``test`` / ``validation`` / ``train`` by its hash fraction.

    Test takes [0, test), validation [test, test + validation), train the rest: the assignment is
    stable across machines and runs and only moves the keys near a boundary when fractions change.
    """
    u = hash_fraction(key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def check_split(split: str) -> None:
    """``ValueError`` unless ``split`` is one every source understands (``EVAL_SPLITS``)."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}; available: {', '.join(EVAL_SPLITS)}")


# ----- the embedded offline corpus: the Python standard library ---------------------------------

STDLIB_DOMAINS = ("code", "test", "docs")
_NOT_STDLIB_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_DOCS_MODULE_KEY = "pydoc_data/topics.py"


def stdlib_dir() -> Path:
    """The directory of the running interpreter's standard library (``Lib/``)."""
    return Path(sysconfig.get_paths()["stdlib"])


class StdlibSource(TextSource):
    """The interpreter's standard library as a corpus (no network, ~14 MB code, ~17 MB tests).

    ``domain``: ``code`` = ``.py`` files outside ``Lib/test``; ``test`` = ``.py`` files inside
    ``Lib/test``; ``docs`` = the topics of ``pydoc_data.topics`` (English prose, ~0.47 MB).
    Documents of a split come in the order of their key's hash, so a byte cap takes an unbiased
    sample rather than the alphabetically first packages. Files that are not valid UTF-8 (the test
    suite has a few on purpose) are skipped.
    """

    def __init__(
        self,
        name: str,
        domain: str,
        validation_fraction: float,
        test_fraction: float,
        root: Path | None = None,
    ) -> None:
        if domain not in STDLIB_DOMAINS:
            raise ValueError(f"unknown stdlib domain {domain!r}; available: {STDLIB_DOMAINS}")
        self.name = name
        self.domain = domain
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction
        self.root = Path(root) if root is not None else stdlib_dir()

    def keys(self) -> list[str]:
        """Machine-independent document keys: paths relative to the stdlib dir, ``/``-separated
        (``docs``: ``pydoc_data/topics.py::<topic>``)."""
        if self.domain == "docs":
            return [f"{_DOCS_MODULE_KEY}::{topic}" for topic in sorted(_pydoc_topics())]
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root)
            top = rel_dir.parts[0] if rel_dir.parts else ""
            if top in _NOT_STDLIB_DIRS or (self.domain == "code" and top == "test"):
                dirnames[:] = []
                continue
            if self.domain == "test" and not rel_dir.parts:
                dirnames[:] = ["test"] if "test" in dirnames else []
                continue
            dirnames[:] = sorted(d for d in dirnames if d not in _NOT_STDLIB_DIRS)
            keys.extend((rel_dir / f).as_posix() for f in sorted(filenames) if f.endswith(".py"))
        if not keys:
            hint = (
                " (some distributions ship the test suite separately)"
                if self.domain == "test"
                else ""
            )
            raise ValueError(f"source {self.name!r}: no .py files found under {self.root}{hint}")
        return keys

    def split_keys(self, split: str) -> list[str]:
        """Keys of ``split`` in hash order (``all``: every key)."""
        check_split(split)
        keys = self.keys()
        if split != "all":
            keys = [
                k
                for k in keys
                if split_of(k, self.validation_fraction, self.test_fraction) == split
            ]
        return sorted(keys, key=_digest)

    def read(self, key: str) -> str | None:
        """The text of one document, or ``None`` if it is not UTF-8."""
        if self.domain == "docs":
            return _pydoc_topics()[key.split("::", 1)[1]]
        try:
            return (self.root / key).read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            return None

    def documents(self, split: str) -> Iterator[str]:
        for key in self.split_keys(split):
            text = self.read(key)
            if text is not None:
                yield text

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "stdlib",
            "domain": self.domain,
            "python": f"{sys.implementation.name}-{platform.python_version()}",
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
        }


def _pydoc_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # pragma: no cover - stripped-down interpreters only
        raise ValueError("source 'stdlib-docs' needs the stdlib module pydoc_data.topics") from err
    return topics


@SOURCES.register("stdlib")
def _stdlib_code(cfg: DataConfig) -> TextSource:
    return StdlibSource("stdlib", "code", cfg.validation_fraction, cfg.test_fraction)


@SOURCES.register("stdlib-test")
def _stdlib_test(cfg: DataConfig) -> TextSource:
    return StdlibSource("stdlib-test", "test", cfg.validation_fraction, cfg.test_fraction)


@SOURCES.register("stdlib-docs")
def _stdlib_docs(cfg: DataConfig) -> TextSource:
    return StdlibSource("stdlib-docs", "docs", cfg.validation_fraction, cfg.test_fraction)


def texts_of(dataset: Any, text_field: str, source_name: str) -> Iterator[str]:
    """The ``text_field`` column of a ``datasets.Dataset``/``IterableDataset``, in batches."""
    columns = getattr(dataset, "column_names", None)
    if columns is not None and text_field not in columns:
        raise ValueError(
            f"source {source_name!r}: no text field {text_field!r}; columns: {', '.join(columns)}"
        )
    if columns is not None and len(columns) > 1:
        dataset = dataset.select_columns([text_field])
    for batch in dataset.iter(batch_size=1000):
        yield from batch[text_field]


# ----- local files -------------------------------------------------------------------------------


class LocalFileSource(TextSource):
    """Local ``text``/``jsonl``/``parquet`` files read through ``datasets.load_dataset``.

    With ``split_files`` each split has its own files. With ``files`` alone, row ``i`` (counted
    over the files in the given order) goes to the split chosen by the hash of ``"row:i"``.
    """

    _BUILDERS = {"text": "text", "jsonl": "json", "parquet": "parquet"}

    def __init__(
        self,
        kind: str,
        *,
        files: Iterable[str] = (),
        split_files: Mapping[str, Iterable[str]] | None = None,
        text_field: str = "text",
        text_sample_by: str = "paragraph",
        validation_fraction: float = 0.05,
        test_fraction: float = 0.05,
        hf_cache_dir: Path | None = None,
    ) -> None:
        if kind not in self._BUILDERS:
            raise ValueError(
                f"unknown local file kind {kind!r}; available: {', '.join(self._BUILDERS)}"
            )
        self.name = kind
        self.kind = kind
        self.files = [str(Path(f).expanduser().resolve()) for f in files]
        self.split_files = {
            s: [str(Path(f).expanduser().resolve()) for f in fs]
            for s, fs in (split_files or {}).items()
        }
        if not self.files and not self.split_files:
            raise ValueError(f"source {kind!r} needs files (DataConfig.data_files)")
        # The text builder always names its column "text".
        self.text_field = "text" if kind == "text" else text_field
        self.text_sample_by = text_sample_by
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction
        self.hf_cache_dir = hf_cache_dir

    def _load(self, files: list[str]) -> Any:
        from datasets import load_dataset

        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"source {self.kind!r}: missing files: {', '.join(missing)}")
        kwargs: dict[str, Any] = {"data_files": files, "split": "train"}
        if self.kind == "text":
            kwargs["sample_by"] = self.text_sample_by
        if self.hf_cache_dir is not None:
            kwargs["cache_dir"] = str(self.hf_cache_dir)
        return load_dataset(self._BUILDERS[self.kind], **kwargs)

    def documents(self, split: str) -> Iterator[str]:
        check_split(split)
        if self.split_files:
            if split == "all":
                names = [s for s in ("test", "validation", "train") if s in self.split_files]
            elif split in self.split_files:
                names = [split]
            else:
                raise ValueError(
                    f"source {self.kind!r}: no files for split {split!r} in split_data_files "
                    f"(have: {', '.join(self.split_files)})"
                )
            for name in names:
                yield from texts_of(self._load(self.split_files[name]), self.text_field, self.kind)
            return
        texts = texts_of(self._load(self.files), self.text_field, self.kind)
        for row, text in enumerate(texts):
            if (
                split == "all"
                or split_of(f"row:{row}", self.validation_fraction, self.test_fraction) == split
            ):
                yield text

    def fingerprint(self) -> dict[str, Any]:
        def describe(files: list[str]) -> list[list[Any]]:
            out = []
            for f in files:
                st = os.stat(f) if os.path.exists(f) else None
                out.append([f, st.st_size if st else None, st.st_mtime_ns if st else None])
            return out

        return {
            "kind": "local",
            "format": self.kind,
            "files": describe(self.files),
            "split_files": {s: describe(fs) for s, fs in sorted(self.split_files.items())},
            "text_field": self.text_field,
            "text_sample_by": self.text_sample_by if self.kind == "text" else None,
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
        }


def _register_local(kind: str) -> None:
    @SOURCES.register(kind)
    def factory(cfg: DataConfig) -> TextSource:
        return LocalFileSource(
            kind,
            files=cfg.data_files,
            split_files=cfg.split_data_files,
            text_field=cfg.text_field,
            text_sample_by=cfg.text_sample_by,
            validation_fraction=cfg.validation_fraction,
            test_fraction=cfg.test_fraction,
            hf_cache_dir=cfg.resolved_cache_dir() / "hf-datasets",
        )


for _kind in LOCAL_FILE_SOURCES:
    _register_local(_kind)
