"""Hyperparameter sweeps of XDLM jobs with Ray Tune, tracked as nested MLflow runs.

- ``sweep.load_sweep(path, overrides)``: the ``Sweep`` (spec + base job), every check that needs
  no Ray passed; ``spec.load_spec`` alone gives the spec with only its own fields checked.
- ``runner.run_sweep(path, overrides, address)`` / ``runner.resume_sweep(name, storage_path)``.
- ``report.build_report(sweep_dir)``: the trial table and the Pareto frontier.

Modules, bottom up: ``replicates`` (seeds and identity of a configuration's replicates),
``stats`` (mean, Student-t interval), ``spec`` (the sweep file's schema), ``clock`` (scheduler
time units), ``space`` (search space -> Tune domains, a trial's job), ``metrics`` (what trials
report), ``sweep`` (loading and validation), ``resources`` (the concurrency rule), ``algorithms``
(searcher, scheduler), ``layout`` (the sweep's files), ``channel`` (Ray Train reports to Tune),
``trainable`` (one trial), ``aggregate`` (replicates pooled, the best on the means), ``pareto``,
``settle`` (Tune's verdict to MLflow), ``report``, ``runner`` (the driver).

See docs/sweeps.md.
"""

from xdlm.tune.spec import SweepSpec
from xdlm.tune.sweep import Sweep, load_sweep

__all__ = ["Sweep", "SweepSpec", "load_sweep"]
