"""How the correctness step judges a backend against torch: the tolerances, the two error
measures, and the table of checks (saved after each row, so a step stopped at its time limit
keeps what it checked).

- ``scaled_error(got, want)`` = max |got - want| / max |want| over the finite entries of want
  (the sense of tests/kernels' ``assert_close_scaled``); inf if the infinities differ.
- ``chi_square_p(draws, law)``: Pearson's chi-square goodness of fit of integer draws to a law,
  bins with expected count < 5 merged; a draw of an impossible id gives 0.
"""

from __future__ import annotations

import math
import time

from .common import StepContext, fmt

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
    if exp[-1] < 5:  # the merged bin is still too small for the test: fold it into the largest
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
