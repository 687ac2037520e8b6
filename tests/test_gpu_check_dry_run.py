"""``bash benchmarks/gpu_check.sh OUT --dry-run`` end to end, as CI runs it: every step of the GPU
check at tiny shapes on the CPU (Triton under its interpreter, the chunked backends), so the
script a GPU run depends on never rots (docs/kernels.md, "GPU check").

The ahead-of-time compile step (``aot``) is skipped here: tests/kernels/test_gpu_compile.py runs
it in full (every variant, every target) and it is the longest step; compiling twice cost CI
about a minute."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["env", "aot", "correctness", "kernel_bench", "train", "train_compile", "deepspeed"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the wrapper sets it for the dry run itself
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run", "--skip", "aot"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    return proc, out


def test_exits_zero_with_every_step_ok(dry_run):
    proc, out = dry_run
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((out / "logs").glob("*.log")))
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}\n{logs}"
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["finished"] and report["dry_run"] and report["exit_code"] == 0
    assert [s["name"] for s in report["steps"]] == STEPS
    for step in report["steps"]:
        if step["name"] == "aot":
            assert step["status"] == "skipped", step
            continue
        assert step["status"] == "ok", (step["name"], step.get("summary"), step.get("error"))
        assert step["seconds"] > 0 and step.get("summary"), step["name"]
        assert (out / "steps" / f"{step['name']}.json").exists() and (out / "logs" / f"{step['name']}.log").exists()
    assert not report["kernel_disagrees"]


def test_both_reports_hold_every_step_and_its_numbers(dry_run):
    _, out = dry_run
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    markdown = (out / "gpu_check.md").read_text()
    for i, step in enumerate(report["steps"], 1):
        assert f"## {i}. {step['title']} ({'skipped' if step['name'] == 'aot' else 'ok'}" in markdown
    # the kernels ran under the interpreter and the chunked backend, against torch
    checks = steps["correctness"]["data"]["checks"]
    backends = {c["backend"] for c in checks}
    assert {"triton", "chunked", "triton+inplace", "triton row pass"} <= backends
    assert {c["check"] for c in checks} == {"nelbo", "linear", "sample"}
    assert all(c["ok"] for c in checks)
    assert steps["aot"]["status"] == "skipped"  # compiled in full by tests/kernels/test_gpu_compile.py
    # benchmark rows, training numbers, ZeRO-2
    assert {r["backend"] for r in steps["kernel_bench"]["data"]["results"]} >= {"torch", "chunked"}
    for name in ("train", "train_compile", "deepspeed"):
        data = steps[name]["data"]
        assert data["tokens_per_s"] > 0 and all(map(lambda x: x == x, data["losses"])), name
    assert steps["deepspeed"]["data"]["zero_stage"] == 2


def test_prints_a_one_screen_summary(dry_run):
    proc, out = dry_run
    tail = proc.stdout[proc.stdout.index("=" * 100):]
    lines = tail.strip().splitlines()
    assert len(lines) <= 40, tail
    assert "exit status 0" in lines[1]
    for name in STEPS:
        status = "skipped" if name == "aot" else "ok"
        assert any(line.split()[:2] == [name, status] for line in lines), (name, tail)
    assert str(out / "gpu_check.md") in tail


def test_a_step_out_of_time_is_stopped_and_the_budget_skips_the_rest(tmp_path):
    """A step past its limit is killed and recorded (the script goes on); once --budget-s is
    spent, the remaining steps are recorded as skipped, not run."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--dry-run",
                           "--only", "kernel_bench,train", "--limit", "kernel_bench=4", "--budget-s", "8"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert [s["name"] for s in report["steps"]] == STEPS
    assert steps["env"]["status"] == "ok", proc.stdout
    assert steps["kernel_bench"]["status"] == "timeout", steps["kernel_bench"]
    assert steps["kernel_bench"]["seconds"] < 30
    assert steps["train"]["status"] == "skipped" and "budget" in steps["train"]["summary"]
    assert steps["aot"]["status"] == "skipped" and "not selected" in steps["aot"]["summary"]
    assert proc.returncode == 2 and report["exit_code"] == 2
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "(timeout," in markdown and "(skipped," in markdown
