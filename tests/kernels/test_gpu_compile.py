"""Every Triton kernel variant the dispatcher can launch, compiled ahead of time for real GPUs
(sm_80, sm_90, and sm_100 when the bundled ptxas has it) with no GPU present: a compile error or
a register spill fails here instead of waiting for a GPU.

The launches are captured from the real entry points (``loss.nelbo``, ``linear.linear_nelbo``
forward and backward, ``sample.sample_step``) running on meta tensors with the GPU launch
configuration, specialised by Triton's own JIT binder for each target (argument types, the
divisibility-by-16 specialisation of integers and pointers), then compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``; ptxas' report gives the
registers and spills (``benchmarks/gpu_check.py``, step ``aot``; docs/kernels.md, "GPU check").

The compile runs in a subprocess: this package's conftest sets TRITON_INTERPRET=1, under which
every @triton.jit is an interpreter object that cannot be compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_TARGETS = (80, 90)
OPTIONAL_TARGETS = (100,)  # compiled when the bundled ptxas knows it, else skipped with the reason
#: The largest dynamic shared memory one block may use (bytes): A100 163 KiB, H100/B200 227 KiB.
MAX_SHARED = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}

#: Every constexpr combination the launch code can choose, per kernel (besides tile sizes).
SWITCHES = {
    "_stats_fwd": [("HAS_SHIFT", s, "SINGLE_TILE", t) for s in (0, 1) for t in (0, 1)],
    "_stats_bwd": [("HAS_SHIFT", s) for s in (0, 1)],
    "_nucleus": [()],
    "_draw": [("HAS_CUT", c, "GREEDY", g) for c in (0, 1) for g in (0, 1)],
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("aot")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.update(TRITON_CACHE_DIR=str(out / "triton-cache"), TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "platform"), env.get("PYTHONPATH")])))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--aot-json", str(out / "aot.json")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"aot compile driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads((out / "aot.json").read_text())


def describe(row: dict) -> str:
    return f"{row['kernel']} [{row['variant']}; {row['ints']}] sm_{row['arch']} (from {row['scenarios'][0]})"


def test_every_variant_compiles_for_every_target(report):
    errors = [f"{describe(r)}: {r['error'][:500]}" for r in report["errors"]]
    assert not errors, "compile errors:\n" + "\n".join(errors)
    compiled = {r["arch"] for r in report["rows"]}
    assert set(REQUIRED_TARGETS) <= compiled, (compiled, report["skipped_targets"])
    for arch in OPTIONAL_TARGETS:
        # either compiled or skipped for a stated reason (an old bundled ptxas)
        assert arch in compiled or report["skipped_targets"].get(str(arch)), arch


def test_no_register_spills(report):
    spills = [f"{describe(r)}: {r['spill_stores']} B stores, {r['spill_loads']} B loads at {r['registers']} registers"
              for r in report["spills"]]
    assert not spills, "register spills:\n" + "\n".join(spills)
    for r in report["rows"]:
        assert r["registers"] is not None and r["spill_stores"] == 0 and r["spill_loads"] == 0, describe(r)


def test_resources_fit_one_block(report):
    for r in report["rows"]:
        assert r["registers"] <= 255, describe(r)
        assert r["registers"] * 32 * r["num_warps"] <= 65536, describe(r)  # one CTA fits an SM's register file
        assert r["shared"] <= MAX_SHARED[r["arch"]], describe(r)


def test_every_kernel_switch_and_dtype_is_covered(report):
    """The capture reached every kernel, every constexpr combination and both logit dtypes
    (fp32, bf16), on every compiled target: the list the dispatcher can launch is complete."""
    for arch in {r["arch"] for r in report["rows"]}:
        rows = [r for r in report["rows"] if r["arch"] == arch]
        for kernel, combos in SWITCHES.items():
            for dtype in ("fp32", "bf16"):
                for combo in combos:
                    words = [f"{combo[i]}={combo[i + 1]}" for i in range(0, len(combo), 2)]
                    assert any(r["kernel"] == kernel and r["variant"].startswith(dtype + " ")
                               and all(w in r["variant"].split() for w in words) for r in rows), \
                        (arch, kernel, dtype, words)
    assert report["launches"] > 0 and report["compiles"] >= len(report["rows"])
