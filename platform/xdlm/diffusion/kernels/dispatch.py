"""Backend names, their resolution, and the input checks every backend shares.

Backends (same numbers, different memory traffic):

- ``torch``: the eager reference in ``xdlm.diffusion`` (materialises several B x L x V buffers).
- ``chunked``: the same math in PyTorch over token chunks, recomputing in backward; peak extra
  memory O(chunk x V).  It is also the pure-PyTorch twin of every Triton kernel.
- ``triton``: fused kernels that stream each row of logits (``triton_nelbo``, ``triton_sample``).
- ``auto``: ``triton`` on CUDA tensors when Triton is installed, ``chunked`` everywhere else.

Triton is imported lazily, only when a ``triton`` backend actually runs, so importing ``xdlm``
never imports Triton (and tests can set ``TRITON_INTERPRET=1`` before it is imported).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

BACKENDS = ("auto", "torch", "chunked", "triton")

#: Logit dtypes the streaming backends read directly (computing in float32 or float64 inside).
LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Default number of logits (rows x V) in one chunk of the chunked paths, per device type: on
#: the CPU 2**20 float32 values = 4 MiB per temporary (cache-friendly; per-op overhead stays
#: small); on a GPU 2**24 (64 MiB), so that each op is long enough to hide its launch.
CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 24}

_TRUE = ("1", "true", "yes", "on")


def interpreter_requested() -> bool:
    """TRITON_INTERPRET is set (Triton then runs kernels on the CPU through numpy)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _kernels_compiled_without_interpreter() -> bool:
    """True when Triton (its own library of @jit helpers, or our kernel modules) was imported
    while TRITON_INTERPRET was off: those are then GPU-compiled objects, and an interpreted
    kernel calling them fails deep inside Triton."""
    random = sys.modules.get("triton.language.random")
    if random is not None and type(random.randint).__name__ != "InterpretedFunction":
        return True
    module = sys.modules.get("xdlm.diffusion.kernels.triton_common")
    return module is not None and not module.INTERPRETED


def check_triton(device: torch.device, compute_dtype: torch.dtype) -> None:
    """Raise a clear error (never a crash inside Triton) when ``triton`` cannot run here."""
    if not triton_installed():
        raise RuntimeError("backend='triton' needs the triton package; use backend='chunked' or 'auto'")
    if compute_dtype == torch.float64:
        raise ValueError(
            "backend='triton' computes in float32; for float64 use backend='chunked' or 'torch'"
        )
    if device.type == "cuda":
        return
    if device.type != "cpu":
        raise RuntimeError(f"backend='triton' runs on CUDA tensors, got a tensor on {device}")
    if not interpreter_requested():
        raise RuntimeError(
            "backend='triton' got CPU tensors: Triton runs on the CPU only under its interpreter, "
            "enabled by TRITON_INTERPRET=1 set before triton is imported. Use backend='auto' or "
            "'chunked' on the CPU (same numbers), or move the tensors to a CUDA device."
        )
    if _kernels_compiled_without_interpreter():
        raise RuntimeError(
            "backend='triton' got CPU tensors and TRITON_INTERPRET=1 is set, but triton was "
            "imported before it was set, so its kernels are compiled for the GPU: set "
            "TRITON_INTERPRET=1 before anything imports triton, or use backend='chunked'."
        )


def resolve(backend: str, device: torch.device, compute_dtype: torch.dtype) -> str:
    """Map a requested backend name to the one that runs: 'torch', 'chunked' or 'triton'."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda" and compute_dtype != torch.float64 and triton_installed():
            return "triton"
        return "chunked"
    if backend == "triton":
        check_triton(device, compute_dtype)
    return backend


def check_logits(name: str, logits: torch.Tensor) -> None:
    if logits.dtype not in LOGIT_DTYPES:
        allowed = ", ".join(str(d).replace("torch.", "") for d in LOGIT_DTYPES)
        raise ValueError(f"{name} must be a floating tensor ({allowed}), got dtype {logits.dtype}")


def as_rows(logits: torch.Tensor, *, need_view: bool = False) -> torch.Tensor:
    """[..., V] -> [T, V] with unit stride along V (what the kernels index).

    A view whenever the layout allows one; otherwise a contiguous copy, unless ``need_view``
    (the in-place gradient must land in the caller's buffer), which raises instead.
    """
    V = logits.shape[-1]
    try:
        rows = logits.view(-1, V)
    except RuntimeError:
        rows = None
    if rows is None or (rows.stride(-1) != 1 and V > 1):
        if need_view:
            raise ValueError(
                "inplace_backward=True needs logits whose [..., V] rows form a strided [T, V] view "
                f"with unit stride along V; got shape {tuple(logits.shape)} and strides "
                f"{tuple(logits.stride())}. Pass logits.contiguous() or inplace_backward=False."
            )
        rows = logits.reshape(-1, V).contiguous()
    return rows


def as_ids(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids [...] -> contiguous int64 [T] (cheap: one value per token)."""
    return tokens.reshape(-1).to(torch.int64).contiguous()


def chunk_rows(
    n_rows: int,
    vocab_size: int,
    chunk_tokens: int | None,
    device: torch.device | None = None,
    scale: int = 1,
) -> int:
    """Rows per chunk: ``chunk_tokens`` if given, else as many as fit ``scale x CHUNK_ELEMENTS``
    (the fused LM head asks for larger chunks: each chunk also reads and writes all of dW)."""
    if chunk_tokens is not None:
        if int(chunk_tokens) < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        return int(chunk_tokens)
    budget = CHUNK_ELEMENTS.get(device.type if device is not None else "cpu", CHUNK_ELEMENTS["cuda"])
    return max(1, min(max(n_rows, 1), scale * budget // max(vocab_size, 1)))
