"""Checks of command-line arguments shared by the ``xdlm`` commands."""

from __future__ import annotations

import os

from xdlm.errors import UserError


def check_writable(path: str, flag: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise UserError(f"{flag}: cannot write {path} (not a writable file path)")


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: a comma-separated list of numbers, got {text!r}") from None
