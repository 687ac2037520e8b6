"""One prepared GPU check (issue 9): compile, verify, benchmark and train, in one call.

    bash benchmarks/gpu_check.sh OUT_DIR              # on a CUDA machine (fits in 8 minutes on an H200)
    bash benchmarks/gpu_check.sh OUT_DIR --dry-run    # the same steps at tiny shapes on the CPU (CI)
    python benchmarks/gpu_check.py OUT_DIR [--dry-run] [--budget-s 420] [--only a,b] [--skip a,b]
                                           [--limit STEP=SECONDS] [--aot-workers N]

Steps, in order, each in its own subprocess (a crash, a hang or a poisoned CUDA context loses
that step only), each timed, each result appended to OUT_DIR/gpu_check.json and
OUT_DIR/gpu_check.md as soon as it exists (both rewritten atomically after every step):

  env            GPU, driver, torch / triton / CUDA versions; bandwidth and peak FLOPs from a
                 table keyed by the device name (an assumption, said so in the output)
  aot            every Triton kernel variant the dispatcher can launch, compiled ahead of time for
                 sm_80, sm_90 and sm_100 with Triton's bundled ptxas (no GPU needed): registers,
                 shared memory, spills
  correctness    triton (and chunked) against torch: NELBO forward + backward, linear_nelbo,
                 the sampling step (exact greedy / nucleus, chi-square of draws)
  kernel_bench   benchmarks/kernels.py's measurements: time, peak memory, GB/s
  train          a short bf16 training of the small DiT at L = 1024 (tokens/s, MFU, memory)
  train_compile  the same under torch.compile
  deepspeed      DeepSpeed ZeRO-2 for a few steps (one process, world size 1)

A step that fails records its error and the next one runs (the env step excepted); after
``--budget-s`` seconds the remaining steps are recorded as skipped.  Exit status: 1 if a kernel
disagrees with torch (or an AOT compile fails or spills), 2 if another step failed, else 0.
docs/kernels.md ("GPU check") describes the steps, the formulas and the tolerances.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "platform") not in sys.path:  # without an installed xdlm (plain python3)
    sys.path.insert(0, str(ROOT / "platform"))

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

#: Public datasheet numbers by device name: memory bandwidth (GB/s), dense bf16 tensor-core and
#: fp32 (non-tensor) peak TFLOP/s.  An assumption: clocks, power limits and the exact SKU vary.
#: First match wins (substrings of torch.cuda.get_device_name(), case-insensitive).
DEVICE_SPECS = [
    (("h200",), "H200 SXM 141GB", 4800, 989, 67),
    (("h100", "nvl"), "H100 NVL", 3900, 835, 60),
    (("h100", "pcie"), "H100 PCIe", 2000, 756, 51),
    (("h100",), "H100 SXM 80GB", 3350, 989, 67),
    (("gh200",), "GH200 (H100 96GB)", 4000, 989, 67),
    (("b200",), "B200", 8000, 2250, 80),
    (("a100", "80gb", "pcie"), "A100 80GB PCIe", 1935, 312, 19.5),
    (("a100", "80gb"), "A100 SXM 80GB", 2039, 312, 19.5),
    (("a100",), "A100 40GB", 1555, 312, 19.5),
    (("l40s",), "L40S", 864, 362, 91.6),
    (("l4",), "L4", 300, 121, 30.3),
    (("a10g",), "A10G", 600, 70, 31.2),
    (("a10",), "A10", 600, 125, 31.2),
    (("rtx 4090",), "RTX 4090", 1008, 165, 82.6),
]

# Shapes -----------------------------------------------------------------------------------------
REAL_SHAPES = [(8192, 50257), (2048, 126464)]  # (tokens, V): GPT-2 and a 126k vocabulary
DRY_SHAPES = [(64, 257)]
GPT2_VOCAB, GPT2_MASK = 50258, 50257  # the gpt2 tokenizer plus [MASK] (jobs/owt_small.yaml)
K = 0.1


# =================================================================================================
# Small helpers
# =================================================================================================


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_spec(name: str) -> dict | None:
    low = name.lower()
    for keys, label, bandwidth, bf16, fp32 in DEVICE_SPECS:
        if all(k in low for k in keys):
            return {"matched": label, "bandwidth_gbs": bandwidth, "peak_bf16_tflops": bf16,
                    "peak_fp32_tflops": fp32,
                    "assumption": f"datasheet numbers of a {label} looked up from the device name "
                                  f"{name!r}; not measured"}
    return None


def md_table(columns: list[str], rows: list[list]) -> str:
    cell = lambda v: "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x, digits=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def pkg_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_kernel_bench():
    """benchmarks/kernels.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("xdlm_bench_kernels", ROOT / "benchmarks" / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StepContext:
    """What a step subprocess gets: the mode, the env step's findings, and a way to save partial
    results (so a step killed at its time limit still leaves what it measured)."""

    def __init__(self, dry_run: bool, out_dir: Path, env: dict, result_path: Path, options: dict):
        self.dry_run = dry_run
        self.out_dir = out_dir
        self.env = env
        self.result_path = result_path
        self.options = options

    @property
    def spec(self) -> dict:
        return self.env.get("spec") or {}

    def save(self, result: dict) -> None:
        write_atomic(self.result_path, json.dumps(result, indent=1, default=str))


# =================================================================================================
# Step: environment
# =================================================================================================


def _ptxas_versions() -> dict:
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return {}
    bindir = Path(list(spec.submodule_search_locations)[0]) / "backends" / "nvidia" / "bin"
    out = {}
    for tool in ("ptxas", "ptxas-blackwell"):
        path = bindir / tool
        if path.exists():
            try:
                text = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                                      timeout=20).stdout
                m = re.search(r"release ([\d.]+), V([\d.]+)", text)
                out[tool] = m.group(2) if m else text.strip().splitlines()[-1]
            except (OSError, subprocess.SubprocessError) as err:
                out[tool] = f"error: {err}"
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _nvidia_smi() -> dict:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"nvidia_smi": "not found"}
    try:
        text = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return {"nvidia_smi": f"error: {err}"}
    first = text.splitlines()[0] if text else ""
    parts = [p.strip() for p in first.split(",")]
    keys = ["name", "driver", "memory_total", "max_sm_clock", "max_mem_clock", "power_limit"]
    return {"nvidia_smi": dict(zip(keys, parts, strict=False))}


