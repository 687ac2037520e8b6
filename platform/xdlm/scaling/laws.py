"""The formulas the scaling fits use, one function per formula (docs/scaling.md).

Notation: N non-embedding parameters, D training tokens, C training FLOPs, L validation loss
(nats/token), x = ln N.  Every function takes and returns numpy arrays (or floats) elementwise.
"""

from __future__ import annotations

import numpy as np


def isoflop_parabola(x, log_floor: float, curvature: float, x_opt: float):
    """ln L = log_floor + curvature (x - x_opt)^2 at one compute budget, x = ln N.

    The vertex (x_opt, log_floor) is the budget's compute-optimal size ln N* and its loss ln L*.
    """
    return log_floor + curvature * (np.asarray(x, dtype=float) - x_opt) ** 2


def power_law(c, coefficient: float, exponent: float):
    """y = coefficient * C^exponent (N*(C), D*(C), L*(C)); fitted as ln y = ln coefficient + exponent ln C."""
    return coefficient * np.asarray(c, dtype=float) ** exponent


def saturating_power_law(c, floor: float, coefficient: float, exponent: float):
    """L*(C) = E + c * C^exponent with E = ``floor``: the compute-optimal loss of ``surface``.

    Minimising ``surface`` over N at C = 6 N D gives exactly this form, with exponent
    -alpha beta / (alpha + beta) (Hoffmann et al. 2022, eq. 4); a plain power law c C^e is its
    E = 0 case and bends away from it wherever E is a large part of L.
    """
    return floor + coefficient * np.asarray(c, dtype=float) ** exponent


def surface(n, d, floor: float, a: float, alpha: float, b: float, beta: float):
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022), with E = ``floor``."""
    return floor + a / np.asarray(n, dtype=float) ** alpha + b / np.asarray(d, dtype=float) ** beta


def _log_sum_exp(terms):
    """ln sum_i exp(terms_i) over axis 0 and the weights exp(terms_i) / sum (its gradient), shift-stable."""
    top = terms.max(axis=0)
    w = np.exp(terms - top)
    total = w.sum(axis=0)
    return top + np.log(total), w / total


def _surface_terms(theta, log_n, log_d):
    e, a, alpha, b, beta = theta
    log_n, log_d = np.broadcast_arrays(np.asarray(log_n, dtype=float), np.asarray(log_d, dtype=float))
    return np.stack([np.full(log_n.shape, e, dtype=float), a - alpha * log_n, b - beta * log_d]), log_n, log_d


def log_surface(theta, log_n, log_d):
    """ln L(N, D) in the log-sum-exp form the fit works in, theta = (e, a, alpha, b, beta):

        ln L = LSE(e, a - alpha ln N, b - beta ln D),   E = exp(e), A = exp(a), B = exp(b).
    """
    return _log_sum_exp(_surface_terms(theta, log_n, log_d)[0])[0]


def log_surface_jacobian(theta, log_n, log_d):
    """d ln L / d theta, [points, 5]: with w = the softmax of the three terms,
    (w_E, w_A, -w_A ln N, w_B, -w_B ln D)."""
    terms, log_n, log_d = _surface_terms(theta, log_n, log_d)
    w = _log_sum_exp(terms)[1]
    return np.stack([w[0], w[1], -w[1] * log_n, w[2], -w[2] * log_d], axis=-1)


def data_curve(d, floor: float, b: float, beta: float):
    """One model's training curve L(D) = E + B / D^beta, with E = ``floor``."""
    return floor + b / np.asarray(d, dtype=float) ** beta


def log_data_curve(theta, log_d):
    """ln L(D) = LSE(e, b - beta ln D), theta = (e, b, beta): ``data_curve`` in log-sum-exp form."""
    e, b, beta = theta
    log_d = np.asarray(log_d, dtype=float)
    return np.logaddexp(e, b - beta * log_d)


def log_data_curve_jacobian(theta, log_d):
    """d ln L(D) / d theta, [points, 3]: (w_E, w_B, -w_B ln D) with w the softmax of the two terms."""
    e, b, beta = theta
    log_d = np.asarray(log_d, dtype=float)
    w_b = 1.0 / (1.0 + np.exp(np.clip(e - (b - beta * log_d), -700, 700)))
    return np.stack([1.0 - w_b, w_b, -w_b * log_d], axis=-1)


def optimal_allocation_exponents(alpha: float, beta: float) -> tuple[float, float]:
    """The surface's compute-optimal exponents with C = 6 N D: N* ~ C^(beta/(alpha+beta)),
    D* ~ C^(alpha/(alpha+beta)) (Hoffmann et al. 2022, eq. 4): a check on the IsoFLOP power laws."""
    return beta / (alpha + beta), alpha / (alpha + beta)
