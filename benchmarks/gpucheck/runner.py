"""The step runner: each step in its own subprocess, under its own time limit and the global
budget, its result written as soon as it exists.

- A step runs as ``python benchmarks/gpu_check.py --step NAME --result FILE --context FILE``
  (``child_main``) in a new session: a crash, a hang or a poisoned CUDA context loses that step
  only, and the whole process group is killed at the limit.  The step saves partial results to
  OUT_DIR/steps/NAME.json while it runs, so a step stopped at its limit keeps what it measured;
  its output goes to OUT_DIR/logs/NAME.log.
- Limit of a step = min(its own limit (STEPS: GPU / dry run; ``--limit``), budget left).  Once
  fewer than 5 s of ``--budget-s`` are left, the remaining steps are recorded as skipped; if the
  env step fails, every later step is skipped (they need its findings).
- After every step the reports are rewritten atomically (report.py).
- Exit status: 1 if a kernel disagrees with torch (a correctness check, or an AOT compile that
  fails or spills: ``kernel_disagrees``), 2 if another step failed or timed out, else 0.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .common import ENTRY, ROOT, StepContext, write_atomic
from .report import Report, print_summary

#: (name, title, seconds at most on a GPU, seconds at most in the dry run)
STEPS = [
    ("env", "Environment", 60, 120),
    ("aot", "Ahead-of-time compile of the Triton kernels", 90, 600),
    ("correctness", "Correctness: triton and chunked against torch", 120, 600),
    ("kernel_bench", "Kernel benchmark (benchmarks/kernels.py)", 150, 300),
    ("train", "bf16 training of the small DiT, eager", 90, 300),
    ("train_compile", "bf16 training of the small DiT, torch.compile", 150, 600),
    ("deepspeed", "DeepSpeed ZeRO-2, a few steps", 120, 600),
]
STEP_NAMES = [s[0] for s in STEPS]

#: step name -> (module of this package, function); imported in the step's own process only
STEP_FUNCS = {
    "env": ("env", "step_env"), "aot": ("aot_compile", "step_aot"),
    "correctness": ("correctness", "step_correctness"), "kernel_bench": ("kernel_bench", "step_kernel_bench"),
    "train": ("training", "step_train"), "train_compile": ("training", "step_train_compile"),
    "deepspeed": ("deepspeed_zero2", "step_deepspeed"),
}


def _child_env(name: str, dry_run: bool, scratch: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "platform"), env.get("PYTHONPATH")]))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, said out loud (silences 3.9's warning)
    env["PYTHONUNBUFFERED"] = "1"
    if name == "aot":
        env.pop("TRITON_INTERPRET", None)  # interpreter mode would replace every @jit
        # a fresh cache and forced compiles: ptxas runs (and reports) for every variant
        env.update(TRITON_CACHE_DIR=str(scratch / "triton-aot-cache"), TRITON_ALWAYS_COMPILE="1",
                   TRITON_DUMP_PTXAS_LOG="1")
    elif dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the step's whole process group (its compile workers too)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(name: str, title: str, timeout: float, out_dir: Path, dry_run: bool, options: dict,
             env_data: dict, scratch: Path) -> dict:
    """Run one step in a subprocess; its record for the report (status ok / failed / timeout)."""
    result_path = out_dir / "steps" / f"{name}.json"
    log_path = out_dir / "logs" / f"{name}.log"
    for p in (result_path, log_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        result_path.unlink()
    context = {"dry_run": dry_run, "out_dir": str(out_dir), "env": env_data, "options": options}
    context_path = scratch / f"{name}.context.json"
    write_atomic(context_path, json.dumps(context, default=str))
    cmd = [sys.executable, str(ENTRY), "--step", name, "--result", str(result_path),
           "--context", str(context_path)]
    start = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(name, dry_run, scratch),
                                cwd=ROOT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            code = proc.returncode
    seconds = time.perf_counter() - start
    record = {"name": name, "title": title, "seconds": seconds, "exit_code": code, "log": str(log_path)}
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {}
    record.update({k: v for k, v in result.items() if k != "status"})
    status = result.get("status")
    if timed_out:
        record["status"] = "timeout"
        record["error"] = (f"stopped after {timeout:.0f} s (its share of the budget); what it had measured is kept"
                           + (f"\n{result['error']}" if result.get("error") else ""))
        record["summary"] = "TIMEOUT; partial: " + result.get("summary", "nothing saved")
    elif code != 0 or status not in ("ok", "failed"):
        record["status"] = "failed"
        tail = log_path.read_text(errors="replace").strip().splitlines()[-25:] if log_path.exists() else []
        record.setdefault("error", "\n".join(tail) or f"exit {code}")
        record["summary"] = "FAILED: " + (record["error"].strip().splitlines() or ["?"])[-1][:300]
    else:
        record["status"] = status
    return record


def child_main(step: str, result_path: Path, context_path: Path) -> int:
    """In the step's subprocess: run the step, save its result (or its error) to ``result_path``."""
    context = json.loads(context_path.read_text())
    ctx = StepContext(context["dry_run"], Path(context["out_dir"]), context.get("env") or {}, result_path,
                      context.get("options") or {})
    try:
        module, func = STEP_FUNCS[step]
        result = getattr(importlib.import_module(f"{__package__}.{module}"), func)(ctx)
    except BaseException as err:  # noqa: BLE001 -- recorded for the report, then re-raised as an exit code
        partial = {}
        with contextlib.suppress(OSError, ValueError):
            partial = json.loads(result_path.read_text())
        partial.update(status="failed", error=traceback.format_exc()[-6000:],
                       summary=f"FAILED: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")
        ctx.save(partial)
        traceback.print_exc()
        return 1
    ctx.save(result)
    return 0


