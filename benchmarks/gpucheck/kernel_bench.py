"""Step ``kernel_bench``: benchmarks/kernels.py's measurements at the real shapes.

For nelbo (forward + backward), sample and linear, every backend available on the device
(torch, chunked, chunked+inplace, triton, triton+inplace): the median time of 10 runs after 2
warm-ups (2 runs, no warm-up in the dry run), the peak memory beyond the inputs, and

    GB/s = bytes / median time,  bytes = 2 x T x V x 4 for nelbo (one fp32 read of the logits,
                                         one fp32 write of their gradient: the physical minimum)
                                       = T x V x 4 for sample (one read); none for linear,
    % of bandwidth = GB/s / the device table's bandwidth (devices.py).

The targets (docs/kernels.md): triton nelbo >= 3x torch, and within 2x of the bandwidth bound,
i.e. >= 50 %.  A reference too big for the device (out of memory) is recorded, not failed.
"""

from __future__ import annotations

import importlib.util

from .common import DRY_SHAPES, REAL_SHAPES, ROOT, StepContext, free_memory


def load_kernel_bench():
    """benchmarks/kernels.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("xdlm_bench_kernels", ROOT / "benchmarks" / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(kb, results: list[dict], status: str, dry: bool, device: str, shapes, bandwidth) -> dict:
    """The step's result (table, notes, summary) from the measurements so far."""
    columns = ["op", "T x V", "backend", "time ms", "x torch", "peak extra MiB", "x logits", "GB/s",
               "% of bandwidth"]
    torch_time = {(r["op"], r["tokens"], r["vocab"]): r.get("seconds") for r in results if r["backend"] == "torch"}
    rows = []
    for r in results:
        key = (r["op"], r["tokens"], r["vocab"])
        if "error" in r:
            rows.append([r["op"], f"{r['tokens']} x {r['vocab']}", r["backend"], r["error"], "", "", "", "", ""])
            continue
        ref = torch_time.get(key)
        rows.append([r["op"], f"{r['tokens']} x {r['vocab']}", r["backend"], f"{1e3 * r['seconds']:.2f}",
                     f"{ref / r['seconds']:.2f}" if ref else "-", f"{r['peak_extra_bytes'] / 2**20:.0f}",
                     f"{r['peak_extra_bytes'] / r['logits_bytes']:.3f}",
                     f"{r['gbps']:.0f}" if r.get("gbps") else "-",
                     f"{100 * r['gbps'] / bandwidth:.0f}%" if r.get("gbps") and bandwidth else "-"])
    notes = kb.targets(results, not dry) if results else []
    if bandwidth and not dry:
        for r in results:
            if r["op"] == "nelbo" and r["backend"] == "triton" and r.get("gbps"):
                notes.append(f"triton nelbo at V={r['vocab']}: {r['gbps']:.0f} GB/s = "
                             f"{100 * r['gbps'] / bandwidth:.0f}% of the assumed {bandwidth} GB/s "
                             f"(target: >= 50%, i.e. within 2x of one read + one write)")
    notes.append("GB/s = bytes / time with bytes = one fp32 read of the logits + one fp32 write of the "
                 "gradient (2 x T x V x 4) for nelbo, one read (T x V x 4) for sample; none for linear")
    errors = [r for r in results if "error" in r]
    done = len(results) - len(errors)
    # a reference too big for the device is a finding, not a failure of the check
    broken = [r for r in errors if "out of memory" not in r["error"].lower()]
    summary = f"{done}/{len(results)} measurements" + (f", {len(errors)} failed" if errors else "")
    nelbo = {r["backend"]: r for r in results if r["op"] == "nelbo" and r["vocab"] == shapes[0][1] and "error" not in r}
    if "torch" in nelbo and "triton" in nelbo:
        summary += f"; triton nelbo {nelbo['torch']['seconds'] / nelbo['triton']['seconds']:.1f}x torch at V={shapes[0][1]}"
        if nelbo["triton"].get("gbps") and bandwidth:
            summary += f", {100 * nelbo['triton']['gbps'] / bandwidth:.0f}% of bandwidth"
    return {"status": status if not broken or status == "running" else "failed", "summary": summary,
            "notes": notes, "highlights": [n for n in notes if "target" in n],
            "data": {"results": results, "device": device},
            "tables": [{"columns": columns, "rows": rows}]}


def step_kernel_bench(ctx: StepContext) -> dict:
    """benchmarks/kernels.py's measurements at the real shapes.  On a GPU each runs in this
    process (``kernels.worker``: CUDA allocator peak, reset per measurement; the kernels compile
    once); on the CPU each runs in a fresh subprocess (``kernels.run_one``: peak RSS needs one)."""
    kb = load_kernel_bench()
    dry = ctx.dry_run
    device = "cpu" if dry else "cuda"
    shapes = DRY_SHAPES if dry else REAL_SHAPES
    hidden = 32 if dry else kb.HIDDEN
    results: list[dict] = []
    bandwidth = ctx.spec.get("bandwidth_gbs")

    specs = []
    for op in ("nelbo", "sample", "linear"):  # the loss first: it carries the speed targets
        for T, V in shapes:
            for backend in kb.backends_here(op, not dry):
                specs.append({"op": op, "tokens": T, "vocab": V, "backend": backend, "device": device,
                              "hidden": hidden, "repeats": 10 if not dry else 2, "warmup": 2 if not dry else 0,
                              "threads": None, "mem_limit_gb": 4.0})
    for spec in specs:
        if dry:
            r = kb.run_one(spec, timeout=120)
        else:
            import torch

            try:
                r = kb.worker(spec)
            except Exception as err:  # noqa: BLE001 -- one measurement, recorded
                r = {**spec, "error": f"{type(err).__name__}: {str(err)[:200]}"}
            free_memory(torch.device("cuda"))
        results.append(r)
        status = r.get("error") or f"{1e3 * r['seconds']:.2f} ms, {r['peak_extra_bytes'] / 2**20:.0f} MiB extra"
        print(f"  {spec['op']:6s} {spec['tokens']:6d} x {spec['vocab']:6d} {spec['backend']:16s} {status}", flush=True)
        ctx.save(_report(kb, results, "running", dry, device, shapes, bandwidth))
    print(kb.fmt_table(results), flush=True)
    return _report(kb, results, "ok", dry, device, shapes, bandwidth)
