"""Where a sweep keeps its things, and the small state file that makes ``--resume NAME`` and
``report NAME`` work from the name alone:

    <storage>/sweeps/<name>/sweep.json       spec, resolved base job, MLflow parent run, tracking URI
    <storage>/sweeps/<name>/tune/            Ray Tune experiment (what Tuner.restore reads)
    <storage>/sweeps/<name>/trials/<run>/    each trial's Ray Train run (checkpoints, run record,
                                             trial.json, trial_done.json once it finished)
    <storage>/sweeps/<name>/trial_starts.jsonl   one line per trainable start (audit of re-runs)
    <storage>/sweeps/<name>/report/          the last ``xdlm sweep report`` files

Trial runs are named ``<sweep>-<tune trial id>``: Tune keeps trial ids in its experiment state,
so a restored trial finds its Ray Train run (and its latest checkpoint) under the same name.
Under Population Based Training a trial that clones another's checkpoint continues in a new
*segment*, its own Ray Train run ``<sweep>-<trial id>-pbt<n>`` started from that checkpoint with
the mutated hyperparameters; ``trial.json`` in each run says whose trial and which segment it is.
Paths are absolute: Tune runs trainables in another working directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from xdlm.checkpoint import RUN_RECORD
from xdlm.config import ConfigError

SWEEP_STATE_FILE = "sweep.json"
TUNE_DIR = "tune"
TRIALS_DIR = "trials"
DONE_MARKER = "trial_done.json"
TRIAL_FILE = "trial.json"
STARTS_LOG = "trial_starts.jsonl"
REPORT_DIR = "report"


def sweeps_root(storage_path: str) -> Path:
    if "://" in storage_path:
        raise ConfigError(f"storage_path: sweeps keep their state on a local or shared filesystem, got {storage_path!r}")
    return Path(storage_path).expanduser().resolve() / "sweeps"


def sweep_dir(storage_path: str, name: str) -> Path:
    return sweeps_root(storage_path) / name


def locate(name_or_path: str, storage_path: str = "runs") -> Path:
    """A sweep by name (under ``storage_path``) or by the path of its directory."""
    candidate = Path(name_or_path).expanduser()
    if (candidate / SWEEP_STATE_FILE).is_file():
        return candidate.resolve()
    by_name = sweep_dir(storage_path, name_or_path)
    if (by_name / SWEEP_STATE_FILE).is_file():
        return by_name
    known = sorted(p.parent.name for p in sweeps_root(storage_path).glob(f"*/{SWEEP_STATE_FILE}"))
    raise ConfigError(
        f"no sweep named {name_or_path!r} under {sweeps_root(storage_path)}"
        + (f"; sweeps there: {', '.join(known)}" if known else "")
        + " (use --storage PATH for sweeps kept elsewhere)"
    )


def trial_run_name(sweep_name: str, trial_id: str, segment: int = 0) -> str:
    return f"{sweep_name}-{trial_id}" + (f"-pbt{segment}" if segment else "")


def donor_label(init_from: dict[str, Any]) -> str:
    """``<donor run>@step<n>``: where a PBT segment started (MLflow tag, report note)."""
    return f"{init_from['run_name']}@step{init_from['step']}"


def write_trial_info(run_dir: Path, info: dict[str, Any]) -> None:
    """``{trial_id, segment, params, init_from}`` of the run in ``run_dir`` (once, atomically)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{TRIAL_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str))
    os.replace(tmp, run_dir / TRIAL_FILE)


def trial_segments(directory: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """trial id -> its runs (run dir, trial.json) in segment order."""
    segments: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in (directory / TRIALS_DIR).glob(f"*/{TRIAL_FILE}"):
        info = json.loads(path.read_text())
        segments.setdefault(info["trial_id"], []).append((path.parent, info))
    return {trial: sorted(runs, key=lambda run: run[1]["segment"]) for trial, runs in sorted(segments.items())}


def _run_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_RECORD
    return json.loads(path.read_text()).get("mlflow_run_id") if path.is_file() else None


def trial_records(directory: Path) -> dict[str, dict[str, Any]]:
    """trial id -> its current run {run_dir, run_id, done (final payload or None), segment, params
    (the segment's Tune config), init_from, replaced (run ids of earlier PBT segments)} for every
    trial that started."""
    records = {}
    for trial_id, runs in trial_segments(directory).items():
        run_dir, info = runs[-1]
        records[trial_id] = {"run_dir": str(run_dir), "run_id": _run_id(run_dir), "done": read_done(run_dir),
                             "segment": info["segment"], "params": info.get("params") or {},
                             "init_from": info.get("init_from"),
                             "replaced": [run_id for d, _ in runs[:-1] if (run_id := _run_id(d))]}
    return records


def write_state(directory: Path, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{SWEEP_STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    os.replace(tmp, directory / SWEEP_STATE_FILE)


#: What a sweep's state file must hold for --resume and report to work from it.
STATE_KEYS = ("name", "sweep_dir", "base_job", "tracking_uri", "experiment", "spec")


def read_state(directory: Path) -> dict[str, Any]:
    """The sweep's saved state; a torn or hand-edited file is a ``ConfigError`` naming what is
    wrong, not a traceback."""
    path = directory / SWEEP_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"sweep state {path} cannot be read ({err})") from None
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ConfigError(f"sweep state {path} lacks {', '.join(missing)}: it was not written by "
                          "xdlm sweep, or was edited; start the sweep again under another name")
    return state


def read_done(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / DONE_MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def write_done(run_dir: Path, payload: dict[str, Any]) -> None:
    tmp = run_dir / f".{DONE_MARKER}.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, run_dir / DONE_MARKER)


def log_start(directory: Path, trial_id: str, resumed: bool, run_name: str) -> None:
    """Append-only audit: every time a trainable starts (tests use it to see what re-ran)."""
    with open(directory / STARTS_LOG, "a") as f:
        f.write(json.dumps({"trial_id": trial_id, "time": time.time(), "resumed_run": resumed,
                            "run_name": run_name}) + "\n")


def read_starts(directory: Path) -> list[dict[str, Any]]:
    path = directory / STARTS_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
