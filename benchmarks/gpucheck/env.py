"""Step ``env``: what the machine is.

Records the GPU (name, capability, SMs, memory, driver from nvidia-smi), the versions of Python,
torch (and its CUDA, cuDNN, NCCL), Triton, DeepSpeed and the ptxas builds Triton bundles, and
the CPU.  The bandwidth and peak FLOP/s the later steps divide by come from the device table
(devices.py) keyed by the GPU's name: an assumption, said so in the output.  The dry run records
the CPU and the versions only.  Every later step gets this step's ``data`` as ``ctx.env``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import StepContext, fmt
from .devices import device_spec


def pkg_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ptxas_versions() -> dict:
    """The versions of the ptxas binaries inside the triton package (found without importing
    triton: this process may be the dry run's, where triton must load under the interpreter)."""
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


def _gpu_info(torch, notes: list[str]) -> dict:
    """The CUDA device's properties, driver and library versions, and its device-table entry;
    appends the assumption (and any driver / ptxas mismatch) to ``notes``."""
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
    info = dict(
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
    return info


def _driver_note(info: dict) -> str | None:
    """Triton compiles sm_90+ with a CUDA 13 ptxas, whose cubins a pre-580 driver cannot load."""
    driver = info.get("driver") or ""
    ptxas_major = {k: v.split(".")[0] for k, v in info["ptxas"].items() if v[:1].isdigit()}
    if driver[:3].isdigit() and int(driver.split(".")[0]) < 580 and ptxas_major.get("ptxas-blackwell") == "13":
        return (f"driver {driver} predates CUDA 13 (580): Triton compiles sm_90+ with its CUDA 13 "
                "ptxas; if kernels fail to load, set TRITON_PTXAS_BLACKWELL_PATH to the 12.x "
                "ptxas (TRITON_PTXAS_PATH) or update the driver")
    return None


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
        info.update(_gpu_info(torch, notes))
        note = _driver_note(info)
        if note:
            notes.append(note)
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
