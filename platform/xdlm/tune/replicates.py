"""Replicates: each configuration of a sweep trained with several seeds, and who is whose.

``search.replicates: R`` adds one more grid key to the Tune config, ``xdlm.replicate`` in
0..R-1, so Tune makes R trials of every configuration. Replicate r trains with
``train.seed = s + r`` (model initialisation, the noise: times and z_t) and ``data.seed = d + r``
(the batch order), s and d the base job's seeds: replicate 0 is the run a sweep without
replicates would make.

A configuration is identified by its searched values without the replicate key and without seed
keys (``train.seed``, ``data.seed``), so a space that searches a seed grid itself gives
replicates as well. ``config_id`` is a short hash of those values: the same on every machine,
and what the report groups trials by and tags their MLflow runs with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

REPLICATE_KEY = "xdlm.replicate"
"""The Tune config key holding the replicate index (absent without replicates)."""
SEED_KEYS = ("train.seed", "data.seed")
"""Job keys a replicate sets; a space key setting one of them is itself a replicate key."""


def seed_keys_in_space(space_keys: list[str], values_of: dict[str, list[Any]]) -> list[str]:
    """The space keys that set a seed: ``train.seed``/``data.seed`` themselves, or a ``train`` /
    ``data`` key whose listed mapping values hold ``seed``. ``values_of``: listed values per key."""
    found = []
    for key in space_keys:
        if key in SEED_KEYS:
            found.append(key)
        elif key in ("train", "data") and any(isinstance(v, dict) and "seed" in v for v in values_of.get(key, [])):
            found.append(f"{key}.seed (in space.{key})")
    return found


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's Tune config without the replicate key: the values its job gets from the space."""
    return {key: value for key, value in config.items() if key != REPLICATE_KEY}


def replicate_index(config: dict[str, Any]) -> int:
    return int(config.get(REPLICATE_KEY, 0))


def seeds_for(train_seed: int, data_seed: int, replicate: int) -> dict[str, int]:
    """The seeds of replicate ``replicate`` of a job with these base seeds (dotted key -> value)."""
    if replicate < 0:
        raise ValueError(f"replicate must be >= 0, got {replicate}")
    return {"train.seed": train_seed + replicate, "data.seed": data_seed + replicate}


@dataclass(frozen=True)
class Identity:
    """Which configuration a trial is, and which replicate of it."""

    config_id: str
    replicate: str
    """``"0"``, ``"1"``, ... from ``search.replicates``; ``"train.seed=3"`` from a seed key in the space."""
    values: dict[str, Any]
    """The configuration's searched values (no replicate, no seed keys)."""


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def identity(config: dict[str, Any]) -> Identity:
    """The configuration and replicate of the trial with Tune config ``config``."""
    values = {k: v for k, v in config.items() if k != REPLICATE_KEY and k not in SEED_KEYS}
    digest = hashlib.sha1(json.dumps(_canonical(values), sort_keys=True).encode()).hexdigest()[:8]
    seeds = [f"{k}={config[k]}" for k in SEED_KEYS if k in config]
    replicate = ",".join(seeds) if seeds and REPLICATE_KEY not in config else str(replicate_index(config))
    return Identity(f"c{digest}", replicate, values)


def config_label(values: dict[str, Any]) -> str:
    """``k=0.1, lr=0.001`` for a configuration's values (last part of each dotted key)."""
    if not values:
        return "base job"
    parts = []
    for key, value in values.items():
        shown = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    return ", ".join(parts)