def step_env(ctx: StepContext) -> dict:
    import torch

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": pkg_version("triton"),
        "deepspeed": pkg_version("deepspeed"),
        "ptxas": _ptxas_versions(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    notes = []
    if ctx.dry_run:
        info.update(device="cpu", gpu=None, spec=None)
        notes.append("dry run: CPU only; Triton runs under TRITON_INTERPRET=1; no bandwidth or "
                     "FLOP numbers (no device table entry for a CPU)")
    else:
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"no CUDA device visible to torch {torch.__version__} (torch.version.cuda = "
                f"{torch.version.cuda}): install a CUDA build of torch (docs/kernels.md, 'GPU check') "
                "or run with --dry-run")
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        smi = _nvidia_smi()
        nccl = None
        with contextlib.suppress(Exception):
            import torch.cuda.nccl

            version = torch.cuda.nccl.version()
            nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        info.update(
            device="cuda",
            gpu=name,
            capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            driver=smi["nvidia_smi"].get("driver") if isinstance(smi.get("nvidia_smi"), dict) else None,
            cudnn=torch.backends.cudnn.version(),
            nccl=nccl,
            **smi,
        )
        spec = device_spec(name)
        info["spec"] = spec
        if spec is None:
            notes.append(f"device {name!r} is not in DEVICE_SPECS: no bandwidth / MFU ratios")
        else:
            notes.append("ASSUMPTION: " + spec["assumption"])
        driver = info.get("driver") or ""
        ptxas_major = {k: v.split(".")[0] for k, v in info["ptxas"].items() if v[:1].isdigit()}
        if driver[:3].isdigit() and int(driver.split(".")[0]) < 580 and ptxas_major.get("ptxas-blackwell") == "13":
            notes.append(f"driver {driver} predates CUDA 13 (580): Triton compiles sm_90+ with its CUDA 13 "
                         "ptxas; if kernels fail to load, set TRITON_PTXAS_BLACKWELL_PATH to the 12.x "
                         "ptxas (TRITON_PTXAS_PATH) or update the driver")
    spec = info.get("spec") or {}
    rows = [[k, fmt(v) if not isinstance(v, dict) else json.dumps(v)] for k, v in info.items()
            if k not in ("spec", "nvidia_smi")]
    if spec:
        rows += [["bandwidth (assumed)", f"{spec['bandwidth_gbs']} GB/s"],
                 ["peak bf16 (assumed)", f"{spec['peak_bf16_tflops']} TFLOP/s dense"],
                 ["peak fp32 (assumed)", f"{spec['peak_fp32_tflops']} TFLOP/s"]]
    summary = (f"{info.get('gpu') or 'CPU ' + info['cpu']}, torch {info['torch']} (CUDA {info['torch_cuda']}), "
               f"triton {info['triton']}")
    return {"status": "ok", "summary": summary, "data": info, "notes": notes,
            "tables": [{"columns": ["what", "value"], "rows": rows}]}


# =================================================================================================
# Step: ahead-of-time compile of every kernel variant the dispatcher can launch
# =================================================================================================

AOT_TARGETS = (80, 90, 100)

#: Launch scenarios driven through the real entry points (on meta tensors, GPU launch config):
#: (tokens, V, mask id) -- real vocabularies (many tiles), the widest single tile (8192), a 4096
#: single tile (8 warps), and the dry run's 257 (a 512-wide single tile, 4 warps).
AOT_NELBO_SHAPES = [(8192, 50257, 50256), (2048, 126464, 126463), (8192, GPT2_VOCAB, GPT2_MASK),
                    (4096, 8192, 0), (4096, 4096, 17), (64, 257, 256)]
AOT_LINEAR_SHAPES = [(8192, 50257, 50256, 768), (2048, 126464, 126463, 768), (8192, GPT2_VOCAB, GPT2_MASK, 768),
                     (512, 257, 256, 64)]  # the last: tokens > V, the token-chunk schedule
AOT_SAMPLE_SHAPES = [(8192, 50257, 50256), (2048, 126464, 126463), (4096, 8192, 0), (64, 257, 256)]


def aot_capture() -> list[dict]:
    """Run the dispatcher's real launch code (``loss.nelbo``, ``linear.linear_nelbo`` forward and
    backward, ``sample.sample_step``) on meta tensors with the GPU launch configuration, recording
    each kernel launch (kernel, arguments, constexprs, num_warps) instead of running it.

    Needs TRITON_INTERPRET unset (the @jit objects must be JITFunctions).  Patches modules of
    this process only.
    """
    import torch

    from xdlm.diffusion.kernels import (
        dispatch,
        linear,
        loss,
        sample,
        triton_common,
        triton_nelbo,
        triton_sample,
    )

    if triton_common.INTERPRETED:
        raise RuntimeError("aot_capture needs TRITON_INTERPRET unset (run it in a fresh process)")
    records: list[dict] = []
    scenario = {"label": ""}

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                records.append({"fn": self.fn, "args": args, "kwargs": kwargs, "scenario": scenario["label"]})
            return launch

    cuda = torch.device("cuda")
    saved = []
    for module, names in ((triton_nelbo, ("_stats_fwd", "_stats_bwd")), (triton_sample, ("_nucleus", "_draw"))):
        for name in names:
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, Recorder(getattr(module, name)))
        saved.append((module, "launch_config", module.launch_config))
        module.launch_config = lambda T, V, device: triton_common.launch_config(T, V, cuda)
    saved.append((dispatch, "resolve", dispatch.resolve))
    dispatch.resolve = lambda backend, device, dtype: "triton"
    meta = lambda *shape, dtype=torch.float32: torch.empty(*shape, dtype=dtype, device="meta")  # noqa: E731
    try:
        for dtype in (torch.float32, torch.bfloat16):
            dname = str(dtype).removeprefix("torch.")
            for T, V, m in AOT_NELBO_SHAPES:
                for k in (K, 0.0):
                    for inplace in (False, True):
                        scenario["label"] = f"nelbo {T}x{V} {dname} k={k}" + (" inplace" if inplace else "")
                        logits = meta(T, V, dtype=dtype).requires_grad_(True)
                        ids, alpha = meta(T, dtype=torch.int64), meta(T, dtype=torch.float64)
                        out = loss.nelbo(logits, ids, ids, alpha, alpha, V, m, k, backend="triton",
                                         inplace_backward=inplace)
                        out.sum().backward()
            for T, V, m, D in AOT_LINEAR_SHAPES:
                for k in (K, 0.0):
                    scenario["label"] = f"linear {T}x{V}x{D} {dname} k={k}"
                    h = meta(T, D, dtype=dtype).requires_grad_(True)
                    w = meta(V, D, dtype=dtype).requires_grad_(True)
                    b = meta(V, dtype=dtype).requires_grad_(True)
                    ids, alpha = meta(T, dtype=torch.int64), meta(T, dtype=torch.float64)
                    linear.linear_nelbo(h, w, b, ids, ids, alpha, alpha, V, m, k, backend="triton").sum().backward()
            for T, V, m in AOT_SAMPLE_SHAPES:
                for top_p in (None, 0.9):
                    for greedy in (False, True):
                        scenario["label"] = f"sample {T}x{V} {dname} top_p={top_p} greedy={greedy}"
                        a = meta(T, dtype=torch.float64)
                        # seed 0: a generator's draw is some int; see the report for its specialisation
                        sample.sample_step(meta(T, V, dtype=dtype), meta(T, dtype=torch.int64), a, a, V, m, K,
                                           top_p=top_p, greedy=greedy,
                                           generator=torch.Generator().manual_seed(0), backend="triton")
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
    return records


