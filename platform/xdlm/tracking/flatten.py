"""Turn nested configs into the flat ``str -> str`` params MLflow stores.

MLflow params are flat, string-valued, immutable per run, and limited in size (key <= 250 chars,
value <= 6000 chars; longer values are rejected by some stores and truncated by others). A
training config is a nested dict (or an OmegaConf ``DictConfig``), so ``{"optim": {"lr": 3e-4}}``
becomes ``{"optim.lr": "0.0003"}``: dotted keys read like the OmegaConf override that set them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    path_not_unique,
)

# What MLflow accepts in a param/metric/tag key (POSIX): alphanumerics, _ - . space : /
_INVALID_KEY_CHARS = re.compile(r"[^\w.\- :/]")
_TRUNCATION_MARK = "...[truncated]"


def to_plain_container(value: Any) -> Any:
    """OmegaConf configs and dataclasses -> plain dicts/lists; anything else unchanged.

    Interpolations are resolved; missing values (``???``) stay as the literal ``???`` instead of
    raising, because logging a config must not fail on a field the run never reads.
    """
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def sanitize_key(key: str) -> str:
    """Make ``key`` a valid MLflow key: replace forbidden characters, cap the length."""
    key = _INVALID_KEY_CHARS.sub("_", str(key))[:MAX_ENTITY_KEY_LENGTH] or "_"
    if path_not_unique(key):  # MLflow also rejects keys that normalize as paths: "a//b", "../x"
        key = key.replace("/", "_")
        if path_not_unique(key):  # "." or ".."
            key = "_" + key
    return key


def truncate_value(value: str, limit: int = MAX_PARAM_VAL_LENGTH) -> str:
    """Cap ``value`` at ``limit`` characters, marking the cut so nobody mistakes it for the value."""
    if len(value) <= limit:
        return value
    return value[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def stringify(value: Any) -> str:
    """A param value as MLflow will show it: ``str()`` of scalars, ``repr``-like for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form: 0.0003, not 0.00030000000000000003
    return str(value)


def flatten_params(nested: Any, sep: str = ".", prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping into ``{"a.b.c": "value"}`` ready for ``log_batch``.

    Mappings recurse; lists, tuples and other values are stringified whole (``"[1, 2]"``): a
    list of layer sizes reads better as one param than as ``sizes.0``, ``sizes.1``... An empty
    mapping is kept as ``"{}"`` so its key still shows up. Keys are sanitized, values truncated
    to MLflow's limit.
    """
    nested = to_plain_container(nested)
    flat: dict[str, str] = {}
    if not isinstance(nested, Mapping):
        if prefix:
            flat[sanitize_key(prefix)] = truncate_value(stringify(nested))
        return flat
    if not nested and prefix:
        flat[sanitize_key(prefix)] = "{}"
        return flat
    for key, value in nested.items():
        full_key = f"{prefix}{sep}{key}" if prefix else str(key)
        value = to_plain_container(value)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, sep=sep, prefix=full_key))
        else:
            flat[sanitize_key(full_key)] = truncate_value(stringify(value))
    return flat


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as MLflow accepts them: sanitized keys, string values capped at the tag limit."""
    return {
        sanitize_key(key): truncate_value(stringify(value), MAX_TAG_VAL_LENGTH)
        for key, value in to_plain_container(tags).items()
    }
