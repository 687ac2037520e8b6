"""How a trial's Ray Train reports reach Tune, each checkpoint as one Tune can hand back.

Ray's ``TuneReportCallback`` forwards metrics only (a checkpoint's path becomes a metric), so
Tune would hold no checkpoint for a trial and Population Based Training would have nothing to
clone. Here the callback, running in the Ray Train controller, puts each report (metrics and
the checkpoint's path) on a one-slot queue; the trial function's own thread takes it and calls
``tune.report`` with a *pointer* checkpoint: a directory holding one small JSON that names the
Ray Train checkpoint (trial, run, path, step). Tune persists the pointer and hands it back where
it matters (PBT's exploit step, a retried trial, a restored sweep); the weights stay where Ray
Train wrote them, written once.

The queue has one slot, so training waits at each report until Tune has taken the previous
one: a scheduler's stop or pause decision lands before the trial trains far past it.

The report of the last step goes to Tune without its clock (``step``, ``tokens``): schedulers act
on nothing there, so PBT does not make a finished trial clone another only to re-evaluate the copy.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ray import tune
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

POINTER_FILE = "xdlm_checkpoint_pointer.json"
POLL_S = 0.2
CLOCKS = ("step", "tokens")

T = TypeVar("T")


@dataclass(frozen=True)
class Pointer:
    """Where a trial's Ray Train checkpoint is: what Tune stores as that trial's checkpoint."""

    trial_id: str
    run_name: str
    checkpoint: str
    step: int | None


def write_pointer(directory: str, pointer: Pointer) -> None:
    with open(os.path.join(directory, POINTER_FILE), "w") as f:
        json.dump(asdict(pointer), f)


def read_pointer(checkpoint) -> Pointer | None:
    """The pointer inside a Tune checkpoint (``tune.get_checkpoint()``), or None without one."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        path = os.path.join(directory, POINTER_FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return Pointer(**json.load(f))


class ReportChannel(UserCallback):
    """Runs in the Ray Train controller: every report goes on the trial's queue."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        self.queue.put({"metrics": dict(metrics[0]), "checkpoint": checkpoint.path if checkpoint else None})


def report_to_tune(item: dict[str, Any], trial_id: str, run_name: str, last_step: int) -> None:
    metrics = item["metrics"]
    step = metrics.get("step")
    if step is not None and step >= last_step:
        metrics = {key: value for key, value in metrics.items() if key not in CLOCKS}
    if item["checkpoint"] is None:
        tune.report(metrics)
        return
    pointer = Pointer(trial_id, run_name, item["checkpoint"], int(step) if step is not None else None)
    with tempfile.TemporaryDirectory(prefix="xdlm-pointer-") as directory:
        write_pointer(directory, pointer)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def fit_reporting_to_tune(fit: Callable[[list], T], trial_id: str, run_name: str, last_step: int) -> T:
    """Call ``fit(callbacks)`` (a Ray Train run to ``last_step``) in a helper thread and forward
    its reports to Tune from this one, the trial function's thread, where ``tune.report`` belongs."""
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fit([ReportChannel(queue)])
        except BaseException as err:  # handed to the trial thread below
            outcome["error"] = err

    thread = threading.Thread(target=run, name=f"xdlm-trial-{trial_id}", daemon=True)
    thread.start()
    while True:
        finished = not thread.is_alive()  # read before the get: a last report may still be queued
        try:
            item = queue.get(timeout=POLL_S)
        except Empty:
            if finished:
                break
            continue
        report_to_tune(item, trial_id, run_name, last_step)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
