"""Generate -> extract -> execute -> pass@1 and failure categories -> MLflow.

``generate(prompts, steps) -> completions`` is any sampler (the LLaDA-style one over a model, or
a reference generator in tests); each of the n samples of a problem is one prompt. Candidates run
in the sandbox on a small thread pool (each one is its own subprocess, so threads suffice).

pass@k, with n samples of a problem of which c pass (Chen et al., 2021, unbiased)::

    pass@k = 1 - C(n - c, k) / C(n, k)        (pass@1 = c / n)

averaged over problems. MLflow names (``@`` is not allowed in MLflow metric names)::

    code/<bench>/pass_at_1_<S>steps           mean pass@1 at S sampler steps
    code/<bench>/<category>_<S>steps          candidates per outcome category (all five, 0 included)
    code/<bench>/outcomes_<S>steps.json       table: task_id, sample, passed, category, detail, completion, code
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from xdlm.errors import UserError
from xdlm.eval.code.extract import extract_code
from xdlm.eval.code.problems import Problem
from xdlm.eval.code.prompts import build_prompt
from xdlm.eval.code.sandbox import CATEGORIES, SandboxLimits, run_candidate

Generate = Callable[[list[str], int], list[str]]
DEFAULT_STEPS = 32
TABLE_COLUMNS = ("task_id", "sample", "passed", "category", "detail", "completion", "code")


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n - c, k) / C(n, k): the chance that at least one of k of the n samples passes."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class Outcome:
    task_id: str
    sample: int
    passed: bool
    category: str
    detail: str
    completion: str
    code: str
    duration_s: float


@dataclass
class CodeEvalReport:
    benchmark: str
    steps: int
    samples: int
    outcomes: list[Outcome]
    generate_s: float
    execute_s: float
    isolation: dict = field(default_factory=dict)

    @property
    def pass_at_1(self) -> float:
        return self.pass_at(1)

    def pass_at(self, k: int) -> float:
        per_task: dict[str, list[bool]] = {}
        for o in self.outcomes:
            per_task.setdefault(o.task_id, []).append(o.passed)
        if not per_task:
            return 0.0
        return sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task)

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(o.category for o in self.outcomes)
        return {c: found.get(c, 0) for c in CATEGORIES}

    def metrics(self) -> dict[str, float]:
        prefix, suffix = f"code/{self.benchmark}", f"_{self.steps}steps"
        out = {f"{prefix}/pass_at_1{suffix}": self.pass_at_1}
        out.update({f"{prefix}/{c}{suffix}": float(n) for c, n in self.counts.items()})
        return out

    def table(self) -> dict[str, list[Any]]:
        rows = [asdict(o) for o in self.outcomes]
        return {c: [r[c] for r in rows] for c in TABLE_COLUMNS}

    @property
    def table_name(self) -> str:
        return f"code/{self.benchmark}/outcomes_{self.steps}steps.json"


def evaluate(problems: Sequence[Problem], generate: Generate, *, steps: int = DEFAULT_STEPS, samples: int = 1,
             workers: int = 2, batch_size: int = 8, limits: SandboxLimits | None = None) -> CodeEvalReport:
    """Generate ``samples`` completions per problem at ``steps`` sampler steps and run them all."""
    if not problems:
        raise UserError("problems: none to evaluate")
    benchmarks = {p.benchmark for p in problems}
    if len(benchmarks) != 1:
        raise UserError(f"problems: one benchmark at a time, got {', '.join(sorted(benchmarks))}")
    for name, value, low in (("steps", steps, 1), ("samples", samples, 1), ("workers", workers, 1),
                             ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"{name}: must be an integer >= {low}, got {value!r}")
    limits = (limits or SandboxLimits()).validate()

    jobs = [(p, s) for p in problems for s in range(samples)]
    prompts = [build_prompt(p) for p, _ in jobs]
    start = time.monotonic()
    completions: list[str] = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i:i + batch_size]
        out = list(generate(batch, steps))
        if len(out) != len(batch) or not all(isinstance(c, str) for c in out):
            raise ValueError(f"generate returned {len(out)} completions for {len(batch)} prompts (want one string each)")
        completions += out
    generate_s = time.monotonic() - start

    codes = [extract_code(p, c) for (p, _), c in zip(jobs, completions, strict=True)]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xdlm-sandbox") as pool:
        results = list(pool.map(lambda j: run_candidate(jobs[j][0].program(codes[j]), jobs[j][0].tests, limits),
                                range(len(jobs))))
    execute_s = time.monotonic() - start

    outcomes = [Outcome(p.task_id, s, r.passed, r.category, r.detail, c, code, round(r.duration_s, 3))
                for (p, s), c, code, r in zip(jobs, completions, codes, results, strict=True)]
    isolation = next((r.isolation for r in results if r.isolation), {})
    return CodeEvalReport(next(iter(benchmarks)), steps, samples, outcomes, generate_s, execute_s, isolation)


def log_report(client, run_id: str, report: CodeEvalReport, step: int | None = None) -> None:
    """Metrics, the outcome table and how candidates were confined, on an MLflow run.

    ``client`` is an ``mlflow.MlflowClient`` (``xdlm.tracking.runs.make_client``); ``step`` is
    the training step of the weights evaluated, when there is one.
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step or 0) for k, v in report.metrics().items()])
    client.log_table(run_id, data=report.table(), artifact_file=report.table_name)
    tags = {f"code.sandbox.{k}": str(v)[:500] for k, v in report.isolation.items()}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


# Reference generators: they stand in for a model in tests and smoke runs.

def reference_generator(problems: Sequence[Problem]) -> Generate:
    """Answers each prompt with its problem's own solution, written as a model would."""
    by_prompt = {build_prompt(p): p for p in problems}

    def generate(prompts: list[str], steps: int) -> list[str]:
        return [_as_completion(by_prompt[p]) for p in prompts]

    return generate


def constant_generator(text: str) -> Generate:
    """Answers every prompt with ``text`` (a wrong answer, an infinite loop, ...)."""
    return lambda prompts, steps: [text] * len(prompts)


def _as_completion(problem: Problem) -> str:
    if problem.benchmark == "mbpp":
        return f" '{problem.reference}' \n[DONE] \n\n You are an expert"  # what a sampler runs on past the stop word
    return problem.reference + "\n\n\ndef another():\n    pass\n"
