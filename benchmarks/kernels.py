"""Benchmark the NELBO, linear-NELBO and sampling-step backends (docs/kernels.md).

    python benchmarks/kernels.py                 # full shapes (minutes on a CPU)
    python benchmarks/kernels.py --quick         # small shapes, a smoke run
    python benchmarks/kernels.py --json out.json # also save every measurement

For each (tokens, V) and each backend available on the machine: time of forward + backward (the
sampling step has no backward), peak extra memory beyond the inputs, and on a GPU the achieved
bandwidth against one read of the logits plus one write of their gradient (one read for
sampling).  Each measurement runs in a fresh subprocess:

- GPU: ``torch.cuda`` allocator stats (peak allocated minus allocated after the inputs).
- CPU: peak RSS (VmHWM, reset through /proc/self/clear_refs once the inputs exist) minus the RSS
  after the inputs, with glibc's mmap threshold fixed so that RSS follows live memory.  The
  gradient buffer counts as extra memory: it is not an input.

Measurements whose memory would exceed ``--mem-limit-gb`` fail with an allocation error in their
own subprocess (an address-space limit) rather than pushing a shared machine into swap or the
OOM killer; they are reported as such.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(4096, 30522), (8192, 50257), (2048, 126464)]
QUICK_SHAPES = [(256, 30522), (512, 50257), (128, 126464)]
HIDDEN, QUICK_HIDDEN = 768, 256
K = 0.1  # the paper's default mixing ratio: every term of the loss is live


# -- worker: one measurement in a fresh process ---------------------------------------------


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _limit_address_space(extra_gb: float) -> None:
    import resource

    limit = _status_bytes("VmSize") + int(extra_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _build(spec: dict, torch, device):
    """Inputs and a closure running one measured step (plus a cheap reset run before it)."""
    from xdlm.diffusion import XDLM

    T, V, op, backend = spec["tokens"], spec["vocab"], spec["op"], spec["backend"]
    inplace = backend.endswith("+inplace")
    backend = backend.removesuffix("+inplace")
    gen = torch.Generator(device=device).manual_seed(0)
    proc = XDLM(V, V - 1, K)
    x0 = torch.randint(0, V - 1, (T,), generator=gen, device=device)
    alpha = torch.rand(T, generator=gen, device=device, dtype=torch.float64) * 0.9 + 0.05
    z = proc.sample_marginal(x0, alpha, generator=gen)
    dalpha = torch.full((T,), -1.0, dtype=torch.float64, device=device)

    if op == "nelbo":
        logits = torch.randn(T, V, generator=gen, device=device).requires_grad_(True)

        def reset():
            logits.grad = None
            if inplace:  # the previous backward overwrote them with their gradient
                with torch.no_grad():
                    logits.normal_(generator=gen)

        def step():
            loss = proc.nelbo(logits, x0, z, alpha, dalpha, backend=backend, validate=False,
                              inplace_backward=inplace)
            loss.sum().backward()

        return reset, step, T * V * 4, 2 * T * V * 4

    if op == "linear":
        D = spec["hidden"]
        hidden = torch.randn(T, D, generator=gen, device=device).requires_grad_(True)
        weight = (torch.randn(V, D, generator=gen, device=device) / D**0.5).requires_grad_(True)
        bias = torch.zeros(V, device=device).requires_grad_(True)

        def reset():
            hidden.grad = weight.grad = bias.grad = None

        def step():
            loss = proc.linear_nelbo(hidden, weight, x0, z, alpha, dalpha, bias=bias,
                                     backend=backend, validate=False)
            loss.sum().backward()

        return reset, step, T * V * 4, None

    if op == "sample":
        logits = torch.randn(T, V, generator=gen, device=device)
        z_t = torch.where(torch.arange(T, device=device) % 2 == 0, V - 1, x0)

        def step():
            with torch.no_grad():
                proc.sample_step(logits, z_t, 0.6, 0.5, generator=gen, backend=backend, validate=False)

        return (lambda: None), step, T * V * 4, T * V * 4

    raise ValueError(f"unknown op {op!r}")


def worker(spec: dict) -> dict:
    import torch

    cuda = spec["device"] == "cuda"
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if not cuda:
        _limit_address_space(spec["mem_limit_gb"])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # warm the code paths on a tiny problem first (imports, kernel compilation), off the books
    tiny = dict(spec, tokens=8, hidden=min(spec.get("hidden", 8), 8))
    reset, step, _, _ = _build(tiny, torch, device)
    reset()
    step()
    del reset, step
    gc.collect()

    reset, step, logits_bytes, traffic = _build(spec, torch, device)
    sync()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _status_bytes("VmRSS")
        if not _reset_peak_rss():
            return {**spec, "error": "cannot reset peak RSS (/proc/self/clear_refs)"}
    times = []
    try:
        for i in range(spec["warmup"] + spec["repeats"]):
            reset()
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t0)
    except (RuntimeError, MemoryError) as err:
        if "memory" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        return {**spec, "error": f"out of memory (limit {spec['mem_limit_gb']} GiB)"}
    peak = (torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")) - base
    seconds = statistics.median(times)
    return {
        **spec,
        "seconds": seconds,
        "peak_extra_bytes": int(peak),
        "logits_bytes": logits_bytes,
        "gbps": (traffic / seconds / 1e9) if (cuda and traffic) else None,
    }


# -- driver -----------------------------------------------------------------------------------


def backends_here(op: str, cuda: bool) -> list[str]:
    names = ["torch", "chunked"]
    if op == "nelbo":
        names.append("chunked+inplace")
    if cuda:
        names.append("triton")
        if op == "nelbo":
            names.append("triton+inplace")
    return names


def run_one(spec: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "platform"), env.get("PYTHONPATH")]))
    env.pop("TRITON_INTERPRET", None)  # real kernels only: the interpreter is not a benchmark
    # glibc raises its mmap threshold after freeing a large block, after which freed
    # chunk-sized buffers stay in the heap and inflate RSS; a fixed threshold makes RSS track
    # live memory for every backend alike
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**spec, "error": f"exit {proc.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def fmt_table(results: list[dict]) -> str:
    torch_peak = {
        (r["op"], r["tokens"], r["vocab"]): r.get("peak_extra_bytes")
        for r in results if r["backend"] == "torch"
    }
    torch_time = {
        (r["op"], r["tokens"], r["vocab"]): r.get("seconds") for r in results if r["backend"] == "torch"
    }
    head = ("op", "tokens", "V", "backend", "time s", "x torch", "peak extra MiB", "x logits",
            "% of torch", "GB/s")
    rows = [head]
    for r in results:
        key = (r["op"], r["tokens"], r["vocab"])
        if "error" in r:
            rows.append((r["op"], str(r["tokens"]), str(r["vocab"]), r["backend"], r["error"],
                         "", "", "", "", ""))
            continue
        ref_peak, ref_time = torch_peak.get(key), torch_time.get(key)
        rows.append((
            r["op"], str(r["tokens"]), str(r["vocab"]), r["backend"],
            f"{r['seconds']:.3f}",
            f"{ref_time / r['seconds']:.2f}" if ref_time else "-",
            f"{r['peak_extra_bytes'] / 2**20:.0f}",
            f"{r['peak_extra_bytes'] / r['logits_bytes']:.3f}",
            f"{100 * r['peak_extra_bytes'] / ref_peak:.1f}" if ref_peak else "-",
            f"{r['gbps']:.0f}" if r.get("gbps") else "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def targets(results: list[dict], cuda: bool) -> list[str]:
    """The issue's targets, as ratios inside this run."""
    get = lambda op, backend, V: next(  # noqa: E731
        (r for r in results if r["op"] == op and r["backend"] == backend and r["vocab"] == V
         and "error" not in r), None)
    out = []
    V = 50257
    t, c = get("nelbo", "torch", V), get("nelbo", "chunked", V)
    if t and c:
        ratio = c["peak_extra_bytes"] / t["peak_extra_bytes"]
        out.append(f"chunked peak extra / torch at V={V}: {100 * ratio:.1f}% (target <= 25%)")
    ci = get("nelbo", "chunked+inplace", V)
    if t and ci:
        out.append(f"chunked+inplace peak extra / torch at V={V}: "
                   f"{100 * ci['peak_extra_bytes'] / t['peak_extra_bytes']:.1f}%")
    for V_ in sorted({r["vocab"] for r in results}):
        t, c = get("linear", "torch", V_), get("linear", "chunked", V_)
        if t and c:
            out.append(f"linear_nelbo chunked / (logits + torch loss) at V={V_}: "
                       f"{100 * c['peak_extra_bytes'] / t['peak_extra_bytes']:.1f}% (target <= 15%)")
    if cuda:
        for V_ in sorted({r["vocab"] for r in results}):
            t, g = get("nelbo", "torch", V_), get("nelbo", "triton", V_)
            if t and g:
                out.append(f"triton speed-up over torch at V={V_}: {t['seconds'] / g['seconds']:.1f}x "
                           f"(target >= 3x); {g['gbps']:.0f} GB/s (target: within 2x of the bound)")
    else:
        out.append("GPU targets (triton >= 3x torch, within 2x of bandwidth): no GPU here, to be measured")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    parser.add_argument("--json", type=Path, help="save all measurements to this file")
    parser.add_argument("--ops", default="nelbo,linear,sample", help="comma-separated subset")
    parser.add_argument("--backends", default=None, help="comma-separated subset (default: all here)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed full-size runs first")
    parser.add_argument("--mem-limit-gb", type=float, default=12.0,
                        help="CPU: address-space headroom per measurement (fails cleanly beyond)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per measurement (default: torch's); 1 gives stable "
                             "timings on an oversubscribed machine")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    shapes = QUICK_SHAPES if args.quick else SHAPES
    hidden = QUICK_HIDDEN if args.quick else HIDDEN
    repeats = args.repeats or (10 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 0)
    wanted = set(args.backends.split(",")) if args.backends else None
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{os.cpu_count()}",
        "threads": args.threads or torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg(),
        "k": K,
        "hidden": hidden,
    }
    print(f"# {env['device']}, torch {env['torch']}, {env['threads']} thread(s), "
          f"load average {env['loadavg_start'][0]:.1f}", flush=True)
    results = []
    for op in args.ops.split(","):
        for T, V in shapes:
            for backend in backends_here(op, cuda):
                if wanted and backend not in wanted:
                    continue
                spec = {"op": op, "tokens": T, "vocab": V, "backend": backend, "device": device,
                        "hidden": hidden, "repeats": repeats, "warmup": warmup, "threads": args.threads,
                        "mem_limit_gb": args.mem_limit_gb}
                result = run_one(spec, args.timeout)
                results.append(result)
                status = result.get("error") or (
                    f"{result['seconds']:.3f} s, {result['peak_extra_bytes'] / 2**20:.0f} MiB extra")
                print(f"  {op:6s} {T:6d} x {V:6d} {backend:16s} {status}", flush=True)
    env["loadavg_end"] = os.getloadavg()
    print()
    print(fmt_table(results))
    print()
    notes = targets(results, cuda)
    for line in notes:
        print("- " + line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "results": results, "targets": notes}, indent=2))
        print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
