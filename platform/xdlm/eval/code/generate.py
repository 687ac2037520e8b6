"""A trained model as the harness's ``generate(prompts, steps) -> completions``.

Each prompt is encoded as training saw text (``BOS`` then its ids), the batch left-padded with
EOS (an ``attention_mask`` hides the padding from a model that takes one; a model that takes
none gets one prompt at a time), and the answer of ``gen_length`` tokens drawn by the LLaDA-style
sampler (``xdlm.diffusion.llada_sampling``; k is the run's, so the XDLM edits are the ones it
was trained for).  A row ends at EOS; sampling stops early once every row's decoded answer holds a
stop word of the benchmark (``prompts.STOP_WORDS``; MBPP's ``[DONE]``), checked when a block
ends, and each completion is cut after its first stop word.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from xdlm.diffusion import sampling
from xdlm.diffusion.process import XDLM
from xdlm.eval.code.harness import Generate


def cut_at_stop(text: str, stop_words: Sequence[str]) -> str:
    """``text`` up to and including its first stop word (unchanged without one)."""
    ends = [text.index(w) + len(w) for w in stop_words if w in text]
    return text[:min(ends)] if ends else text


def takes_attention_mask(model: torch.nn.Module) -> bool:
    return "attention_mask" in inspect.signature(model.forward).parameters


def llada_generator(model: torch.nn.Module, process: XDLM, tokenizer: Any, *, stop_words: Sequence[str] = (),
                    gen_length: int = 256, block_length: int | None = None, temperature: float = 0.0,
                    max_length: int | None = None, seed: int = 0, device: str | torch.device = "cpu") -> Generate:
    """``generate(prompts, steps)`` over ``model`` (eval mode, on ``device``).

    ``max_length``: the longest input the model takes; longer prompts keep their last
    ``max_length - gen_length`` tokens (the task, after the few-shot examples).
    """
    if max_length is not None and max_length <= gen_length:
        raise ValueError(f"gen_length {gen_length} leaves no room for a prompt in {max_length} positions")
    masked_batches = takes_attention_mask(model)
    generator = torch.Generator(device=device).manual_seed(seed)

    def denoise(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        return model(x, t.float(), **kwargs)

    def run(ids: list[list[int]], steps: int) -> list[str]:
        sampler = sampling.get("llada", process, None, steps=steps, gen_length=gen_length,
                               block_length=block_length, temperature=temperature, eos_id=tokenizer.eos_id,
                               stop_at_eos=True)
        width = max(len(row) for row in ids)
        prompt = torch.full((len(ids), width), tokenizer.eos_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            prompt[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        kwargs = {"attention_mask": mask.to(device)} if bool((mask == 0).any()) else {}
        _, _, per_block = sampler.layout(gen_length)
        state = None
        with torch.no_grad():
            for state in sampler.iterate(denoise, prompt=prompt.to(device), generator=generator, **kwargs):
                if stop_words and state.step % per_block == 0:  # a block is done: is every answer?
                    texts = decode(state.x[:, width:])
                    if all(any(w in text for w in stop_words) for text in texts):
                        break
        return [cut_at_stop(text, stop_words) for text in decode(state.x[:, width:])]

    def decode(answers: torch.Tensor) -> list[str]:
        return [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in answers.cpu()]

    def generate(prompts: list[str], steps: int) -> list[str]:
        ids = [[tokenizer.bos_id, *tokenizer.encode(p)] for p in prompts]
        if max_length is not None:
            ids = [row[-(max_length - gen_length):] for row in ids]
        if masked_batches:
            return run(ids, steps)
        return [text for row in ids for text in run([row], steps)]

    return generate
