"""Memory of the exact computations on an order-n Markov chain over V symbols (pure Python).

The chain is stored on its expanded state space: S = V^n contexts (tuples of the last n
symbols), each with a row of V transition probabilities.  The forward-backward of the oracle
keeps, per sequence of length L, the forward messages [L, S] and works on [S, V] at each step.
"""

from __future__ import annotations

FLOAT64_BYTES = 8


def num_states(num_symbols: int, order: int) -> int:
    """S = V^n: contexts of an order-n chain."""
    return int(num_symbols) ** int(order)


def table_bytes(num_symbols: int, order: int) -> int:
    """The chain's tables: transition probabilities, their logs and CDF [S, V], the stationary
    law [S] (float64)."""
    states = num_states(num_symbols, order)
    return FLOAT64_BYTES * (3 * states * num_symbols + 2 * states)


def forward_backward_bytes(num_symbols: int, order: int, seq_len: int, batch: int = 1) -> int:
    """Peak bytes of one forward-backward over ``batch`` sequences of ``seq_len``: the stored
    forward messages [B, L, S], the step temporaries [B, S, V] (a few of them), the emissions and
    the output [B, L, V]."""
    states = num_states(num_symbols, order)
    per_sequence = seq_len * states + 4 * states * num_symbols + 3 * seq_len * num_symbols
    return FLOAT64_BYTES * batch * per_sequence


def oracle_bytes(num_symbols: int, order: int, seq_len: int) -> int:
    """What the exact source and its oracle need at the least: the tables plus one sequence's
    forward-backward (larger batches are split to fit a budget)."""
    return table_bytes(num_symbols, order) + forward_backward_bytes(num_symbols, order, seq_len, 1)
