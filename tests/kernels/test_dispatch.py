"""Backend resolution and bad input: clear errors, never a crash inside Triton."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.kernels.conftest import make_problem
from xdlm.diffusion.kernels import dispatch, resolve_backend

ROOT = Path(__file__).resolve().parents[2]


def test_auto_resolves_by_device_and_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, torch.float32) == "chunked"
    assert resolve_backend("auto", cuda, torch.float64) == "chunked"  # triton is float32-only
    assert resolve_backend("auto", cuda, torch.float32) == ("triton" if dispatch.triton_installed() else "chunked")
    assert resolve_backend("torch", cuda, torch.float32) == "torch"
    assert resolve_backend("chunked", cuda, torch.float32) == "chunked"


def test_unknown_backend_lists_the_choices():
    proc, logits, x0, z, alpha, dalpha = make_problem(10, 9, 0.5)
    with pytest.raises(ValueError, match="unknown backend 'fast'; available: auto, torch, chunked, triton"):
        proc.nelbo(logits, x0, z, alpha, dalpha, backend="fast")
    with pytest.raises(ValueError, match="unknown backend"):
        proc.sample_step(logits, z, 0.6, 0.3, backend="fast")


def test_wrong_dtypes_are_rejected():
    proc, logits, x0, z, alpha, dalpha = make_problem(10, 9, 0.5)
    with pytest.raises(ValueError, match="logits must be a floating tensor"):
        proc.nelbo(logits.long(), x0, z, alpha, dalpha, backend="chunked")
    with pytest.raises(ValueError, match="x0 must be an integer tensor"):
        proc.nelbo(logits, x0.float(), z, alpha, dalpha, backend="chunked")
    with pytest.raises(ValueError, match="backend='triton' computes in float32"):
        proc.nelbo(logits.double(), x0, z, alpha, dalpha, backend="triton")


def test_inplace_backward_needs_a_streaming_backend_and_a_view():
    proc, logits, x0, z, alpha, dalpha = make_problem(10, 9, 0.5, shape=(3, 4))
    with pytest.raises(ValueError, match="inplace_backward=True needs backend"):
        proc.nelbo(logits, x0, z, alpha, dalpha, inplace_backward=True)
    strided = logits.transpose(0, 1).contiguous().transpose(0, 1)  # [3, 4, V] not viewable as rows
    with pytest.raises(ValueError, match="inplace_backward=True needs logits whose"):
        proc.nelbo(strided, x0, z, alpha, dalpha, backend="chunked", inplace_backward=True)


def test_bad_chunk_size():
    proc, logits, x0, z, alpha, dalpha = make_problem(10, 9, 0.5)
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1"):
        proc.nelbo(logits, x0, z, alpha, dalpha, backend="chunked", chunk_tokens=0)


def test_empty_batch():
    proc, logits, x0, z, alpha, dalpha = make_problem(10, 9, 0.5, shape=(2, 3))
    lg = logits[:0].clone().requires_grad_(True)
    loss = proc.nelbo(lg, x0[:0], z[:0], alpha[:0], dalpha[:0], backend="chunked")
    loss.sum().backward()
    assert loss.shape == (0, 3) and lg.grad.shape == lg.shape


def _run_python(code: str, interpret: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "platform"), str(ROOT)])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_triton_on_cpu_without_the_interpreter_raises_a_clear_error():
    """In a fresh process without TRITON_INTERPRET: importing xdlm does not import triton, and
    backend='triton' on CPU tensors raises our RuntimeError for each entry point."""
    result = _run_python(
        """
        import sys, torch
        import xdlm.diffusion, xdlm.diffusion.kernels
        assert "triton" not in sys.modules, "importing xdlm imported triton"
        from xdlm.diffusion import XDLM
        proc = XDLM(10, 9, 0.5)
        logits, x0, z = torch.randn(2, 10), torch.tensor([1, 2]), torch.tensor([9, 2])
        calls = {
            "nelbo": lambda: proc.nelbo(logits, x0, z, 0.5, -1.0, backend="triton"),
            "linear": lambda: proc.linear_nelbo(torch.randn(2, 4), torch.randn(10, 4), x0, z, 0.5, -1.0, backend="triton"),
            "sample": lambda: proc.sample_step(logits, z, 0.6, 0.5, backend="triton"),
        }
        for name, call in calls.items():
            try:
                call()
            except RuntimeError as err:
                assert "TRITON_INTERPRET=1" in str(err) and "backend='auto'" in str(err), err
                print(name, "ok")
            else:
                raise SystemExit(name + ": no error")
        assert "triton" not in sys.modules, "a refused call still imported triton"
        """,
        interpret=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["nelbo", "ok", "linear", "ok", "sample", "ok"]


def test_interpreter_switched_on_after_triton_was_imported_is_refused_clearly():
    result = _run_python(
        """
        import os, torch, triton
        os.environ["TRITON_INTERPRET"] = "1"  # too late: triton's own helpers are compiled
        from xdlm.diffusion import XDLM
        proc = XDLM(10, 9, 0.5)
        try:
            proc.sample_step(torch.randn(2, 10), torch.tensor([9, 2]), 0.6, 0.5, backend="triton")
        except RuntimeError as err:
            assert "imported before it was set" in str(err), err
            print("ok")
        """,
        interpret=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
