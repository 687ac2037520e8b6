"""Evaluator language models for generative perplexity.

A scorer maps generated token ids [B, L] (the diffusion model's tokenizer) to
(sum of log-likelihoods [B], number of scored tokens [B]). Two kinds:
- a causal DiT trained by ``jobs/ar_evaluator.yaml`` on the same tokenizer: scores the ids as they are;
- a Hugging Face causal LM (``gpt2-large`` for the paper's setups, or a local directory saved with
  ``save_pretrained``): the samples are decoded to text and re-tokenized with the evaluator's own
  tokenizer, so perplexities are per evaluator token, as in the papers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xdlm.checkpoint import has_checkpoint, load_model_from_run
from xdlm.errors import UserError

#: scorer(tokens [B, L]) -> (log-likelihood sums [B], scored token counts [B])
Scorer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def causal_dit_scorer(run_dir: Path, vocab_size: int, device) -> Scorer:
    model, _ = load_model_from_run(run_dir, device)
    if model.vocab_size != vocab_size:
        raise UserError(f"eval.evaluator: vocabulary {model.vocab_size} != the tokenizer's {vocab_size}")
    model.eval()

    @torch.no_grad()
    def score(tokens: torch.Tensor):
        ll = model.log_likelihood(tokens.to(device))
        return ll, torch.full_like(ll, tokens.shape[1] - 1)

    return score


def hf_scorer(name_or_path: str, tokenizer: Any, device, max_length: int = 1024) -> Scorer:
    """A Hugging Face causal LM by hub name or local directory (needs ``transformers``)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise UserError(
            f"eval.evaluator: {name_or_path!r} is a Hugging Face model; install 'transformers' "
            "(pip install -e '.[hf]') or give a run directory of jobs/ar_evaluator.yaml"
        ) from None
    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path).eval().to(device)
    except OSError as err:
        raise UserError(
            f"eval.evaluator: cannot load {name_or_path!r} ({str(err).splitlines()[0]}); hub models "
            "need a network (HF_HUB_OFFLINE unset) or a local directory"
        ) from None
    start = hf_tokenizer.bos_token_id if hf_tokenizer.bos_token_id is not None else hf_tokenizer.eos_token_id

    @torch.no_grad()
    def score(tokens: torch.Tensor):
        sums, counts = [], []
        for row in tokens.tolist():
            text = tokenizer.decode(row, skip_special_tokens=True)
            ids = [start, *hf_tokenizer(text, add_special_tokens=False)["input_ids"]][:max_length]
            ids = torch.tensor([ids], device=device)
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            sums.append(logp.gather(-1, ids[0, 1:, None]).sum())
            counts.append(ids.shape[1] - 1)
        return torch.stack(sums).cpu(), torch.tensor(counts, dtype=torch.float32)

    return score


def load_evaluator(spec: str | None, tokenizer: Any, device) -> Scorer | None:
    """The scorer named by ``eval.evaluator``: an xdlm run directory, a Hugging Face directory or
    hub name, or None (no generative perplexity)."""
    if not spec:
        return None
    path = Path(spec).expanduser()
    if path.is_dir() and has_checkpoint(path):
        return causal_dit_scorer(path, tokenizer.vocab_size, device)
    return hf_scorer(spec, tokenizer, device)
