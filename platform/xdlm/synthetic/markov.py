"""An order-n Markov chain over V symbols whose law is known exactly.

Notation (docs/synthetic.md): symbols 0..V-1; the chain of order n lives on the expanded state
space of contexts s = (x_{i-n+1}, ..., x_i), encoded in base V with the newest symbol last,
s = sum_j x_{i-n+1+j} V^(n-1-j), so S = V^n states.  One step appends a symbol x:

    s' = (s mod V^(n-1)) V + x,        P(x | s) = T[s, x].

A sequence x_1..x_L (L >= n) starts from the stationary law pi of the expanded chain (the joint
law of n consecutive symbols), which makes the process stationary:

    log p(x) = log pi[s_n] + sum_{i > n} log T[s_{i-1}, x_i]
    h        = sum_s pi[s] H(T[s, .])                 (entropy rate, nats/symbol)
    H(X_1:L) = H(pi) + (L - n) h                       (exact block entropy)

Construction from a seed (``MarkovChain.generate``): each row keeps a random support of
max(1, round((1 - sparsity) V)) symbols with Dirichlet(concentration) weights on it, then is mixed
with the uniform law, T = (1 - floor) T_sparse + floor / V.  Low concentration and high sparsity
lower the entropy rate; floor > 0 makes every transition possible, so the chain is irreducible and
aperiodic (pi unique) and every sequence has a finite log p.

Parameters are drawn with numpy's PCG64 (``numpy.random.default_rng``), which gives the same
numbers on every machine; all the math is float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

MAX_ORDER = 3
DENSE_STATIONARY_STATES = 1024


@dataclass(frozen=True)
class MarkovSpec:
    """Everything that defines a chain (the same spec gives the same chain, bit for bit)."""

    num_symbols: int
    """V >= 2."""
    order: int = 1
    """n in 1..3."""
    concentration: float = 0.5
    """Dirichlet concentration of each row's weights (> 0; small = peaked rows, low entropy)."""
    sparsity: float = 0.5
    """Share of each row's symbols given no Dirichlet weight, in [0, 1)."""
    floor: float = 0.01
    """Uniform mass mixed into every row, in (0, 1]: keeps every transition possible."""
    seed: int = 0
    """Seed of the parameters (>= 0)."""

    def __post_init__(self) -> None:
        if not isinstance(self.num_symbols, int) or self.num_symbols < 2:
            raise ValueError(f"num_symbols: must be an integer >= 2, got {self.num_symbols!r}")
        if not isinstance(self.order, int) or not 1 <= self.order <= MAX_ORDER:
            raise ValueError(f"order: must be an integer in 1..{MAX_ORDER}, got {self.order!r}")
        if not self.concentration > 0:
            raise ValueError(f"concentration: must be > 0, got {self.concentration!r}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity: must be in [0, 1), got {self.sparsity!r}")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"floor: must be in (0, 1], got {self.floor!r}")
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed!r}")


