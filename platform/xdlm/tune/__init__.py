"""Hyperparameter sweeps of XDLM jobs with Ray Tune, tracked as nested MLflow runs.

- ``spec.load_sweep(path, overrides)``: the validated ``SweepSpec`` (no Ray needed).
- ``runner.run_sweep(path, overrides, address)`` / ``runner.resume_sweep(name, storage_path)``.
- ``report.build_report(sweep_dir)``: the trial table and the Pareto frontier.

See docs/sweeps.md.
"""

from xdlm.tune.spec import SweepSpec, load_sweep

__all__ = ["SweepSpec", "load_sweep"]
