"""Code problems: one record type for MBPP and HumanEval, and their loaders.

Schemas as published:

- MBPP full (``google-research-datasets/mbpp``, config ``full``): ``task_id``, ``text``, ``code``,
  ``test_list``, ``test_setup_code``, ``challenge_test_list``; the test split is tasks 11-510.
- MBPP sanitized (config ``sanitized``): ``task_id``, ``prompt`` (the description), ``code``,
  ``test_list``, ``test_imports``, ``source_file``.
- HumanEval (``openai/openai_humaneval``, split ``test``): ``task_id``, ``prompt`` (signature and
  docstring), ``canonical_solution`` (the body), ``test`` (defines ``check(candidate)``),
  ``entry_point``.

Both the Hugging Face datasets and local JSON/JSONL files in the same schema go through
``datasets.load_dataset`` (local files need no network), then through one converter per format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xdlm.errors import UserError

MBPP, HUMANEVAL = "mbpp", "humaneval"
BENCHMARKS = (MBPP, HUMANEVAL)
HUB = {
    (MBPP, "full"): ("google-research-datasets/mbpp", "full", "test"),
    (MBPP, "sanitized"): ("google-research-datasets/mbpp", "sanitized", "test"),
    (HUMANEVAL, "full"): ("openai/openai_humaneval", None, "test"),
}
"""(benchmark, variant) -> (dataset name, config, split) on the Hugging Face hub."""


@dataclass(frozen=True)
class Problem:
    """One task. ``tests`` is the program run after the candidate, in the same namespace."""

    benchmark: str
    task_id: str
    description: str
    """MBPP: the task in words; HumanEval: the prompt (signature + docstring) to complete."""
    tests: str
    reference: str
    """The dataset's own solution, in the form a completion takes (MBPP: the whole code;
    HumanEval: the body that follows the prompt)."""
    test_list: tuple[str, ...] = ()
    """MBPP: the asserts shown in the prompt."""
    entry_point: str = ""

    def program(self, code: str) -> str:
        """The candidate program for extracted ``code`` (HumanEval: the prompt, then the body)."""
        return self.description + code if self.benchmark == HUMANEVAL else code


def mbpp_problem(record: Mapping[str, Any]) -> Problem:
    """A problem from an MBPP record, full (``text``) or sanitized (``prompt``) schema."""
    text = record.get("text") or record.get("prompt")
    _need(record, ("task_id", "code", "test_list"), MBPP)
    if not text:
        raise UserError(f"mbpp task {record.get('task_id')!r}: needs a 'text' (full) or 'prompt' (sanitized) field")
    tests = list(record["test_list"])
    setup = (record.get("test_setup_code") or "").strip()
    imports = list(record.get("test_imports") or [])
    prelude = "\n".join(imports + ([setup] if setup else []))
    return Problem(MBPP, str(record["task_id"]), str(text).strip(), (prelude + "\n" if prelude else "") + "\n".join(tests) + "\n",
                   str(record["code"]), tuple(tests))


def humaneval_problem(record: Mapping[str, Any]) -> Problem:
    _need(record, ("task_id", "prompt", "canonical_solution", "test", "entry_point"), HUMANEVAL)
    entry = str(record["entry_point"])
    tests = f"{record['test']}\n\ncheck({entry})\n"
    return Problem(HUMANEVAL, str(record["task_id"]), str(record["prompt"]), tests,
                   str(record["canonical_solution"]), entry_point=entry)


CONVERTERS = {MBPP: mbpp_problem, HUMANEVAL: humaneval_problem}


def to_problems(benchmark: str, records: Iterable[Mapping[str, Any]]) -> list[Problem]:
    if benchmark not in CONVERTERS:
        raise UserError(f"benchmark: {benchmark!r} is not one of {', '.join(BENCHMARKS)}")
    return [CONVERTERS[benchmark](r) for r in records]


def load_problems(benchmark: str, source: str | None = None, *, variant: str = "full", split: str | None = None,
                  limit: int | None = None, cache_dir: str | None = None) -> list[Problem]:
    """Problems of ``benchmark`` from a local ``.json``/``.jsonl`` file, or from the hub.

    ``source=None``: the published dataset (``HUB``; needs a network the first time); a path:
    a local file in the same schema. ``limit`` keeps the first problems.
    """
    if benchmark not in BENCHMARKS:
        raise UserError(f"benchmark: {benchmark!r} is not one of {', '.join(BENCHMARKS)}")
    import datasets

    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"problems: {source} is not a file (a .json/.jsonl file in the {benchmark} schema)")
        if path.suffix not in (".json", ".jsonl"):
            raise UserError(f"problems: {source} must end in .json or .jsonl")
        data = datasets.load_dataset("json", data_files=str(path), split=split or "train", cache_dir=cache_dir)
    else:
        if (benchmark, variant) not in HUB:
            allowed = ", ".join(v for b, v in HUB if b == benchmark)
            raise UserError(f"variant: {variant!r} is not one of {allowed} for {benchmark}")
        name, config, default_split = HUB[(benchmark, variant)]
        try:
            data = datasets.load_dataset(name, config, split=split or default_split, cache_dir=cache_dir)
        except (ConnectionError, FileNotFoundError, OSError) as error:
            raise UserError(f"problems: cannot load {name} ({str(error).splitlines()[0][:200]}); the "
                            "hub needs a network (HF_DATASETS_OFFLINE unset) or a cached copy") from None
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return to_problems(benchmark, data)


def _need(record: Mapping[str, Any], fields: tuple[str, ...], benchmark: str) -> None:
    missing = [f for f in fields if f not in record or record[f] is None]
    if missing:
        raise UserError(f"{benchmark} task {record.get('task_id')!r}: missing field(s) {', '.join(missing)}")