def run_all(out_dir: Path, dry_run: bool, budget: float, selected: list[str], skipped_by_flag: set[str],
            limits: dict[str, float], options: dict, command: list[str]) -> int:
    """Every step in order (skipped ones recorded as such), the reports after each; the exit status."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir, dry_run, budget, command)
    report.save()
    start = time.perf_counter()
    print(f"{report.data['title']}: {len(selected)} steps, budget {budget:.0f} s, results in {out_dir}", flush=True)
    env_data: dict = {}
    stop_reason = None
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        for name, title, cap_gpu, cap_dry in STEPS:
            remaining = budget - (time.perf_counter() - start)
            reason = None
            if stop_reason:
                reason = stop_reason
            elif name not in selected or name in skipped_by_flag:
                reason = "not selected (--only / --skip)"
            elif remaining < 5:
                reason = f"the global budget of {budget:.0f} s was spent"
            if reason:
                report.steps.append({"name": name, "title": title, "status": "skipped", "seconds": 0.0,
                                     "summary": f"skipped: {reason}"})
                report.save()
                print(f"[{name}] skipped: {reason}", flush=True)
                continue
            timeout = min(limits.get(name, cap_dry if dry_run else cap_gpu), remaining)
            print(f"[{name}] {title} (at most {timeout:.0f} s) ...", flush=True)
            record = run_step(name, title, timeout, out_dir, dry_run, options, env_data, Path(scratch))
            report.steps.append(record)
            report.save()
            print(f"[{name}] {record['status']} in {record['seconds']:.1f} s: {record.get('summary', '')}", flush=True)
            if name == "env":
                if record["status"] != "ok":
                    stop_reason = "the env step failed"
                else:
                    env_data = record.get("data") or {}
    disagree = any(s.get("kernel_disagrees") for s in report.steps)
    failed = any(s["status"] in ("failed", "timeout") for s in report.steps)
    code = 1 if disagree else (2 if failed else 0)
    report.data.update(finished=True, total_s=time.perf_counter() - start, exit_code=code,
                       kernel_disagrees=disagree)
    report.save()
    print_summary(report, out_dir)
    return code
