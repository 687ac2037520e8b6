"""What one trial needs, how many trials run at once, and the fail-fast when none fits.

A trial is a Tune *function* trainable (a small actor, ``trainable_cpus``) that starts a Ray
Train run whose workers Ray Train places itself, outside the trial's own reservation. Tune
therefore cannot see the workers' needs: left alone it would start every trial whose trainable
fits, their Train workers would wait for CPUs that other trials hold, and on a small machine
nothing would progress. The sweep bounds concurrency instead:

    max_concurrent = floor(cluster CPUs / (trainable_cpus + num_workers * cpus_per_worker))

(and the same with GPUs when trials use them), capped by ``max_concurrent_trials``. With 2 CPUs,
1 worker x 0.8 CPU + 0.2 trainable = 1.0 CPU per trial: 2 trials at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdlm.config import JobConfig

_EPS = 1e-9


@dataclass(frozen=True)
class TrialResources:
    trainable_cpus: float
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    @property
    def cpus(self) -> float:
        return self.trainable_cpus + self.num_workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.num_workers * self.gpus_per_worker

    def describe(self) -> str:
        gpu = f" + {self.gpus:g} GPUs" if self.gpus else ""
        return (f"{self.cpus:g} CPUs ({self.trainable_cpus:g} for the trial's trainable + {self.num_workers} "
                f"Ray Train workers x {self.cpus_per_worker:g}){gpu}")


def trial_resources(job: JobConfig, trainable_cpus: float) -> TrialResources:
    return TrialResources(trainable_cpus, job.cluster.num_workers, job.cluster.cpus_per_worker,
                          1.0 if job.cluster.use_gpu else 0.0)


def max_concurrent_trials(need: TrialResources, cluster: dict[str, float], cap: int | None) -> int:
    """How many trials can all be placed at once; ``ValueError`` naming the resources if none can."""
    cpus, gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    fits = math.floor(cpus / need.cpus + _EPS)
    if need.gpus:
        fits = min(fits, math.floor(gpus / need.gpus + _EPS))
    if fits < 1:
        raise ValueError(
            f"resources: one trial needs {need.describe()}, but the cluster has {cpus:g} CPUs and "
            f"{gpus:g} GPUs, so no trial can start; lower resources.num_workers / "
            "resources.cpus_per_worker / resources.trainable_cpus or add nodes"
        )
    return min(fits, cap) if cap else fits


def check_pbt_population(population: int, concurrent: int, need: TrialResources) -> None:
    """PBT compares trials that train side by side, so its whole population must run at once:
    with fewer slots, later trials would only start once earlier ones had finished (Tune's
    concurrency limit holds them back instead of pausing), and the population would not be one."""
    if population > concurrent:
        raise ValueError(
            f"scheduler.kind: pbt runs its whole population at once, but {population} trials need "
            f"{population} x {need.describe()} and the cluster fits {concurrent}; lower "
            "search.num_samples (or the grid), lower resources.cpus_per_worker / num_workers, or add nodes"
        )
