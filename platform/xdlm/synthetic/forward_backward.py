"""Exact posteriors of x0 given z_t for a Markov source: (x0, z_t) is a hidden Markov model.

x0 is the hidden chain (``MarkovChain``, order n, V symbols, on its S = V^n contexts) and each
z_t[i] is emitted from x0[i] alone through the XDLM marginal (docs/math.md)

    q(z | x) = alpha_t [z == x] + (1 - alpha_t) r(z),    r(z) = k/N + (1 - k) [z == m],

with N = V + 1 ids (the symbols and the mask id m).  A scaled forward-backward gives, per
position i,

    full posterior        p(x0[i] = x | z_t)              ∝ p(x0[i] = x, z_t)
    leave-one-out         p(x0[i] = x | z_t[j], j != i)   ∝ p(x0[i] = x, z_t[-i])
                                                          = p(x0[i] = x | z_t) / q(z_t[i] | x)  (renormalised)

The leave-one-out law is the optimal plug-in prediction of the XDLM loss and sampler (they
re-weight the prediction by q(z_t[i] | x) themselves; docs/synthetic.md derives it).  It is
computed directly (forward messages before position i's emission times backward messages), never
by dividing by q, which is 0 at k = 0 for x != z.

Messages (B sequences, contexts s = (x_{i-n+1}..x_i), c the oldest symbol, "rest" the others,
e_i(x) = q(z_t[i] | x)):

    a_i^-(s') = sum_{s -> s'} a_{i-1}(s) T[s, x'],     a_i(s) = a_i^-(s) e_i(last(s))
    b_i(s)    = sum_x T[s, x] e_{i+1}(x) b_{i+1}(s')
    a_{n-1}(s) = pi[s] prod_{j < n} e_j(digit_j(s))     (the first context)
    p(x0[i] = x, z_t[-i]) = sum_{s: last(s) = x} a_i^-(s) b_i(s)

each message rescaled to sum 1 at every position (the scale cancels in the normalised marginal),
so the recursion is stable in float64 without logs; each step is a broadcast product and a sum.

Cost O(L S V) = O(L V^(n+1)) per sequence; memory ``memory.forward_backward_bytes``.
"""

from __future__ import annotations

import torch

from xdlm.synthetic.markov import MarkovChain


def emission_log_probs(z: torch.Tensor, alpha: torch.Tensor, num_symbols: int, vocab_size: int,
                       mask_id: int, k: float) -> torch.Tensor:
    """E[b, i, x] = log q(z[b, i] | x) for the clean symbols x in 0..V-1: [B, L, V] float64.

    z: [B, L] ids in [0, N); alpha: [B] (one time per sequence) or a float."""
    alpha = torch.as_tensor(alpha, dtype=torch.float64, device=z.device).reshape(-1, 1, 1)
    r_z = (k / vocab_size + (1.0 - k) * (z == mask_id).double())[..., None]  # [B, L, 1]
    same = (z[..., None] == torch.arange(num_symbols, device=z.device)).double()  # [B, L, V]
    return (alpha * same + (1.0 - alpha) * r_z).log()


def posterior_log_probs(chain: MarkovChain, z: torch.Tensor, alpha: torch.Tensor, vocab_size: int,
                        mask_id: int, k: float, leave_one_out: bool = True) -> torch.Tensor:
    """log p(x0[i] = x | z_t[j], j != i) (``leave_one_out``) or log p(x0[i] = x | z_t): [B, L, V]
    float64, normalised over the V symbols.

    z: [B, L] with L >= n; alpha: [B] or a float (alpha_t of each sequence)."""
    chain_device = chain.log_trans.device
    z = z.to(chain_device)
    emissions = emission_log_probs(z, alpha, chain.num_symbols, vocab_size, mask_id, k)
    loo = _leave_one_out(chain, emissions)
    if not leave_one_out:
        loo = loo + emissions
    return torch.log_softmax(loo, dim=-1)


def _leave_one_out(chain: MarkovChain, emissions: torch.Tensor) -> torch.Tensor:
    """Unnormalised log p(x0[i] = x, z_t[-i]): [B, L, V].

    The recursions run on probabilities, each message rescaled to sum 1 at every position: a
    per-position constant cancels when the marginal of position i is normalised over x, so no
    log-normaliser needs to be carried."""
    batch, length, v = emissions.shape
    n, states = chain.order, chain.num_states
    if length < n:
        raise ValueError(f"sequences must be at least order = {n} long, got {length}")
    tail = states // v
    trans = chain.trans.view(v, tail, v)  # T[c, rest, x]
    lik = emissions.exp()  # q(z_i | x) [B, L, V]
    digits = chain.digits()  # [S, n]
    # the first context's emissions per state: first[b, j, s] = q(z_j | digit_j(s))
    first = lik[:, :n, :].gather(2, digits.T[None].expand(batch, n, states))  # [B, n, S]

    def unit(m: torch.Tensor) -> torch.Tensor:
        return m / m.sum(-1, keepdim=True)

    # forward: a_pre[i] is the message before position i's emission (i >= n - 1)
    a_pre = [None] * length
    a_pre[n - 1] = unit(chain.stationary * first[:, : n - 1].prod(1))
    a = unit(a_pre[n - 1] * first[:, n - 1])
    for i in range(n, length):
        pre = (a.view(batch, v, tail, 1) * trans).sum(1)  # sum_c: [B, rest, x]
        a_pre[i] = unit(pre.reshape(batch, states))
        a = unit((pre * lik[:, i, None, :]).reshape(batch, states))

    # backward, reading off the leave-one-out marginals on the way
    out = emissions.new_empty(batch, length, v)
    b = emissions.new_ones(batch, states)
    for i in range(length - 1, n - 2, -1):
        out[:, i] = (a_pre[i] * b).view(batch, tail, v).sum(1)  # last symbol of the context is x_i
        if i > n - 1:
            nxt = b.view(batch, tail, v) * lik[:, i, None, :]  # [B, rest, x]
            b = unit((trans * nxt[:, None]).sum(-1).reshape(batch, states))  # sum_x: [B, c, rest]
    # positions inside the first context (order > 1): every other emission of it, and b_{n-1}
    for j in range(n - 1):
        others = torch.cat([first[:, :j], first[:, j + 1:]], dim=1).prod(1)
        weight = (chain.stationary * others * b).view(batch, v**j, v, v ** (n - 1 - j))
        out[:, j] = weight.sum(dim=(1, 3))
    return out.log()
