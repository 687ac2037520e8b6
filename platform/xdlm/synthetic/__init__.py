"""Synthetic sources whose law is known exactly, and the exact denoiser they admit.

Modules (layer 0: numpy and torch only, no other xdlm package):

- ``memory``: how many bytes the exact computations need (pure Python, so configs can refuse a
  source before anything is built);
- ``markov``: ``MarkovChain``, an order-n chain over V symbols built from a seed: sampling,
  log p(x), the stationary law, the entropy rate, unigram and bigram laws;
- ``forward_backward``: (x0, z_t) as a hidden Markov model: the leave-one-out posterior
  p(x0[i] = x | z_t[j], j != i) (the optimal plug-in of the XDLM loss and sampler) and the full
  posterior, by a scaled forward-backward (messages renormalised per position; output in log space).

docs/synthetic.md derives what they compute.  This ``__init__`` imports nothing, so importing
``xdlm.synthetic.memory`` does not import torch.
"""
