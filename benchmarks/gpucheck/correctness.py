"""Step ``correctness``: the triton (and chunked) backends against torch.

On the GPU at T x V = 8192 x 50257 and 2048 x 126464, fp32 and bf16 logits; in the dry run at
64 x 257 with Triton under its interpreter.  Checked (tolerances in checks.py):

- NELBO: the per-token loss, d logits and d alpha of sum(w * loss) with weights w from 0.5 to 2
  (so a gradient scaled wrongly per token shows), plus d logits at [MASK] exactly 0; the triton
  in-place backward too (bf16);
- linear_nelbo (LM head + loss fused, D = 768; 32 in the dry run): loss, d hidden / weight / bias;
- the sampling step, deterministic parts: greedy tokens and their probability against the dense
  step, the triton row pass (nucleus cut, argmax, log-sum-exp) against its chunked twin;
- the sampling step, random part: chi-square p-values of 3 x n draws against the exact posterior
  q(z_s | z_t, x = softmax(logits)) computed in float64 (z_t = [MASK], the likeliest id, an
  unlikely one; top_p none and 0.9).
"""

from __future__ import annotations

import math

from .checks import CHI2_P, SAMPLE_MISMATCH, TOLERANCES, Checks, chi_square_p, scaled_error
from .common import DRY_SHAPES, REAL_SHAPES, K, StepContext, free_memory


def _nelbo_problem(T, V, m, dtype, device, seed):
    """(process, logits, x0, z, alpha, dalpha): a random batch with [MASK] = ``m`` noised by the
    process's own marginal, and a large mask logit that every backend must ignore."""
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
    """[loss, d hidden, d weight, d bias] of sum(w * linear_nelbo) with per-token weights w."""
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


def _check_nelbo(checks: Checks, device, dry: bool, shapes, dtypes, streaming) -> None:
    import torch

    col = 1 if dry else 0
    for T, V in shapes:
        m = V // 2  # the mask id in the middle: both sides of it are tiles
        for dname, dtype in dtypes:
            shape = f"{T} x {V}"
            problem = _nelbo_problem(T, V, m, dtype, device, seed=T + V)
            ref = _run_nelbo(*problem, "torch")
            variants = [(b, False) for b in streaming] + ([("triton", True)] if dname == "bf16" and "triton" in streaming else [])
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
            free_memory(device)


def _check_linear(checks: Checks, device, dry: bool, shapes, dtypes, streaming) -> None:
    import torch

    col = 1 if dry else 0
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
            free_memory(device)


def _check_sample_exact(checks: Checks, device, dry: bool, shapes, dtypes, streaming) -> None:
    """The sampling step's deterministic parts: greedy tokens, their probability, the row pass."""
    import torch

    from xdlm.diffusion import XDLM
    from xdlm.diffusion.kernels import chunked_sample, dispatch, triton_sample

    mismatch = 0.0 if dry else SAMPLE_MISMATCH
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
                    checks.add("sample", backend, shape, dname, f"greedy tokens != dense ({tp})", frac, mismatch)
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
                rd = triton_sample.row_draw(logits, m, top_p, True, None) if "triton" in streaming else None
                if rd is not None:
                    checks.add("sample", "triton row pass", shape, dname, f"cut != chunked twin ({tp})",
                               float((rd.threshold != twin.threshold).double().mean()), mismatch)
                    checks.add("sample", "triton row pass", shape, dname, f"argmax != chunked twin ({tp})",
                               float((rd.draw != twin.draw).double().mean()), mismatch)
                    checks.add("sample", "triton row pass", shape, dname, f"lse abs err ({tp})",
                               float((rd.lse - twin.lse).abs().max()), 1e-5 if dry else 1e-4)
                del want, twin, rd
            del logits, z
            free_memory(device)


def _check_sample_law(checks: Checks, device, dry: bool, streaming) -> None:
    """The sampling step's draws against the exact posterior (chi-square), one logits row
    repeated n times per z_t: V = 50257 and n = 20000 on the GPU, V = 13 and n = 1500 dry."""
    import torch

    from xdlm.diffusion import XDLM

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


def step_correctness(ctx: StepContext) -> dict:
    import torch

    from xdlm.diffusion.kernels import dispatch

    dry = ctx.dry_run
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        try:
            dispatch.check_triton(device, torch.float32)
        except RuntimeError as err:  # the dry run must exercise the interpreter
            raise RuntimeError(f"the dry run needs TRITON_INTERPRET=1 set before triton is imported: {err}") from err
    checks = Checks(ctx)
    shapes = DRY_SHAPES if dry else REAL_SHAPES
    dtypes = [("fp32", torch.float32), ("bf16", torch.bfloat16)]
    streaming = ["triton", "chunked"]  # the backends checked against torch
    _check_nelbo(checks, device, dry, shapes, dtypes, streaming)
    _check_linear(checks, device, dry, shapes, dtypes, streaming)
    _check_sample_exact(checks, device, dry, shapes, dtypes, streaming)
    _check_sample_law(checks, device, dry, streaming)
    return checks.result()
