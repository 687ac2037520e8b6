"""Step ``aot`` (and ``--aot-json``): every kernel variant compiled ahead of time for real GPUs.

Each job of aot_capture.aot_jobs is compiled with ``triton.compile(ASTSource(fn, signature,
constexprs, attrs), target=GPUTarget("cuda", arch, 32))`` for sm_80, sm_90 and sm_100 with the
ptxas Triton bundles: no GPU needed.  Per compile it reports

- registers per thread and spill stores / loads (bytes): ptxas' own ``-v`` report, printed when
  TRITON_DUMP_PTXAS_LOG=1 (or from running ptxas -v again on the PTX);
- shared memory (bytes): the kernel's ``metadata.shared``.

A compile error or any spill fails the step and sets ``kernel_disagrees`` (exit status 1).  A
target the bundled ptxas does not know is skipped with the reason, not failed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .aot_capture import AOT_TARGETS, aot_capture, aot_jobs
from .common import StepContext, write_atomic

PTXAS_REGS = re.compile(r"Used (\d+) registers")
PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
UNSUPPORTED_TARGET = re.compile(r"gpu-name|not defined for option|Unsupported \.target|unsupported gpu|"
                                r"not a supported|Unknown option", re.IGNORECASE)


def aot_compile_job(job: dict) -> dict:
    """Compile one specialised kernel for its target (a process-pool worker); registers and
    spills from ptxas' own report (-v, printed when TRITON_DUMP_PTXAS_LOG=1)."""
    import importlib

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    out = {k: job[k] for k in ("kernel", "arch", "variant", "ints", "scenarios")}
    fn = getattr(importlib.import_module(job["module"]), job["kernel"])
    constexprs = {tuple(k): v for k, v in job["constexprs"]}
    attrs = {tuple(k): v for k, v in job["attrs"]}
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            kernel = triton_compile(ASTSource(fn, job["signature"], constexprs, attrs),
                                    target=GPUTarget("cuda", job["arch"], 32), options=dict(job["options"]))
    except Exception as err:  # noqa: BLE001 -- reported, not raised
        text = f"{type(err).__name__}: {err}"
        out.update(error=text[:2000], seconds=time.perf_counter() - start)
        return out
    text = log.getvalue()
    if not PTXAS_REGS.search(text):  # a Triton without TRITON_DUMP_PTXAS_LOG: ask ptxas again
        text = _ptxas_report(kernel.asm.get("ptx", ""), job["arch"])
    regs = [int(x) for x in PTXAS_REGS.findall(text)]
    spills = [tuple(map(int, m)) for m in PTXAS_SPILL.findall(text)]
    out.update(
        seconds=time.perf_counter() - start,
        registers=max(regs) if regs else None,
        shared=kernel.metadata.shared,
        num_warps=kernel.metadata.num_warps,
        stack=max((s[0] for s in spills), default=None),
        spill_stores=sum(s[1] for s in spills) if spills else None,
        spill_loads=sum(s[2] for s in spills) if spills else None,
        cubin_bytes=len(kernel.asm.get("cubin", b"")),
    )
    if not regs:  # compiled, but the resources are unknown: said, not counted as a kernel failure
        out["warning"] = "no ptxas report (registers / spills unknown): " + text.strip()[-300:]
    return out


def _ptxas_report(ptx: str, arch: int) -> str:
    """``ptxas -v`` on a kernel's PTX with the ptxas Triton uses for ``arch`` (its stderr)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            tool = get_ptxas(arch)
        except TypeError:  # older Triton: one ptxas for every arch
            tool = get_ptxas()
        path = getattr(tool, "path", tool)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "k.ptx"
            src.write_text(ptx)
            proc = subprocess.run([path, "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", str(src),
                                   "-o", str(Path(tmp) / "k.cubin")], capture_output=True, text=True, timeout=120)
        return proc.stdout + proc.stderr
    except Exception as err:  # noqa: BLE001 -- reported as a missing report
        return f"{type(err).__name__}: {err}"


def aot_report(workers: int, targets=AOT_TARGETS, progress=None) -> dict:
    """Capture, specialise and compile every variant; returns {"rows", "targets", "errors", ...}."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    start = time.perf_counter()
    records = aot_capture()
    jobs = aot_jobs(records, targets)
    rows: list[dict] = []
    # spawn, not fork: this process has torch loaded and its threads running; a forked worker could
    # inherit a lock held by one of them
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=get_context("spawn")) as pool:
        for row in pool.map(aot_compile_job, jobs, chunksize=1):
            rows.append(row)
            if progress is not None:
                progress(rows, len(jobs))
    skipped = {}
    for arch in targets:
        mine = [r for r in rows if r["arch"] == arch]
        if mine and all("error" in r for r in mine) and UNSUPPORTED_TARGET.search(mine[0]["error"]):
            skipped[arch] = mine[0]["error"].splitlines()[0][:300]
            rows = [r for r in rows if r["arch"] != arch]
    rows.sort(key=lambda r: (r["kernel"], r["variant"], r["ints"], r["arch"]))
    return {"rows": rows, "launches": len(records), "compiles": len(jobs), "skipped_targets": skipped,
            "seconds": time.perf_counter() - start,
            "errors": [r for r in rows if "error" in r],
            "warnings": [r for r in rows if "warning" in r],
            "spills": [r for r in rows if (r.get("spill_stores") or 0) + (r.get("spill_loads") or 0) > 0]}


