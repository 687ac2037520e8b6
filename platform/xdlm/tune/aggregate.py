"""Replicates of a configuration pooled: mean and 95 % interval per metric, and which
configuration is best, on the means, with whether that is resolved at this budget.

Only completed trials count (a trial ASHA stopped or one that failed has no final metrics). Two
trials of the same configuration with the same replicate (a grid repeated by ``num_samples``
trains the very same run twice) count once: they are one seed, not two.

"Resolved" is the conservative reading of the intervals: the best configuration is resolved when
its interval on the sweep's metric overlaps no other configuration's. Overlapping intervals do not
prove the two equal; they mean this budget (replicates x training length) cannot tell them apart.
With one replicate there is no interval, so nothing is resolved or unresolved: it is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from xdlm.tune.replicates import config_label, identity
from xdlm.tune.stats import Estimate, estimate, overlap


@dataclass(frozen=True)
class TrialResult:
    """What aggregation needs of one trial."""

    trial_id: str
    config: dict[str, Any]
    """Its Tune config (searched values, and the replicate key with replicates)."""
    completed: bool
    metrics: dict[str, float]


@dataclass
class ConfigSummary:
    """One configuration: its completed replicates and an estimate per metric."""

    config_id: str
    values: dict[str, Any]
    label: str
    trial_ids: list[str] = field(default_factory=list)
    """Every trial of this configuration, whatever its status."""
    counted: dict[str, str] = field(default_factory=dict)
    """Replicate -> the completed trial counted for it."""
    stats: dict[str, Estimate] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.counted)

    def get(self, key: str) -> Estimate | None:
        return self.stats.get(key)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarise(trials: Iterable[TrialResult]) -> tuple[list[ConfigSummary], list[str]]:
    """Configurations in order of first appearance, and notes (duplicates counted once)."""
    configs: dict[str, ConfigSummary] = {}
    values_of: dict[str, dict[str, list[float]]] = {}
    notes = []
    for trial in trials:
        who = identity(trial.config)
        summary = configs.setdefault(who.config_id, ConfigSummary(who.config_id, who.values, config_label(who.values)))
        summary.trial_ids.append(trial.trial_id)
        if not trial.completed:
            continue
        if who.replicate in summary.counted:
            notes.append(f"trial {trial.trial_id} repeats trial {summary.counted[who.replicate]} (same configuration "
                         f"{summary.label}, same seeds): counted once")
            continue
        summary.counted[who.replicate] = trial.trial_id
        for key, value in trial.metrics.items():
            if _finite(value):
                values_of.setdefault(who.config_id, {}).setdefault(key, []).append(float(value))
    for config_id, summary in configs.items():
        summary.stats = {key: estimate(vals) for key, vals in values_of.get(config_id, {}).items()}
    return list(configs.values()), notes


@dataclass(frozen=True)
class BestVerdict:
    """The best configuration on the mean of the sweep's metric, and whether that is resolved."""

    config_id: str | None
    runner_up: str | None = None
    resolved: bool | None = None
    """True: its interval overlaps no other configuration's; False: it overlaps some
    (``overlapping``); None: cannot tell (one configuration, or one replicate somewhere)."""
    overlapping: tuple[str, ...] = ()
    reason: str = ""


def decide_best(configs: list[ConfigSummary], metric: str, mode: str) -> BestVerdict:
    scored = [c for c in configs if c.get(metric) is not None]
    if not scored:
        return BestVerdict(None, reason=f"no completed trial reported {metric}")
    sign = 1 if mode == "min" else -1
    ranked = sorted(scored, key=lambda c: sign * c.get(metric).mean)  # type: ignore[union-attr]
    best = ranked[0]
    if len(ranked) == 1:
        return BestVerdict(best.config_id, reason="only one configuration has results: nothing to compare")
    runner_up = ranked[1]
    verdicts = {c.config_id: overlap(best.get(metric), c.get(metric)) for c in ranked[1:]}  # type: ignore[arg-type]
    if any(v is None for v in verdicts.values()):
        return BestVerdict(best.config_id, runner_up.config_id, None,
                           reason="one replicate gives no confidence interval, so whether the best is better "
                                  "than the others is unknown (search.replicates >= 3 to tell)")
    overlapping = tuple(c for c, v in verdicts.items() if v)
    if overlapping:
        labels = ", ".join(c.label for c in ranked[1:] if c.config_id in overlapping)
        return BestVerdict(best.config_id, runner_up.config_id, False, overlapping,
                           f"not resolved at this budget: its 95 % interval on {metric} overlaps those of {labels}")
    return BestVerdict(best.config_id, runner_up.config_id, True,
                       reason=f"resolved: its 95 % interval on {metric} overlaps no other configuration's "
                              f"(runner-up {runner_up.label})")
