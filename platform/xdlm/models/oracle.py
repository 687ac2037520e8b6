"""The exact denoiser of a Markov source (``model.backbone: oracle``), registered as a backbone so
every loss, sampler and evaluation of the platform runs on it unchanged.

``model(z_t [B, L], t [B]) -> logits [B, L, N]``: the log-probabilities of the leave-one-out
posterior p(x0[i] = x | z_t[j], j != i) over the V symbols (``xdlm.synthetic.forward_backward``),
and -inf for the [MASK] id.  That is the prediction with which the XDLM loss is tight
(E[NELBO] = E[-log p(x0)] up to the end terms) and the sampler is the exact reverse process
(docs/synthetic.md).  It has no trainable parameters: ``xdlm train`` refuses it
(``BackboneInfo.trainable``); ``xdlm oracle`` and the evaluation of Markov runs use it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xdlm.models.config import ModelConfig
from xdlm.models.registry import BACKBONES, DIFFUSION, DenoisingContext
from xdlm.synthetic.forward_backward import posterior_log_probs
from xdlm.synthetic.markov import MarkovChain
from xdlm.synthetic.memory import forward_backward_bytes

#: Sequences per forward-backward call are capped so one call stays under this many bytes.
CHUNK_BYTES = 256 * 2**20


@BACKBONES.register("oracle", objective=DIFFUSION, trainable=False, solves=("markov",))
class MarkovOracle(nn.Module):
    """Leave-one-out posterior of a ``MarkovChain`` under the XDLM process of ``context``.

    ``leave_one_out=False`` returns the full posterior p(x0[i] | z_t) instead: the wrong plug-in,
    kept for the tests and docs that show why (its NELBO is not tight for k > 0).
    Logits are float64 (the loss then runs in float64).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, context: DenoisingContext,
                 leave_one_out: bool = True) -> None:
        super().__init__()
        chain = context.law
        if not isinstance(chain, MarkovChain):
            raise ValueError(f"backbone: 'oracle' solves a Markov source, got a law of type "
                             f"{type(chain).__name__}")
        if vocab_size != chain.num_symbols + 1 or context.mask_id != chain.num_symbols:
            raise ValueError(f"backbone: 'oracle' needs vocab_size = V + 1 = {chain.num_symbols + 1} and "
                             f"mask_id = V = {chain.num_symbols}, got {vocab_size} and {context.mask_id}")
        self.chain = chain
        self.vocab_size = int(vocab_size)
        self.mask_id = int(context.mask_id)
        self.k = float(context.k)
        self.alpha = context.alpha
        self.leave_one_out = leave_one_out

    @torch.no_grad()
    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t [B, L] ids, t [B] times -> logits [B, L, N] (float64, on z_t's device)."""
        alpha = self.alpha(t.detach().to("cpu", torch.float64)).reshape(-1).expand(z_t.shape[0])
        z = z_t.detach().to("cpu")
        per_call = max(1, CHUNK_BYTES // forward_backward_bytes(
            self.chain.num_symbols, self.chain.order, z.shape[1]))
        parts = [posterior_log_probs(self.chain, z[i: i + per_call], alpha[i: i + per_call],
                                     self.vocab_size, self.mask_id, self.k, self.leave_one_out)
                 for i in range(0, z.shape[0], per_call)]
        logp = torch.cat(parts)
        mask = torch.full((*logp.shape[:2], 1), -math.inf, dtype=logp.dtype)
        return torch.cat([logp, mask], dim=-1).to(z_t.device)