def aot_summary_table(report: dict) -> tuple[list[str], list[list]]:
    """One row per (kernel, variant): per target the register range, shared memory and spills
    over the integer specialisations (divisibility of T, V, strides, ...)."""
    targets = sorted({r["arch"] for r in report["rows"]})
    groups: dict[tuple, dict] = {}
    for r in report["rows"]:
        g = groups.setdefault((r["kernel"], r["variant"]), {})
        g.setdefault(r["arch"], []).append(r)
    columns = ["kernel", "variant", "specs"] + [f"sm_{a} regs / smem B / spill B" for a in targets]
    rows = []
    for (kernel, variant), by_arch in groups.items():
        cells = []
        for a in targets:
            rs = by_arch.get(a, [])
            if not rs:
                cells.append("-")
                continue
            if any("error" in r for r in rs):
                cells.append("ERROR")
                continue
            if any(r.get("registers") is None for r in rs):
                cells.append("compiled, no ptxas report")
                continue
            regs = sorted({r["registers"] for r in rs})
            reg = f"{regs[0]}" if len(regs) == 1 else f"{regs[0]}-{regs[-1]}"
            smem = max(r["shared"] for r in rs)
            spill = max((r.get("spill_stores") or 0) + (r.get("spill_loads") or 0) for r in rs)
            cells.append(f"{reg} / {smem} / {spill}")
        n_specs = max(len(v) for v in by_arch.values())
        rows.append([kernel, variant, n_specs] + cells)
    return columns, rows


def step_aot(ctx: StepContext) -> dict:
    workers = int(ctx.options.get("aot_workers") or os.cpu_count() or 1)

    def progress(rows, total):
        if len(rows) % 10 == 0 or len(rows) == total:
            ctx.save({"status": "running", "summary": f"{len(rows)}/{total} compiled", "data": {"rows": rows}})

    report = aot_report(workers, progress=progress)
    columns, rows = aot_summary_table(report)
    bad = report["errors"] + report["spills"]
    status = "failed" if bad else "ok"
    regs = [r["registers"] for r in report["rows"] if r.get("registers") is not None]
    summary = (f"{report['compiles']} compiles ({len({(r['kernel'], r['variant']) for r in report['rows']})} "
               f"kernel variants x targets {', '.join(f'sm_{a}' for a in AOT_TARGETS if a not in report['skipped_targets'])}) "
               f"in {report['seconds']:.0f} s: {len(report['errors'])} errors, {len(report['spills'])} with spills; "
               f"registers {min(regs, default=0)}-{max(regs, default=0)}")
    notes = [f"sm_{a} skipped: {why}" for a, why in report["skipped_targets"].items()]
    notes += [f"ERROR {r['kernel']} [{r['variant']}; {r['ints']}] sm_{r['arch']}: {r['error'][:300]}" for r in report["errors"]]
    notes += [f"WARNING {r['kernel']} [{r['variant']}; {r['ints']}] sm_{r['arch']}: {r['warning'][:300]}"
              for r in report["warnings"]]
    notes += [f"SPILL {r['kernel']} [{r['variant']}; {r['ints']}] sm_{r['arch']}: {r['spill_stores']} B stores, "
              f"{r['spill_loads']} B loads at {r['registers']} registers" for r in report["spills"]]
    notes.append("specs = integer specialisations compiled per target (which int arguments are divisible "
                 "by 16, as Triton's JIT specialises them); regs shown as a range over them; smem = "
                 "metadata.shared (bytes); spill = ptxas spill stores + loads (bytes)")
    highlights = [n for n in notes if n.startswith(("ERROR", "SPILL", "WARNING", "sm_"))]
    return {"status": status, "summary": summary, "kernel_disagrees": bool(bad), "notes": notes,
            "highlights": highlights, "data": report, "tables": [{"columns": columns, "rows": rows}]}


def aot_main(path: Path, workers: int | None) -> int:
    """The aot step alone, in this process (triton must not be imported yet: TRITON_INTERPRET
    is dropped here and a fresh cache forces every compile, so ptxas reports each one)."""
    if "triton" in sys.modules:
        raise RuntimeError("--aot-json must run in a fresh process (triton is already imported)")
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    os.environ.update(TRITON_ALWAYS_COMPILE="1", TRITON_DUMP_PTXAS_LOG="1")
    with tempfile.TemporaryDirectory(prefix="gpu-check-aot-") as cache:
        os.environ.setdefault("TRITON_CACHE_DIR", cache)
        report = aot_report(workers or os.cpu_count() or 1)
    write_atomic(path, json.dumps(report, indent=1, default=str))
    print(f"{report['compiles']} compiles in {report['seconds']:.0f} s: {len(report['errors'])} errors, "
          f"{len(report['spills'])} with spills; skipped targets: {report['skipped_targets'] or 'none'}")
    return 0
