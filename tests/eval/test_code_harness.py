"""Code evaluation without a model: problems, the paper's prompts, extraction, pass@k, MLflow."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from xdlm.errors import UserError
from xdlm.eval.code.extract import extract_humaneval, extract_mbpp
from xdlm.eval.code.harness import (
    TABLE_COLUMNS,
    constant_generator,
    evaluate,
    log_report,
    pass_at_k,
    reference_generator,
)
from xdlm.eval.code.problems import load_problems
from xdlm.eval.code.prompts import build_prompt
from xdlm.eval.code.sandbox import SandboxLimits

DATA = Path(__file__).parent / "data"
LIMITS = SandboxLimits(wall_s=1.0)


@pytest.fixture(scope="module")
def mbpp(tmp_path_factory):
    return load_problems("mbpp", str(DATA / "mbpp_tiny.jsonl"), cache_dir=str(tmp_path_factory.mktemp("hf")))


@pytest.fixture(scope="module")
def humaneval(tmp_path_factory):
    return load_problems("humaneval", str(DATA / "humaneval_tiny.jsonl"), cache_dir=str(tmp_path_factory.mktemp("hf")))


def test_pass_at_k_is_the_chance_a_k_subset_holds_a_pass():
    for n, c, k in [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 2), (6, 3, 4), (4, 0, 3), (7, 7, 2)]:
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(outcomes, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_loaders_read_each_schema_through_datasets(mbpp, humaneval, tmp_path):
    assert [p.task_id for p in mbpp] == ["601", "602", "603", "604"]
    first = mbpp[0]
    assert first.description.startswith("Write a function to return the sum of the squares")
    assert first.test_list[1] == "assert sum_squares([]) == 0" and first.tests.count("assert") == 3
    assert mbpp[2].tests.startswith("SKIP = set('u')\n")  # test_setup_code runs before the asserts
    sanitized = load_problems("mbpp", str(DATA / "mbpp_sanitized_tiny.jsonl"), cache_dir=str(tmp_path))
    assert sanitized[0].description == first.description and sanitized[0].tests.startswith("import math\n")
    assert humaneval[0].entry_point == "running_max" and humaneval[0].tests.rstrip().endswith("check(running_max)")
    assert len(load_problems("humaneval", str(DATA / "humaneval_tiny.jsonl"), limit=2, cache_dir=str(tmp_path))) == 2


def test_loader_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(UserError, match="benchmark"):
        load_problems("apps", str(DATA / "mbpp_tiny.jsonl"))
    with pytest.raises(UserError, match="not a file"):
        load_problems("mbpp", str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": 1, "text": "x", "code": "pass"}) + "\n")
    with pytest.raises(UserError, match="test_list"):
        load_problems("mbpp", str(bad), cache_dir=str(tmp_path / "hf"))
    with pytest.raises(UserError, match="variant"):
        load_problems("humaneval", variant="sanitized")


def test_mbpp_prompt_is_the_papers_three_shot_template(mbpp):
    prompt = build_prompt(mbpp[0])
    assert prompt.startswith("You are an expert Python programmer, and here is your task: Write a function to find "
                             "the similar elements from the given two tuple lists. Your code should pass these tests:"
                             "\n\n assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n")
    assert "\n[BEGIN]\n 'def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))" in prompt
    assert prompt.count("[DONE]") == 3 and prompt.count("[BEGIN]") == 4
    assert prompt.endswith("\n[DONE] \n\n \nYou are an expert Python programmer, and here is your task: Write a "
                           "function to return the sum of the squares of a list of integers. Your code should pass "
                           "these tests:\n\n assert sum_squares([1, 2, 3]) == 14\nassert sum_squares([]) == 0\n"
                           "assert sum_squares([-4]) == 16  \n\n[BEGIN]\n")


def test_humaneval_prompt_is_the_problem_prompt(humaneval):
    assert build_prompt(humaneval[1]) == humaneval[1].description


def test_mbpp_extraction():
    assert extract_mbpp(" 'def f(x):\r\n    return x' \n[DONE] \n\n You are an expert") == "def f(x):\n    return x\n"
    assert extract_mbpp("```python\ndef f():\n    return 1\n```\nThen test it.") == "def f():\n    return 1\n"
    assert extract_mbpp("junk [BEGIN]\n 'def my\\_f(): pass' [DONE]") == "def my_f(): pass\n"
    assert extract_mbpp("def g():\n    return 2\n") == "def g():\n    return 2\n"  # no stop word at all


def test_humaneval_extraction():
    body = "    return x + 1\n"
    for tail in ("\ndef other():\n    pass\n", "\nprint(f(1))\n", "\nif __name__ == '__main__':\n    f(1)\n",
                 "\n\n\n    stray = 1\n", "\n```\nExplanation"):
        assert extract_humaneval(body + tail) == body
    assert extract_humaneval("   return x\n") == "    return x\n"  # a space eaten by the prompt's tokenization
    assert extract_humaneval("```python\n    y = x\n\n    return y\n```") == "    y = x\n\n    return y\n"


def test_reference_answers_all_pass_and_wrong_ones_fail(mbpp, humaneval):
    for problems in (mbpp, humaneval):
        report = evaluate(problems, reference_generator(problems), steps=32, limits=LIMITS)
        assert report.pass_at_1 == 1.0, [(o.task_id, o.detail) for o in report.outcomes]
        assert report.counts["passed"] == len(problems)
    wrong = evaluate(mbpp, constant_generator(" 'def sum_squares(nums):\r\n    return 0' \n[DONE]"), limits=LIMITS)
    assert wrong.pass_at_1 == 0.0
    # Only task 601 defines sum_squares: its asserts fail; the others call names never defined.
    assert wrong.counts == {"passed": 0, "syntax_error": 0, "wrong_answer": 1, "timeout": 0, "crash": 3}
    assert "NameError" in next(o.detail for o in wrong.outcomes if o.task_id == "602")


def test_samples_categories_and_mlflow(humaneval, tmp_path):
    """Two samples per problem: the right body, then one of four wrong ones; logged to a real store."""
    wrong = {"Tiny/0": "    return values\n", "Tiny/1": "    return (\n", "Tiny/2": "    while True:\n        pass\n"}
    right = reference_generator(humaneval)
    seen: dict[str, int] = {}

    def generate(prompts, steps):
        assert steps == 8
        out = []
        for prompt in prompts:
            problem = next(p for p in humaneval if p.description == prompt)
            first = seen.setdefault(problem.task_id, 0) == 0
            seen[problem.task_id] += 1
            out.append(right([prompt], steps)[0] if first else wrong[problem.task_id])
        return out

    report = evaluate(humaneval, generate, steps=8, samples=2, workers=2, batch_size=4, limits=LIMITS)
    assert report.pass_at_1 == pytest.approx(0.5)
    assert report.counts == {"passed": 3, "syntax_error": 1, "wrong_answer": 1, "timeout": 1, "crash": 0}

    from xdlm.tracking.runs import make_client, start_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = start_run(uri, "code-eval-test", "humaneval")
    client = make_client(uri)
    log_report(client, run_id, report)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["code/humaneval/pass_at_1_8steps"] == pytest.approx(0.5)
    assert metrics["code/humaneval/timeout_8steps"] == 1.0 and metrics["code/humaneval/crash_8steps"] == 0.0
    assert client.get_run(run_id).data.tags["code.sandbox.guard"] == "audit hook"
    path = client.download_artifacts(run_id, report.table_name, str(tmp_path / "dl"))
    table = json.loads(Path(path).read_text())
    assert tuple(table["columns"]) == TABLE_COLUMNS and len(table["data"]) == 6
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert {(r["task_id"], r["sample"], r["category"]) for r in rows if not r["passed"]} == {
        ("Tiny/0", 1, "wrong_answer"), ("Tiny/1", 1, "syntax_error"), ("Tiny/2", 1, "timeout")}


def test_bad_arguments_are_user_errors(mbpp):
    with pytest.raises(UserError, match="steps"):
        evaluate(mbpp, constant_generator(""), steps=0)
    with pytest.raises(ValueError, match="completions"):
        evaluate(mbpp, lambda prompts, steps: [], limits=LIMITS)