class MarkovChain:
    """An order-n chain on V symbols given by its transition table ``trans`` [S, V] (rows sum to 1,
    S = V^n, contexts in base V with the newest symbol last)."""

    def __init__(self, trans: torch.Tensor, order: int, spec: MarkovSpec | None = None) -> None:
        trans = torch.as_tensor(trans, dtype=torch.float64)
        num_symbols = trans.shape[-1]
        if trans.dim() != 2 or trans.shape[0] != num_symbols**order:
            raise ValueError(f"trans must be [V^order, V] = [{num_symbols**order}, {num_symbols}], "
                             f"got {tuple(trans.shape)}")
        if bool((trans < 0).any()) or not torch.allclose(trans.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-12):
            raise ValueError("trans rows must be probability vectors")
        self.spec = spec
        self.order = int(order)
        self.num_symbols = int(num_symbols)
        self.num_states = int(trans.shape[0])
        self.trans = trans
        self.log_trans = trans.log()
        self.stationary = stationary_law(trans, self.order)
        self.log_stationary = self.stationary.log()
        self._cdf = np.cumsum(trans.numpy(), axis=1)
        self._init_cdf = np.cumsum(self.stationary.numpy())

    @classmethod
    def generate(cls, spec: MarkovSpec) -> MarkovChain:
        """The chain of ``spec`` (see the module docstring for the construction)."""
        v, states = spec.num_symbols, spec.num_symbols**spec.order
        rng = np.random.default_rng([spec.seed, v, spec.order])
        support = max(1, round((1.0 - spec.sparsity) * v))
        columns = np.argsort(rng.random((states, v)), axis=1)[:, :support]
        weights = rng.standard_gamma(spec.concentration, size=(states, support))
        empty = weights.sum(1) <= 0  # every gamma draw underflowed: uniform on the support
        weights[empty] = 1.0
        sparse = np.zeros((states, v))
        np.put_along_axis(sparse, columns, weights / weights.sum(1, keepdims=True), axis=1)
        trans = (1.0 - spec.floor) * sparse + spec.floor / v
        trans /= trans.sum(1, keepdims=True)
        return cls(torch.from_numpy(trans), spec.order, spec)

    # -- exact quantities -------------------------------------------------------------------
    def entropy_rate(self) -> float:
        """h = sum_s pi[s] H(T[s, .]) in nats per symbol."""
        row_entropy = -(self.trans * self.log_trans).sum(-1)
        return float((self.stationary * row_entropy).sum())

    def block_entropy(self, length: int) -> float:
        """H(X_1:L) = H(pi) + (L - n) h in nats: E[-log p(x)] for sequences of ``length``."""
        self._check_length(length)
        h_pi = float(-(self.stationary * self.log_stationary).sum())
        return h_pi + (length - self.order) * self.entropy_rate()

    def unigram(self) -> torch.Tensor:
        """Stationary law of one symbol: [V]."""
        return self.stationary.view(-1, self.num_symbols).sum(0)

    def bigram(self) -> torch.Tensor:
        """Stationary joint law of two consecutive symbols (x_i, x_{i+1}): [V, V]."""
        v = self.num_symbols
        if self.order == 1:
            return self.stationary[:, None] * self.trans
        return self.stationary.view(-1, v, v).sum(0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) of sequences x [B, L] (ids in 0..V-1, L >= n): [B] float64."""
        x = torch.as_tensor(x).long()
        if x.dim() != 2:
            raise ValueError(f"x must be [B, L], got shape {tuple(x.shape)}")
        self._check_length(x.shape[1])
        if bool(((x < 0) | (x >= self.num_symbols)).any()):
            raise ValueError(f"x must hold symbols in [0, {self.num_symbols}) (no [MASK])")
        n = self.order
        logp = self.log_stationary[self.encode(x[:, :n])]
        if x.shape[1] > n:
            contexts = self.encode(x.unfold(1, n, 1)[:, :-1])  # [B, L - n]: s_{i-1} for i > n
            logp = logp + self.log_trans[contexts, x[:, n:]].sum(1)
        return logp

    def encode(self, symbols: torch.Tensor) -> torch.Tensor:
        """Contexts of the last dimension (n symbols, oldest first) -> state ids [...]."""
        powers = self.num_symbols ** torch.arange(self.order - 1, -1, -1, device=symbols.device)
        return (symbols.long() * powers).sum(-1)

    def digits(self) -> torch.Tensor:
        """The symbols of every state, oldest first: [S, n]."""
        states = torch.arange(self.num_states)
        powers = self.num_symbols ** torch.arange(self.order - 1, -1, -1)
        return (states[:, None] // powers) % self.num_symbols

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, num: int, length: int, rng: np.random.Generator) -> torch.Tensor:
        """``num`` stationary sequences of ``length`` (>= n): LongTensor [num, length].

        Inverse-CDF draws from ``rng`` (one uniform per symbol after the first context), so a
        seeded ``rng`` gives the same sequences on every machine."""
        self._check_length(length)
        n, v = self.order, self.num_symbols
        out = np.empty((num, length), dtype=np.int64)
        state = np.minimum(np.searchsorted(self._init_cdf, rng.random(num), side="right"),
                           self.num_states - 1)
        out[:, :n] = self.digits().numpy()[state]
        tail = v ** (n - 1)
        for i in range(n, length):
            u = rng.random(num)
            x = np.minimum((u[:, None] >= self._cdf[state]).sum(1), v - 1)
            out[:, i] = x
            state = (state % tail) * v + x
        return torch.from_numpy(out)

    def describe(self) -> dict[str, Any]:
        """JSON-able definition and exact facts (logged with a run)."""
        facts = {"num_symbols": self.num_symbols, "order": self.order, "num_states": self.num_states,
                 "entropy_rate": self.entropy_rate(),
                 "unigram_entropy": entropy(self.unigram()), "bigram_entropy": entropy(self.bigram())}
        if self.spec is not None:
            facts["spec"] = asdict(self.spec)
        return facts

    def _check_length(self, length: int) -> None:
        if length < self.order:
            raise ValueError(f"sequences must be at least order = {self.order} long, got {length}")


def stationary_law(trans: torch.Tensor, order: int) -> torch.Tensor:
    """pi with pi P = pi for the expanded chain of ``trans`` [S, V]: [S] float64.

    P[s, s'] = T[s, x] for s' = (s mod V^(n-1)) V + x.  Up to 1024 states: a dense linear solve
    of (P^T - I) pi = 0 with sum(pi) = 1; above: power iteration to 1e-15 (converges because
    floor > 0 makes the chain aperiodic and irreducible).
    """
    states, v = trans.shape
    tail = states // v
    if states <= DENSE_STATIONARY_STATES:
        dense = torch.zeros(states, states, dtype=torch.float64)
        source = torch.arange(states)[:, None].expand(states, v)
        target = (source % tail) * v + torch.arange(v)
        dense[source, target] = trans
        system = dense.T - torch.eye(states, dtype=torch.float64)
        system[-1] = 1.0
        rhs = torch.zeros(states, dtype=torch.float64)
        rhs[-1] = 1.0
        pi = torch.linalg.solve(system, rhs).clamp_min(0.0)
        return pi / pi.sum()
    pi = torch.full((states,), 1.0 / states, dtype=torch.float64)
    for _ in range(1_000_000):
        # new[rest, x] = sum_c pi[c, rest] T[c, rest, x]
        new = (pi.view(v, tail, 1) * trans.view(v, tail, v)).sum(0).reshape(states)
        if float((new - pi).abs().sum()) < 1e-15:
            return new
        pi = new
    raise RuntimeError("stationary law did not converge")  # pragma: no cover


def entropy(probs: torch.Tensor) -> float:
    """Shannon entropy (nats) of a probability tensor of any shape (0 log 0 = 0)."""
    p = probs.reshape(-1).double()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def empirical_entropy(tokens: torch.Tensor, num_symbols: int, width: int = 1) -> float:
    """Entropy (nats) of the pooled histogram of ``width``-grams (1 = unigrams, 2 = bigrams of
    consecutive symbols) of sequences [B, L]; ids >= num_symbols ([MASK]) end no n-gram."""
    tokens = torch.as_tensor(tokens).long()
    grams = tokens.unfold(1, width, 1).reshape(-1, width)
    grams = grams[(grams < num_symbols).all(1)]
    if grams.shape[0] == 0:
        return math.nan
    codes = (grams * num_symbols ** torch.arange(width - 1, -1, -1)).sum(1)
    counts = torch.bincount(codes, minlength=num_symbols**width).double()
    return entropy(counts / counts.sum())
