"""Kernel tests: Triton runs on the CPU under its interpreter, which must be switched on before
triton is first imported, so it is set here, at collection time (xdlm itself never imports
triton unless a ``triton`` backend runs)."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from xdlm.diffusion import XDLM  # noqa: E402
from xdlm.diffusion.kernels import dispatch  # noqa: E402


@pytest.fixture
def triton_cpu():
    """Skip-free guard for @pytest.mark.triton tests: fail loudly (not skip) when the interpreter
    cannot be used, so CI never passes without having run the kernels."""
    if not dispatch.triton_installed():
        pytest.fail("triton is not installed: the triton tests cannot run")
    dispatch.check_triton(torch.device("cpu"), torch.float32)  # raises with the reason
    with warnings.catch_warnings():
        # the interpreter runs masked-out lanes through numpy too (log(0) and the like)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def make_problem(N, mask_id, k, shape=(3, 7), seed=0, dtype=torch.float32, scale=3.0, per_token=False):
    """(process, logits [*shape, N], x0, z_t, alpha_t, dalpha_t) with every kind of z_t present.

    The mask logit gets a large value: every backend must ignore it.
    """
    gen = torch.Generator().manual_seed(seed)
    proc = XDLM(N, mask_id, k)
    x0 = torch.randint(0, N - 1, shape, generator=gen)
    x0 = x0 + (x0 >= mask_id).long()
    a_shape = shape if per_token else (*shape[:-1], 1)
    alpha = torch.rand(a_shape, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    dalpha = -(torch.rand(a_shape, generator=gen, dtype=torch.float64) + 0.5)
    z = proc.sample_marginal(x0, alpha, generator=gen)
    z.view(-1)[0] = mask_id  # at least one masked and one clean token whatever the draw
    z.view(-1)[-1] = x0.view(-1)[-1]
    logits = scale * torch.randn(*shape, N, generator=gen)
    logits[..., mask_id] = 50.0
    return proc, logits.to(dtype), x0, z, alpha, dalpha


def assert_close_scaled(got, want, rtol, what=""):
    """|got - want| <= rtol * max|want| everywhere: relative to the tensor's scale, the sense in
    which gradients (with entries near 0) are compared."""
    got, want = got.double(), want.double()
    assert got.shape == want.shape, (what, got.shape, want.shape)
    finite = torch.isfinite(want)
    assert torch.equal(got[~finite], want[~finite]), f"{what}: infinities differ"  # e.g. logp_z at [MASK]
    got, want = got[finite], want[finite]
    if want.numel() == 0:
        return
    scale = want.abs().max().clamp_min(1e-30)
    err = (got - want).abs().max()
    assert err <= rtol * scale, f"{what}: max error {float(err):.3g} > {rtol} x scale {float(scale):.3g}"
