"""The code inside a completion, by the rules of the paper's evaluation (OpenCompass).

MBPP (the completion continues after ``[BEGIN]\\n``): cut at ``[DONE]``; take what a markdown
fence or a ``[BEGIN]`` the model wrote again encloses; drop the quotes the few-shot answers put
around the code; undo markdown's ``\\_``; ``\\r\\n`` becomes ``\\n``.

HumanEval (the completion continues the function body): cut at the first blank-line triple or
closing fence, then keep lines while they are indented or empty: the first top-level line (a new
``def``, a ``print``, ``if __name__``, prose) ends the body. A body that starts with three
spaces gets a fourth (a tokenizer that merged the first space into the prompt). A completion that
opens with a markdown fence has the fence removed first.
"""

from __future__ import annotations

import re

from xdlm.eval.code.problems import MBPP, Problem

_FENCED = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)


def extract_mbpp(completion: str) -> str:
    text = completion.replace("\r\n", "\n")
    text = re.split(r"\[DONE\]", text, maxsplit=1)[0]
    if "[BEGIN]" in text:
        text = text.split("[BEGIN]", 1)[1]
    fenced = _FENCED.search(text)
    if fenced:
        text = fenced.group(1)
    text = text.replace("\\_", "_").strip()
    if text.startswith("'"):
        text = text[1:]
    if text.endswith("'"):
        text = text[:-1]
    return text.strip("\n") + "\n" if text.strip() else ""


def extract_humaneval(completion: str) -> str:
    text = completion.replace("\r\n", "\n")
    opening = re.match(r"\s*```[ \t]*\w*[ \t]*\n", text)
    if opening:
        text = text[opening.end():]
    if text.startswith("   ") and not text.startswith("    "):
        text = " " + text
    text = text.split("\n\n\n", 1)[0].split("\n```", 1)[0]
    body = []
    for line in text.split("\n"):
        if line and not line[0].isspace():
            break
        body.append(line)
    return "\n".join(body).rstrip() + "\n"


def extract_code(problem: Problem, completion: str) -> str:
    return extract_mbpp(completion) if problem.benchmark == MBPP else extract_humaneval(completion)
