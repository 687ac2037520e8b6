"""Prompts as the paper's evaluation builds them.

LLaDA-XDLM evaluates the base model with OpenCompass (``mbpp_gen`` and ``humaneval_gen_base``
through the LLaDA base-model wrapper, 256 new tokens in one 256-token block, ``[DONE]`` as the
stop word for MBPP). For a base model OpenCompass joins the turns of a template with newlines, so:

MBPP, 3-shot (MBPP tasks 2, 3 and 4, as that template writes them)::

    You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\\n\\n {tests}\\n
    [BEGIN]\\n '{code}' \\n[DONE] \\n\\n     <- each example's answer, then the next turn
    ...
    You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\\n\\n {asserts joined by \\n}  \\n
    [BEGIN]\\n                          <- the model continues here

HumanEval: the problem's prompt itself (signature and docstring); the model writes the body.

The examples' code keeps MBPP's own ``\\r\\n`` line ends and the template's spacing: the model
sees exactly the bytes the paper's numbers were measured with.
"""

from __future__ import annotations

from xdlm.eval.code.problems import HUMANEVAL, MBPP, Problem

MBPP_INSTRUCTION = "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n {tests}\n"
MBPP_ANSWER = "[BEGIN]\n '{code}' \n[DONE] \n\n "
MBPP_OPEN_ANSWER = "[BEGIN]\n"
MBPP_STOP = "[DONE]"

# (text, tests as the template writes them, code) of MBPP tasks 2, 3, 4 (its "prompt" split).
MBPP_SHOTS = (
    ("Write a function to find the similar elements from the given two tuple lists.",
     "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
     "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4) \n"
     "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14) ",
     "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res)"),
    ("Write a python function to identify non-prime numbers.",
     "assert is_not_prime(2) == False \nassert is_not_prime(10) == True \nassert is_not_prime(35) == True ",
     "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n"
     "        if n % i == 0:\r\n            result = True\r\n    return result"),
    ("Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
     "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \n"
     "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \n"
     "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35] ",
     "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums"),
)


def mbpp_prompt(problem: Problem) -> str:
    turns = []
    for text, tests, code in MBPP_SHOTS:
        turns += [MBPP_INSTRUCTION.format(text=text, tests=tests), MBPP_ANSWER.format(code=code)]
    tests = "\n".join(problem.test_list) + "  "
    turns += [MBPP_INSTRUCTION.format(text=problem.description, tests=tests), MBPP_OPEN_ANSWER]
    return "\n".join(turns)


def humaneval_prompt(problem: Problem) -> str:
    return problem.description


def build_prompt(problem: Problem) -> str:
    return mbpp_prompt(problem) if problem.benchmark == MBPP else humaneval_prompt(problem)


STOP_WORDS = {MBPP: (MBPP_STOP,), HUMANEVAL: ()}
"""Where a sampler may stop early (the paper cuts MBPP completions at ``[DONE]``)."""