def _jit_kwargs(fn, kwargs: dict) -> dict:
    """The keyword arguments ``JITFunction.run`` adds before binding (triton 3.x)."""
    from triton import knobs

    kw = dict(kwargs)
    kw["debug"] = kw.get("debug", getattr(fn, "debug", None)) or knobs.runtime.debug
    if hasattr(knobs.compilation, "instrumentation_mode"):
        kw["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    if hasattr(knobs.compilation, "fpsan_homomorphic_casts"):
        kw["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    return kw


def aot_jobs(records: list[dict], targets=AOT_TARGETS) -> list[dict]:
    """Specialise each recorded launch exactly as Triton's JIT would on a device of each target
    (its binder: argument types, divisibility-by-16 and ==1 specialisation), deduplicated."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    jobs: dict[str, dict] = {}
    for arch in targets:
        backend = make_backend(GPUTarget("cuda", arch, 32))
        binders = {}
        for rec in records:
            fn = rec["fn"]
            if fn.__name__ not in binders:
                binders[fn.__name__] = create_function_from_signature(fn.signature, fn.params, backend)
            kw = _jit_kwargs(fn, rec["kwargs"])
            bound, specialization, options = binders[fn.__name__](*rec["args"], **kw)
            options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, specialization, options)
            constexprs = {k: v for k, v in constexprs.items()}
            int_names = [n for n, t in signature.items() if t in ("i32", "i64")]
            div16 = [n for n in int_names if attrs.get((fn.arg_names.index(n),))]
            ones = [n for n, t in signature.items() if t == "constexpr" and n not in rec["kwargs"]]
            logits_ty = signature[fn.arg_names[0]].lstrip("*")
            named = {fn.arg_names[key[0]]: value for key, value in constexprs.items() if fn.arg_names[key[0]] in rec["kwargs"]}
            variant = " ".join([logits_ty] + [f"{n}={int(v) if isinstance(v, bool) else v}" for n, v in named.items()]
                               + [f"w{options.num_warps}"])
            ints = ("div16:" + ",".join(div16) if div16 else "div16:-") + (" ==1:" + ",".join(ones) if ones else "")
            key = json.dumps([fn.__name__, arch, sorted(signature.items()), sorted((list(k), repr(v)) for k, v in constexprs.items()),
                              sorted((list(k), v) for k, v in attrs.items()), sorted((k, repr(v)) for k, v in options.__dict__.items())])
            job = jobs.get(key)
            if job is None:
                jobs[key] = job = {
                    "module": fn.fn.__module__, "kernel": fn.__name__, "arch": arch, "variant": variant,
                    "ints": ints, "signature": signature,
                    "constexprs": [[list(k), v] for k, v in constexprs.items()],
                    "attrs": [[list(k), v] for k, v in attrs.items()],
                    "options": dict(options.__dict__), "scenarios": [],
                }
            if rec["scenario"] not in job["scenarios"]:
                job["scenarios"].append(rec["scenario"])
    return list(jobs.values())


PTXAS_REGS = re.compile(r"Used (\d+) registers")
PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


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


UNSUPPORTED_TARGET = re.compile(r"gpu-name|not defined for option|Unsupported \.target|unsupported gpu|"
                                r"not a supported|Unknown option", re.IGNORECASE)


def aot_report(workers: int, targets=AOT_TARGETS, progress=None) -> dict:
    """Capture, specialise and compile every variant; returns {"rows", "targets", "errors", ...}."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    start = time.perf_counter()
    records = aot_capture()
    jobs = aot_jobs(records, targets)
    rows: list[dict] = []
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


# =================================================================================================
# Step: correctness of the triton (and chunked) backends against torch
# =================================================================================================

#: Tolerances, |got - want| <= tol * max|want| over a tensor (the sense of tests/kernels'
#: assert_close_scaled): (gpu, dry run).  On the GPU, exp/log are approximate to a few ulps (the
#: interpreter uses numpy's); bf16 gradients are one bf16 rounding apart (the interpreter
#: truncates float32 -> bf16 where a GPU rounds: 2e-2 there); the fused head's bf16 logits come
#: from matmuls of other shapes than the reference's (cuBLAS may round them differently).
TOLERANCES = {
    ("nelbo", "fp32", "loss"): (1e-4, 1e-5), ("nelbo", "fp32", "d logits"): (1e-4, 1e-5),
    ("nelbo", "fp32", "d alpha"): (1e-4, 1e-5),
    ("nelbo", "bf16", "loss"): (1e-4, 1e-5), ("nelbo", "bf16", "d logits"): (1e-2, 2e-2),
    ("nelbo", "bf16", "d alpha"): (1e-4, 1e-5),
    ("linear", "fp32", "loss"): (1e-4, 1e-5), ("linear", "fp32", "grad"): (1e-3, 1e-5),
    ("linear", "bf16", "loss"): (1e-2, 1e-5), ("linear", "bf16", "grad"): (3e-2, 3e-2),
}
SAMPLE_MISMATCH = 1e-3  # greedy tokens, nucleus thresholds: fraction of rows allowed to differ (near-ties)
CHI2_P = 1e-4  # chi-square p-value below which a draw "does not follow" the exact posterior


def scaled_error(got, want) -> float:
    """max |got - want| / max |want| over the finite entries of want (inf if the infinities
    differ, nan if got has a nan where want is finite)."""
    import torch

    if got is None or want is None:
        return 0.0 if got is None and want is None else math.inf
    if got.shape != want.shape:
        return math.inf
    got, want = got.detach().double(), want.detach().double()
    finite = torch.isfinite(want)
    if not torch.equal(got[~finite], want[~finite]):
        return math.inf
    got, want = got[finite], want[finite]
    if want.numel() == 0:
        return 0.0
    scale = want.abs().max().clamp_min(1e-30)
    return float((got - want).abs().max() / scale)


def chi_square_p(draws, law) -> float:
    """Goodness of fit of integer draws to a law (bins with expected count < 5 merged); 0 if an
    impossible id was drawn."""
    import torch
    from scipy import stats as sps

    draws, law = draws.cpu(), law.cpu().double()
    n = draws.numel()
    counts = torch.bincount(draws, minlength=law.numel()).double()
    if counts[law == 0].sum() > 0:
        return 0.0
    expected = law * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    if exp[-1] < 5:
        i = int(exp[:-1].argmax())
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    if obs.numel() < 2:
        return 1.0 if int(counts.argmax()) == int(law.argmax()) else 0.0
    return float(sps.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


class Checks:
    """Rows of the correctness table, saved after each one."""

    def __init__(self, ctx: StepContext):
        self.ctx, self.rows, self.start = ctx, [], time.perf_counter()

    def add(self, check: str, backend: str, shape: str, dtype: str, quantity: str, err: float, tol: float,
            higher_is_better: bool = False) -> None:
        ok = (err >= tol) if higher_is_better else (err <= tol)
        if isinstance(err, float) and math.isnan(err):
            ok = False
        self.rows.append({"check": check, "backend": backend, "shape": shape, "dtype": dtype,
                          "quantity": quantity, "value": err, "tolerance": (">= " if higher_is_better else "<= ") + fmt(tol),
                          "ok": bool(ok)})
        self.ctx.save(self.result(partial=True))
        mark = "ok  " if ok else "FAIL"
        print(f"  {mark} {check:8s} {backend:15s} {shape:16s} {dtype:5s} {quantity:22s} {fmt(err, 3):>10s} "
              f"(tol {self.rows[-1]['tolerance']})", flush=True)

    def result(self, partial: bool = False) -> dict:
        bad = [r for r in self.rows if not r["ok"]]
        status = "running" if partial else ("failed" if bad else "ok")
        summary = (f"{len(self.rows) - len(bad)}/{len(self.rows)} checks within tolerance"
                   + (f"; FAILED: {', '.join(sorted({r['check'] + ' ' + r['backend'] + ' ' + r['quantity'] for r in bad}))}"
                      if bad else ""))
        cols = ["check", "backend", "T x V", "dtype", "quantity", "value", "tolerance", "ok"]
        rows = [[r["check"], r["backend"], r["shape"], r["dtype"], r["quantity"], fmt(r["value"], 3),
                 r["tolerance"], "ok" if r["ok"] else "FAIL"] for r in self.rows]
        highlights = [f"FAIL {r['check']} {r['backend']} {r['shape']} {r['dtype']} {r['quantity']}: "
                      f"{fmt(r['value'])} (tol {r['tolerance']})" for r in bad]
        return {"status": status, "summary": summary, "kernel_disagrees": bool(bad), "highlights": highlights,
                "data": {"checks": self.rows, "seconds": time.perf_counter() - self.start},
                "tables": [{"columns": cols, "rows": rows}]}


def _free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _nelbo_problem(T, V, m, dtype, device, seed):
    import torch

    from xdlm.diffusion import XDLM

    gen = torch.Generator(device=device).manual_seed(seed)
    proc = XDLM(V, m, K)
    x0 = torch.randint(0, V - 1, (T,), generator=gen, device=device)
    x0 = x0 + (x0 >= m).long()
    alpha = torch.rand(T, generator=gen, device=device, dtype=torch.float64) * 0.9 + 0.05
    dalpha = -(torch.rand(T, generator=gen, device=device, dtype=torch.float64) + 0.5)
    z = proc.sample_marginal(x0, alpha, generator=gen)
    z[0] = m  # at least one masked and one clean token whatever the draw
    z[-1] = x0[-1]
    logits = 3.0 * torch.randn(T, V, generator=gen, device=device)
    logits[:, m] = 50.0  # every backend must ignore the mask logit
    return proc, logits.to(dtype), x0, z, alpha, dalpha


def _run_nelbo(proc, logits, x0, z, alpha, dalpha, backend, inplace=False):
    """(loss, d logits, d alpha) of sum(w * loss) with per-token weights w."""
    import torch

    base = logits.clone().requires_grad_(True)
    a = alpha.clone().requires_grad_(True)
    lg = base * 1 if inplace else base  # in place: the gradient overwrites a temporary
    loss = proc.nelbo(lg, x0, z, a, dalpha, backend=backend, validate=False, inplace_backward=inplace)
    w = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype, device=loss.device)
    (loss * w).sum().backward()
    return loss.detach(), base.grad, a.grad


def _run_linear(proc, hidden, weight, bias, x0, z, alpha, dalpha, backend):
    import torch

    leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    loss = proc.linear_nelbo(leaves[0], leaves[1], x0, z, alpha, dalpha, bias=leaves[2], backend=backend,
                             validate=False)
    w = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype, device=loss.device)
    (loss * w).sum().backward()
    return [loss.detach()] + [t.grad for t in leaves]


def _exact_law(proc, row, z, alpha_s, alpha_t, top_p):
    """q(z_s | z_t = z, x = p~) in float64 for one logits row: [N]."""
    import torch

    from xdlm.diffusion.categorical import top_p_filter
    from xdlm.diffusion.posterior import posterior

    x = row.double().clone()
    x[proc.mask_id] = -math.inf
    p = torch.softmax(x, -1)
    if top_p is not None:
        p = top_p_filter(p, top_p)
    a_s = torch.tensor(alpha_s, dtype=torch.float64, device=row.device)
    a_t = torch.tensor(alpha_t, dtype=torch.float64, device=row.device)
    return posterior(p, torch.tensor(z, device=row.device), a_s, a_t, proc.vocab_size, proc.mask_id, proc.k)


def step_correctness(ctx: StepContext) -> dict:
    import torch

    from xdlm.diffusion import XDLM
    from xdlm.diffusion.kernels import chunked_sample, dispatch

    dry = ctx.dry_run
    device = torch.device("cpu" if dry else "cuda")
    triton_ok = True
    if dry:
        try:
            dispatch.check_triton(device, torch.float32)
        except RuntimeError as err:  # the dry run must exercise the interpreter
            raise RuntimeError(f"the dry run needs TRITON_INTERPRET=1 set before triton is imported: {err}") from err
    from xdlm.diffusion.kernels import triton_sample

    checks = Checks(ctx)
    col = 1 if dry else 0
    shapes = DRY_SHAPES if dry else REAL_SHAPES
    dtypes = [("fp32", torch.float32), ("bf16", torch.bfloat16)]
    streaming = ["triton", "chunked"] if triton_ok else ["chunked"]

    # -- NELBO forward + backward ----------------------------------------------------------------
    for T, V in shapes:
        m = V // 2  # the mask id in the middle: both sides of it are tiles
        for dname, dtype in dtypes:
            shape = f"{T} x {V}"
            problem = _nelbo_problem(T, V, m, dtype, device, seed=T + V)
            ref = _run_nelbo(*problem, "torch")
            variants = [(b, False) for b in streaming] + ([("triton", True)] if dname == "bf16" and triton_ok else [])
            for backend, inplace in variants:
                got = _run_nelbo(*problem, backend, inplace=inplace)
                label = backend + ("+inplace" if inplace else "")
                for i, quantity in enumerate(("loss", "d logits", "d alpha")):
                    tol = TOLERANCES[("nelbo", dname, quantity)][col]
                    if dry and backend == "chunked" and quantity == "d logits" and dname == "bf16":
                        tol = 1e-2  # chunked rounds like torch (no interpreter truncation)
                    checks.add("nelbo", label, shape, dname, quantity, scaled_error(got[i], ref[i]), tol)
                if not torch.equal(got[1][:, m], torch.zeros_like(got[1][:, m])):
                    checks.add("nelbo", label, shape, dname, "d logits at [MASK] != 0", 1.0, 0.0)
                del got
            del ref, problem
            _free(device)

    # -- linear_nelbo (LM head + loss fused) -----------------------------------------------------
    D = 32 if dry else 768
    for T, V in shapes:
        m = V - 1
        for dname, dtype in dtypes:
            shape = f"{T} x {V} (D={D})"
            proc, _, x0, z, alpha, dalpha = _nelbo_problem(T, V, m, torch.float32, device, seed=7 + V)
            gen = torch.Generator(device=device).manual_seed(V)
            hidden = torch.randn(T, D, generator=gen, device=device).to(dtype)
            weight = (torch.randn(V, D, generator=gen, device=device) / D**0.5).to(dtype)
            bias = (0.1 * torch.randn(V, generator=gen, device=device)).to(dtype)
            ref = _run_linear(proc, hidden, weight, bias, x0, z, alpha, dalpha, "torch")
            for backend in streaming:
                got = _run_linear(proc, hidden, weight, bias, x0, z, alpha, dalpha, backend)
                for i, quantity in enumerate(("loss", "d hidden", "d weight", "d bias")):
                    tol = TOLERANCES[("linear", dname, "loss" if i == 0 else "grad")][col]
                    if dry and dname == "bf16" and backend == "chunked":
                        tol = 1e-5 if i == 0 else 2e-2
                    checks.add("linear", backend, shape, dname, quantity, scaled_error(got[i], ref[i]), tol)
                del got
            del ref, hidden, weight, bias
            _free(device)

    # -- sampling step: the deterministic parts, exactly ----------------------------------------
    for T, V in shapes:
        m = V // 3
        for dname, dtype in dtypes:
            shape = f"{T} x {V}"
            gen = torch.Generator(device=device).manual_seed(11 + V)
            logits = (2.5 * torch.randn(T, V, generator=gen, device=device))
            logits[:, m] = 40.0
            logits = logits.to(dtype)
            z = torch.randint(0, V, (T,), generator=gen, device=device)
            z[: T // 4] = m
            proc = XDLM(V, m, K)
            for top_p in (None, 0.9):
                tp = f"top_p={top_p}"
                want = proc.sample_step(logits, z, 0.7, 0.2, top_p=top_p, backend="torch", greedy=True)
                twin = chunked_sample.row_draw(logits, m, top_p, True, None, dispatch.chunk_rows(T, V, None, device))
                outs = {b: proc.sample_step(logits, z, 0.7, 0.2, top_p=top_p, backend=b, greedy=True)
                        for b in streaming}
                for backend, got in outs.items():
                    frac = float((got.tokens != want.tokens).double().mean())
                    checks.add("sample", backend, shape, dname, f"greedy tokens != dense ({tp})", frac,
                               0.0 if dry else SAMPLE_MISMATCH)
                    # bf16 logits tie often; at the nucleus cut the dense top_p_filter can split a
                    # tie where the streaming nucleus keeps it whole (docs/kernels.md), so there the
                    # probability is compared with the streaming twin instead of the dense step
                    ref, what = want, "dense"
                    if dname == "bf16" and top_p is not None:
                        if backend == "chunked":
                            continue
                        ref, what = outs["chunked"], "chunked"
                    same = got.tokens == ref.tokens
                    err = (got.prob - ref.prob).abs() / (1e-7 + 1e-5 * ref.prob.abs())
                    checks.add("sample", backend, shape, dname, f"prob vs {what}: err / (1e-7 + 1e-5 p) ({tp})",
                               float(err[same].max()) if bool(same.any()) else 0.0, 1.0)
                del outs
                rd = triton_sample.row_draw(logits, m, top_p, True, None) if triton_ok else None
                if rd is not None:
                    checks.add("sample", "triton row pass", shape, dname, f"cut != chunked twin ({tp})",
                               float((rd.threshold != twin.threshold).double().mean()), 0.0 if dry else SAMPLE_MISMATCH)
                    checks.add("sample", "triton row pass", shape, dname, f"argmax != chunked twin ({tp})",
                               float((rd.draw != twin.draw).double().mean()), 0.0 if dry else SAMPLE_MISMATCH)
                    checks.add("sample", "triton row pass", shape, dname, f"lse abs err ({tp})",
                               float((rd.lse - twin.lse).abs().max()), 1e-5 if dry else 1e-4)
                del want, twin, rd
            del logits, z
            _free(device)

    # -- sampling step: draws against the exact posterior (chi-square) -------------------------
    V_law, n = (13, 1500) if dry else (REAL_SHAPES[0][1], 20000)
    m = V_law // 3
    proc = XDLM(V_law, m, K)
    gen = torch.Generator(device=device).manual_seed(5)
    row = 3.0 * torch.randn(V_law, generator=gen, device=device)
    row[m] = 30.0
    order = torch.argsort(torch.where(torch.arange(V_law, device=device) == m, -math.inf, row), descending=True)
    z_values = [m, int(order[0]), int(order[-2])]  # [MASK], the likeliest id, an unlikely one
    z = torch.tensor(z_values, device=device).repeat_interleave(n)
    logits = row.expand(z.numel(), V_law).contiguous()
    for backend in streaming:
        for top_p in (None, 0.9):
            out = proc.sample_step(logits, z, 0.6, 0.3, top_p=top_p, backend=backend,
                                   generator=torch.Generator(device=device).manual_seed(7))
            for i, zv in enumerate(z_values):
                law = _exact_law(proc, row, zv, 0.6, 0.3, top_p)
                p = chi_square_p(out.tokens[i * n:(i + 1) * n], law)
                checks.add("sample", backend, f"{3 * n} x {V_law}", "fp32",
                           f"chi-square p (z={'mask' if zv == m else zv}, top_p={top_p})", p, CHI2_P,
                           higher_is_better=True)
    return checks.result()


# =================================================================================================
# Step: kernel benchmark (benchmarks/kernels.py)
# =================================================================================================


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

    def result(status: str) -> dict:
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
            _free(torch.device("cuda"))
        results.append(r)
        status = r.get("error") or f"{1e3 * r['seconds']:.2f} ms, {r['peak_extra_bytes'] / 2**20:.0f} MiB extra"
        print(f"  {spec['op']:6s} {spec['tokens']:6d} x {spec['vocab']:6d} {spec['backend']:16s} {status}", flush=True)
        ctx.save(result("running"))
    print(kb.fmt_table(results), flush=True)
    return result("ok")


# =================================================================================================
# Steps: bf16 training of the small DiT (eager, torch.compile) and DeepSpeed ZeRO-2
# =================================================================================================


def _train_setup(dry: bool, deepspeed: bool = False, compiled: bool = False):
    """(job, vocab, mask id, device): the small DiT at L = 1024 with GPT-2's vocabulary on a GPU;
    a 2-layer, 64-wide DiT at L = 32 with 257 ids on the CPU (dry run)."""
    import torch

    from xdlm.config import JobConfig
    from xdlm.models import ModelConfig

    job = JobConfig()
    if dry:
        job.model = ModelConfig(size="custom", n_layers=2, hidden=64, n_heads=4, max_seq_len=32)
        job.data.seq_len, vocab, mask = 32, 257, 256
        job.train.micro_batch = 4
    else:
        job.model = ModelConfig(size="small", max_seq_len=1024)
        job.data.seq_len, vocab, mask = 1024, GPT2_VOCAB, GPT2_MASK
        job.train.micro_batch = 32 if not deepspeed else 16
    job.train.global_batch = job.train.micro_batch
    job.cluster.num_workers = 1
    job.train.precision = "bf16"
    job.train.compile = compiled
    job.optim.warmup_steps = 0
    job.diffusion.k = K
    if deepspeed:
        job.train.deepspeed = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}
    return job, vocab, mask, torch.device("cpu" if dry else "cuda")


def _train_steps(job, vocab, mask, device, engine, objective, steps: int, warmup: int, on_step=None) -> dict:
    """The loop of xdlm.train.loop for one worker: antithetic times, noise, bf16 autocast, the
    engine's backward / step; returns per-step timings and losses."""
    import torch

    from xdlm.diffusion import time_sampling

    B, L = job.train.micro_batch, job.data.seq_len
    data = torch.Generator().manual_seed(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    durations, losses, norms = [], [], []
    for step in range(warmup + steps):
        x0 = torch.randint(0, vocab - 1, (B, L), generator=data)  # never the mask id (the last)
        x0 = (x0 + (x0 >= mask).long()).to(device)
        t_global = time_sampling.antithetic_times(B, job.diffusion.t_min,
                                                  generator=torch.Generator().manual_seed(step))
        t = time_sampling.shard_times(t_global, 0, 1, 0, 1)
        sync()
        start = time.perf_counter()
        engine.forward_model.train()
        engine.zero_grad()
        torch.manual_seed(step)
        noise = torch.Generator(device=device).manual_seed(step)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = objective(engine.forward_model, x0, t, noise)
        engine.backward(loss)
        losses.append(loss.detach().item())
        norms.append(engine.step())
        sync()
        durations.append(time.perf_counter() - start)
        if on_step is not None:
            on_step(step, durations, losses)
    return {"durations": durations, "losses": losses, "grad_norms": norms, "warmup": warmup}


def _train_result(ctx, job, vocab, device, model, run: dict, label: str, extra_notes=()) -> dict:
    import torch

    from xdlm.models import count_parameters, flops_per_token

    B, L = job.train.micro_batch, job.data.seq_len
    timed = run["durations"][run["warmup"]:]
    median = statistics.median(timed)
    tokens_s = B * L / median
    fpt = flops_per_token(job.model, L)
    hidden = job.model.dims().hidden
    head = 6 * hidden * vocab  # output head forward + backward per token (not in the docs' formula)
    peak = ctx.spec.get("peak_bf16_tflops")
    mfu = tokens_s * fpt / (peak * 1e12) if peak else None
    mfu_head = tokens_s * (fpt + head) / (peak * 1e12) if peak else None
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    params = count_parameters(model)
    losses = run["losses"]
    finite = all(math.isfinite(x) for x in losses)
    data = {
        "label": label, "model": f"{job.model.size} ({job.model.dims()})", "vocab": vocab, "seq_len": L,
        "micro_batch": B, "params": params, "flops_per_token": fpt, "head_flops_per_token": head,
        "first_step_s": run["durations"][0], "median_step_s": median, "tokens_per_s": tokens_s,
        "mfu": mfu, "mfu_with_head": mfu_head, "peak_memory_gib": mem, "losses": losses,
        "grad_norms": run["grad_norms"], "steps_timed": len(timed), "warmup": run["warmup"],
    }
    rows = [[label, f"{job.model.size} {params['non_embedding'] / 1e6:.1f}M non-emb", f"{B} x {L}",
             f"{run['durations'][0]:.2f}", f"{1e3 * median:.1f}", f"{tokens_s:,.0f}",
             f"{100 * mfu:.1f}%" if mfu is not None else "-",
             f"{100 * mfu_head:.1f}%" if mfu_head is not None else "-",
             f"{mem:.1f}" if mem is not None else "-", f"{losses[0]:.3f} -> {losses[-1]:.3f}"]]
    columns = ["run", "model", "batch x L", "first step s", "median step ms", "tokens/s", "MFU", "MFU incl. head",
               "peak GiB", "loss"]
    notes = [f"MFU = tokens/s x flops_per_token / peak bf16, flops_per_token = 6 N + 12 n_layers D L = "
             f"{fpt:,} (xdlm.models.flops_per_token: non-embedding N, no output head); 'incl. head' adds "
             f"6 D V = {head:,} per token", *extra_notes]
    if not peak:
        notes.append("no peak FLOPs for this device (dry run or not in DEVICE_SPECS): no MFU")
    summary = (f"{tokens_s:,.0f} tokens/s" + (f", MFU {100 * mfu:.1f}%" if mfu is not None else "")
               + (f", peak {mem:.1f} GiB" if mem is not None else "") + f", first step {run['durations'][0]:.1f} s"
               + ("" if finite else ", NON-FINITE LOSS"))
    return {"status": "ok" if finite else "failed", "summary": summary, "data": data, "notes": notes,
            "tables": [{"columns": columns, "rows": rows}]}


class SingleDeviceEngine:
    """What ``xdlm.train.engine.DDPEngine`` does at world size 1 (AdamW from
    ``xdlm.train.optim``, global-norm clipping, ``torch.compile`` when ``train.compile``), without
    its import of Ray, which a bare GPU image may lack."""

    def __init__(self, model, job) -> None:
        import torch

        from xdlm.train.optim import build_optimizer

        self.module = model
        self.grad_clip = job.optim.grad_clip
        self.optimizer = build_optimizer(model, job.optim)
        self.forward_model = torch.compile(model) if job.train.compile else model

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss) -> None:
        loss.backward()  # one micro-step per optimizer step here

    def step(self) -> float:
        import torch

        clip = self.grad_clip if self.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
        self.optimizer.step()
        return float(norm)


def _step_train(ctx: StepContext, compiled: bool) -> dict:
    import torch

    from xdlm.models import build_model
    from xdlm.objective import build_process, make_objective

    job, vocab, mask, device = _train_setup(ctx.dry_run, compiled=compiled)
    torch.manual_seed(0)
    model = build_model(job.model, vocab).to(device)
    engine = SingleDeviceEngine(model, job)
    objective = make_objective(job, build_process(job, vocab, mask))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup, steps = (1, 3) if ctx.dry_run else ((3, 10) if compiled else (2, 10))

    def on_step(step, durations, losses):
        print(f"  step {step}: {durations[-1]:.3f} s, loss {losses[-1]:.4f}", flush=True)

    run = _train_steps(job, vocab, mask, device, engine, objective, steps, warmup, on_step)
    label = "torch.compile" if compiled else "eager"
    notes = [f"loss backend: {job.diffusion.loss_backend} (triton on CUDA, chunked on the CPU); bf16 autocast; "
             f"AdamW (xdlm.train.optim.build_optimizer), clipping at {job.optim.grad_clip}, one micro-batch per step"]
    if compiled:
        notes.append("first step includes torch.compile's compilation (the model only; the loss is outside)")
    return _train_result(ctx, job, vocab, device, model, run, label, notes)


def step_train(ctx: StepContext) -> dict:
    return _step_train(ctx, compiled=False)


def step_train_compile(ctx: StepContext) -> dict:
    return _step_train(ctx, compiled=True)


def step_deepspeed(ctx: StepContext) -> dict:
    """ZeRO-2 through the project's DeepSpeedEngine, one process: torch.distributed with world
    size 1 on a free loopback port (nccl on a GPU, gloo on the CPU)."""
    import torch
    import torch.distributed as dist

    from xdlm.models import build_model
    from xdlm.objective import build_process, make_objective
    from xdlm.train.engine import DeepSpeedEngine

    job, vocab, mask, device = _train_setup(ctx.dry_run, deepspeed=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_model(job.model, vocab).to(device)
        start = time.perf_counter()
        engine = DeepSpeedEngine(model, job, world=1)
        init_s = time.perf_counter() - start
        objective = make_objective(job, build_process(job, vocab, mask))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        warmup, steps = (1, 2) if ctx.dry_run else (2, 6)
        run = _train_steps(job, vocab, mask, device, engine, objective, steps, warmup,
                           lambda s, d, losses: print(f"  step {s}: {d[-1]:.3f} s, loss {losses[-1]:.4f}", flush=True))
        stage = engine.engine.zero_optimization_stage()
        notes = [f"deepspeed.initialize through xdlm.train.engine.DeepSpeedEngine: {backend}, world size 1, "
                 f"ZeRO stage {stage}, bf16 {engine.engine.bfloat16_enabled()}; engine set up in {init_s:.1f} s"]
        result = _train_result(ctx, job, vocab, device, engine.engine.module, run, f"ZeRO-{stage}", notes)
        result["data"].update(zero_stage=stage, init_s=init_s, comm_backend=backend)
        if stage != 2:
            result["status"] = "failed"
            result["summary"] += f"; ZeRO stage {stage}, expected 2"
        return result
    finally:
        dist.destroy_process_group()


STEP_FUNCS = {
    "env": step_env, "aot": step_aot, "correctness": step_correctness, "kernel_bench": step_kernel_bench,
    "train": step_train, "train_compile": step_train_compile, "deepspeed": step_deepspeed,
}


# =================================================================================================
# The driver: one subprocess per step, results written as they come
# =================================================================================================


class Report:
    """OUT_DIR/gpu_check.json and gpu_check.md, rewritten atomically after every step."""

    def __init__(self, out_dir: Path, dry_run: bool, budget_s: float, argv: list[str]):
        self.out_dir = out_dir
        self.data = {"title": "GPU check" + (" (dry run)" if dry_run else ""), "dry_run": dry_run,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": budget_s,
                     "command": " ".join(argv), "steps": [], "finished": False}

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]

    def save(self) -> None:
        write_atomic(self.out_dir / "gpu_check.json", json.dumps(self.data, indent=1, default=str))
        write_atomic(self.out_dir / "gpu_check.md", self.markdown())

    def markdown(self) -> str:
        d = self.data
        lines = [f"# {d['title']}", "",
                 f"Started {d['started']}; budget {d['budget_s']:.0f} s; command `{d['command']}`."]
        if d.get("finished"):
            lines.append(f"Finished in {d['total_s']:.0f} s, exit status {d['exit_code']}.")
        env = next((s for s in self.steps if s["name"] == "env" and s.get("data")), None)
        spec = (env or {}).get("data", {}).get("spec") if env else None
        if spec:
            lines.append(f"Assumed device numbers: {spec['assumption']} ({spec['bandwidth_gbs']} GB/s, "
                         f"{spec['peak_bf16_tflops']} TFLOP/s bf16 dense).")
        lines += ["", md_table(["step", "status", "seconds", "summary"],
                               [[s["name"], s["status"], f"{s['seconds']:.1f}", s.get("summary", "")] for s in self.steps]), ""]
        for i, s in enumerate(self.steps, 1):
            lines += [f"## {i}. {s['title']} ({s['status']}, {s['seconds']:.1f} s)", "", s.get("summary", ""), ""]
            if s.get("error"):
                lines += ["```", s["error"].strip()[-3000:], "```", ""]
            for note in s.get("notes", []):
                lines.append(f"- {note}")
            if s.get("notes"):
                lines.append("")
            for table in s.get("tables", []):
                if table.get("title"):
                    lines += [f"**{table['title']}**", ""]
                lines += [md_table(table["columns"], table["rows"]), ""]
        return "\n".join(lines) + "\n"


def _child_env(name: str, dry_run: bool, scratch: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "platform"), env.get("PYTHONPATH")]))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, said out loud (silences 3.9's warning)
    env["PYTHONUNBUFFERED"] = "1"
    if name == "aot":
        env.pop("TRITON_INTERPRET", None)  # interpreter mode would replace every @jit
        env.update(TRITON_CACHE_DIR=str(scratch / "triton-aot-cache"), TRITON_ALWAYS_COMPILE="1",
                   TRITON_DUMP_PTXAS_LOG="1")
    elif dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(name: str, title: str, timeout: float, args, env_data: dict, scratch: Path) -> dict:
    out_dir = Path(args.out_dir)
    result_path = out_dir / "steps" / f"{name}.json"
    log_path = out_dir / "logs" / f"{name}.log"
    for p in (result_path, log_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        result_path.unlink()
    context = {"dry_run": args.dry_run, "out_dir": str(out_dir), "env": env_data,
               "options": {"aot_workers": args.aot_workers}}
    context_path = scratch / f"{name}.context.json"
    write_atomic(context_path, json.dumps(context, default=str))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--result", str(result_path),
           "--context", str(context_path)]
    start = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(name, args.dry_run, scratch),
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
    context = json.loads(context_path.read_text())
    ctx = StepContext(context["dry_run"], Path(context["out_dir"]), context.get("env") or {}, result_path,
                      context.get("options") or {})
    try:
        result = STEP_FUNCS[step](ctx)
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


def print_summary(report: Report, out_dir: Path) -> None:
    d = report.data
    print("\n" + "=" * 100)
    print(f"{d['title']}: {d.get('total_s', 0):.0f} s of a {d['budget_s']:.0f} s budget, exit status {d.get('exit_code')}")
    env = next((s for s in report.steps if s["name"] == "env"), None)
    if env and env.get("summary"):
        print(f"  {env['summary']}")
    for s in report.steps:
        summary = (s.get("summary") or "").replace("\n", " ")
        print(f"  {s['name']:14s} {s['status']:8s} {s['seconds']:6.1f} s  {summary[:140]}")
        for note in s.get("highlights", [])[:6]:
            print(f"  {'':14s} - {note[:150]}")
    print(f"  results: {out_dir / 'gpu_check.md'} and {out_dir / 'gpu_check.json'}; logs: {out_dir / 'logs'}")
    print("=" * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out_dir", nargs="?", help="where gpu_check.json / .md, steps/ and logs/ go")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (interpreter, chunked)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="global time budget in seconds; later steps are skipped (default 420; 900 in the dry run)")
    parser.add_argument("--only", default=None, help="comma-separated steps to run (env always runs)")
    parser.add_argument("--skip", default=None, help="comma-separated steps to skip")
    parser.add_argument("--aot-workers", type=int, default=None, help="parallel compiles (default: CPU count)")
    parser.add_argument("--limit", action="append", default=[], metavar="STEP=SECONDS",
                        help="override one step's time limit (repeatable)")
    parser.add_argument("--aot-json", type=Path, default=None,
                        help="only compile every kernel variant ahead of time and write the report here "
                             "(tests/kernels/test_gpu_compile.py)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return child_main(args.step, Path(args.result), Path(args.context))
    if args.aot_json:
        return aot_main(args.aot_json, args.aot_workers)
    if not args.out_dir:
        parser.error("OUT_DIR is required")
    budget = args.budget_s if args.budget_s is not None else (900.0 if args.dry_run else 420.0)
    selected = [n for n in STEP_NAMES if n == "env" or not args.only or n in args.only.split(",")]
    skipped_by_flag = set(args.skip.split(",")) if args.skip else set()
    unknown = (set(args.only.split(",")) if args.only else set()) | skipped_by_flag
    if unknown - set(STEP_NAMES):
        parser.error(f"unknown steps {sorted(unknown - set(STEP_NAMES))}; steps: {', '.join(STEP_NAMES)}")

    limits = {}
    for item in args.limit:
        step, _, seconds = item.partition("=")
        if step not in STEP_NAMES or not seconds:
            parser.error(f"--limit wants STEP=SECONDS with a step of {', '.join(STEP_NAMES)}, got {item!r}")
        limits[step] = float(seconds)
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir, args.dry_run, budget, [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
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
            timeout = min(limits.get(name, cap_dry if args.dry_run else cap_gpu), remaining)
            print(f"[{name}] {title} (at most {timeout:.0f} s) ...", flush=True)
            record = run_step(name, title, timeout, args, env_data, Path(scratch))
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


if __name__ == "__main__":
    raise SystemExit(main())
