"""How far the training estimate of the NELBO may sit from the exact entropy, with the exact
(leave-one-out) denoiser: the end terms of the time interval (derived in docs/synthetic.md).

Training averages l_t over t ~ U[t_min, 1], i.e. estimates (1 / (1 - t_min)) int_{t_min}^1 l_t dt.
With the exact denoiser the integral is a difference of mutual informations,

    E int_{t_min}^1 l_t dt = I(x0; z_{t_min}) - I(x0; z_1) = H(x0) - H(x0 | z_{t_min}) - I(x0; z_1),

and, per position (z_i depends on x0[i] alone, through "kept" w.p. alpha, else noise drawn
independently of x0), with H_1 the entropy of one symbol and h(.) the binary entropy:

    0 <= H(x0 | z_{t_min}) <= L [h(alpha_{t_min}) 1{k > 0} + (1 - alpha_{t_min}) H_1]
    0 <= I(x0; z_1)        <= L alpha_1 H_1.

So E[estimate] lies in [(H - U_0 - U_1) / (1 - t_min), H / (1 - t_min)].
"""

from __future__ import annotations

import math


def binary_entropy(p: float) -> float:
    """h(p) = -p log p - (1 - p) log(1 - p) in nats."""
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0)


def nelbo_interval(entropy: float, seq_len: int, symbol_entropy: float, k: float, alpha_t_min: float,
                   alpha_one: float, t_min: float) -> tuple[float, float]:
    """[lo, hi] for E[NELBO estimate] per sequence of the exact denoiser, H = ``entropy`` =
    H(x0) per sequence, ``symbol_entropy`` = H_1 (see the module docstring)."""
    flag = binary_entropy(alpha_t_min) if k > 0 else 0.0
    start = seq_len * (flag + (1.0 - alpha_t_min) * symbol_entropy)
    end = seq_len * alpha_one * symbol_entropy
    return (entropy - start - end) / (1.0 - t_min), entropy / (1.0 - t_min)
