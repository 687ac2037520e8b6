"""The configuration reference (docs/configuration.md), generated from the dataclasses themselves.

Field documentation is the string literal written under each field; defaults come from the
dataclass, so the reference cannot drift from the code (a test compares it with the file).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

from xdlm.config import JobConfig


def _field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:] + [None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(getattr(following, "value", None), ast.Constant) \
                    and isinstance(following.value.value, str):
                docs[node.target.id] = " ".join(following.value.value.split())
    if not docs and cls.__doc__ and "Attributes:" in cls.__doc__:
        current = None
        for line in cls.__doc__.split("Attributes:", 1)[1].splitlines():
            stripped = line.strip()
            head, _, rest = stripped.partition(":")
            names = [n.strip() for n in head.split(",")]
            if rest and all(n.isidentifier() for n in names):
                for name in names:
                    docs[name] = rest.strip()
                current = names
            elif stripped and current:
                for name in current:
                    docs[name] += " " + stripped
    return docs


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return ""
    text = "null" if value is None else repr(value).replace("|", "\\|")
    return f"`{text}`"


def reference_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the dataclasses in `platform/xdlm/` by `xdlm config --reference`; do not edit.",
        "Job files in `jobs/` override these defaults; `key=value` arguments override the file.",
        "",
    ]
    sections = [(f.name, f) for f in dataclasses.fields(JobConfig)]
    while sections:
        name, section = sections.pop(0)
        value = section.default_factory() if section.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if not dataclasses.is_dataclass(value):
            continue
        cls = type(value)
        docs = _field_docs(cls)
        lines += [f"## `{name}`", "", "| key | default | meaning |", "|---|---|---|"]
        nested = []
        for f in dataclasses.fields(cls):
            lines.append(f"| `{name}.{f.name}` | {_default(f)} | {docs.get(f.name, '').replace('|', '/')} |")
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory()):  # type: ignore[misc]
                nested.append((f"{name}.{f.name}", f))
        sections[:0] = nested  # a nested section (data.markov) right after its parent
        lines.append("")
    top = _field_docs(JobConfig)
    lines += ["## top level", "", "| key | default | meaning |", "|---|---|---|",
              f"| `name` | `{JobConfig().name!r}` | {top.get('name', '')} |", ""]
    return "\n".join(lines)
