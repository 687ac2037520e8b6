"""The LLaDA-style sampler (sampler name ``llada``): block-wise low-confidence unmasking, plus
XDLM's token edits.

It reproduces the generation loop of the XDLM authors' LLaDA code (``generate_xdm`` in
MzeroMiko/LLaDA-XDLM, itself ``generate`` of ML-GSAI/LLaDA when k = 0); this is a
re-implementation from its description, not a copy.  With prompt length P and answer length G:

    x = [prompt, MASK * G];  the answer is cut into G / block_length blocks, generated left to
    right, each with S_b = steps / num_blocks network calls.
    In a block with M masks, step i unmasks n_i tokens: n_i = M // S_b, plus 1 for the first
    M % S_b steps.  With cumulative counts N_i = n_1 + ... + n_i, the edits allowed up to step i
    are E_i = floor(N_i k / (1 - k)) with E_1 = 0 (none at a block's first step), so step i may
    edit e_i = E_i - E_{i-1} tokens; edits a step cannot make carry over to the block's next step.

    At each step, with logits l = f(x) [B, L, N] ([MASK] logit -inf, EOS too with ``ban_eos``):
        proposal  x0_j = argmax_v (l_jv + T g_jv),  g ~ Gumbel  (T = 0: argmax l_j)
        p = softmax(l);  c_j = p_j(x0_j) (confidence),  c_j = -inf right of the current block
        unmask: the n_i masked positions with the highest c_j take x0_j;
        edit:   among unmasked positions j (anywhere left of the block's end, never the prompt)
                with x0_j != x_j and c_j >= p_j(x_j), the e_i most confident take x0_j.
    Ties go to the leftmost position (a stable sort; the authors' ``torch.topk`` leaves them
    unspecified).

Differences from the authors' loop, all deliberate: the [MASK] logit is -inf (the platform's
clean distribution; a trained model puts no mass there anyway), probabilities are float32 even
for bf16 logits (fewer ties), the Gumbel draw is taken in log space (the same argmax without
``exp`` overflowing), and the prompt is never edited (theirs may edit it; ``edit_prompt=True``
restores that).  EOS: ``ban_eos`` is their ``logits_eos_inf``; ``stop_at_eos`` ends a row once a
finished block holds an EOS, filling everything after its first EOS with ``pad_id`` (their
evaluation generates every block and drops special tokens when decoding: what follows an EOS is
EOS for LLaDA, so the text is the same).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from xdlm.diffusion.process import XDLM

#: denoiser(x [B, L] ids, t [B] times) -> logits [B, L, N]; ``attention_mask=`` when one is given.
Denoiser = Callable[..., torch.Tensor]


def unmask_schedule(masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to unmask per step: masked [B] counts -> [B, steps], M // S everywhere plus one on
    the first M % S steps (the linear schedule's equal shares)."""
    base = (masked // steps)[:, None].expand(-1, steps)
    extra = torch.arange(steps, device=masked.device)[None, :] < (masked % steps)[:, None]
    return base + extra.long()


def edit_schedule(unmask: torch.Tensor, k: float) -> torch.Tensor:
    """Edits allowed per step: unmask [B, S] -> [B, S] with cumulative totals
    E_i = floor(N_i k / (1 - k)) (N_i the cumulative unmask count), E_1 = 0.  The product is taken
    in float32, as in the authors' code, so the rounding of the floors is theirs."""
    if k <= 0.0:
        return torch.zeros_like(unmask)
    total = (unmask.cumsum(dim=1) * k / (1.0 - k)).int().long()
    total[:, 0] = 0
    return torch.diff(total, dim=1, prepend=torch.zeros_like(total[:, :1]))


def top_positions(scores: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` highest entries of a [L] score vector, ties to the leftmost."""
    return torch.sort(scores, descending=True, stable=True).indices[:n]


def pad_after_eos(x: torch.Tensor, start: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """Positions after the first EOS at or right of ``start`` become ``pad_id``: [B, L] -> [B, L]."""
    tail = x[:, start:]
    seen = (tail == eos_id).long().cumsum(dim=1)
    after = (seen > 0) & ~((seen == 1) & (tail == eos_id))
    out = x.clone()
    out[:, start:] = torch.where(after, torch.full_like(tail, pad_id), tail)
    return out


@dataclass
class LLaDAStep:
    """The tokens after network call ``step`` (1-based, over all blocks) of block ``block``."""

    step: int
    block: int
    x: torch.Tensor


class LLaDASampler:
    """Block-wise confidence-ordered unmasking with XDLM edits (module docstring has the rule).

    Args:
        process: the XDLM process (its mask id; its k is the default edit ratio).
        schedule: unused (the step counts are LLaDA's linear schedule); accepted so the sampler
            registry builds every sampler alike.
        steps: network calls in total, a multiple of the number of blocks.
        gen_length: answer length G; default: the ``shape``'s length minus the prompt's.
        block_length: tokens per block, dividing G; default G (one block).
        temperature: Gumbel-max temperature T >= 0; 0 is greedy.
        k: edit ratio in [0, 1); default ``process.k``; 0 is pure LLaDA (no edits).
        eos_id, ban_eos, stop_at_eos, pad_id: EOS handling (module docstring); ``pad_id``
            defaults to ``eos_id``.
        edit_prompt: let edits touch the prompt, as the authors' loop does.
        top_p: only ``None`` (accepted for the shared sampler signature).
    """

    def __init__(
        self,
        process: XDLM,
        schedule=None,
        steps: int = 32,
        *,
        gen_length: int | None = None,
        block_length: int | None = None,
        temperature: float = 0.0,
        k: float | None = None,
        eos_id: int | None = None,
        ban_eos: bool = False,
        stop_at_eos: bool = False,
        pad_id: int | None = None,
        edit_prompt: bool = False,
        top_p: float | None = None,
    ) -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not temperature >= 0.0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a finite float >= 0, got {temperature}")
        k = process.k if k is None else float(k)
        if not 0.0 <= k < 1.0:
            raise ValueError(f"k must be in [0, 1) for the llada sampler (k / (1 - k) edits per "
                             f"unmasked token), got {k}")
        if top_p is not None:
            raise ValueError("top_p: the llada sampler has no nucleus truncation; leave it unset")
        if (ban_eos or stop_at_eos) and eos_id is None:
            raise ValueError("eos_id: required with ban_eos or stop_at_eos")
        for name, value in (("gen_length", gen_length), ("block_length", block_length)):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.process = process
        self.steps = int(steps)
        self.gen_length = gen_length
        self.block_length = block_length
        self.temperature = float(temperature)
        self.k = k
        self.eos_id = eos_id
        self.ban_eos = ban_eos
        self.stop_at_eos = stop_at_eos
        self.pad_id = eos_id if pad_id is None else pad_id
        self.edit_prompt = edit_prompt

    def layout(self, gen_length: int) -> tuple[int, int, int]:
        """(block_length, num_blocks, steps per block) for an answer of ``gen_length``."""
        block = self.block_length or gen_length
        if gen_length % block:
            raise ValueError(f"block_length {block} must divide gen_length {gen_length}")
        blocks = gen_length // block
        if self.steps % blocks:
            raise ValueError(f"steps {self.steps} must be a multiple of the number of blocks {blocks} "
                             f"(gen_length {gen_length} / block_length {block})")
        return block, blocks, self.steps // blocks

    def iterate(
        self,
        denoiser: Denoiser,
        shape: tuple[int, int] | None = None,
        *,
        prompt: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device=None,
        recorder=None,
    ):
        """Yield an ``LLaDAStep`` after every network call; the last holds the result [B, P + G].

        ``prompt`` [B, P] ids (never masked; left-padded prompts pass their ``attention_mask``
        [B, P], extended with ones over the answer and handed to the denoiser); without a prompt,
        ``shape = (B, G)`` generates from nothing.  ``recorder`` (``TrajectoryRecorder``) sees
        the start and every step.
        """
        mask_id = self.process.mask_id
        if prompt is None:
            if shape is None:
                raise ValueError("give a prompt [B, P] or a shape (B, gen_length)")
            prompt = torch.empty((shape[0], 0), dtype=torch.long, device=device)
        if prompt.dim() != 2:
            raise ValueError(f"prompt: expected shape [B, P], got {tuple(prompt.shape)}")
        if bool((prompt == mask_id).any()):
            raise ValueError(f"prompt: contains the mask id {mask_id}; a prompt is clean text")
        batch, p_len = prompt.shape
        gen = self.gen_length or (shape[1] - p_len if shape is not None else 0)
        if gen < 1:
            raise ValueError("gen_length: give it to the sampler, or a shape longer than the prompt")
        block, blocks, per_block = self.layout(gen)
        x = torch.full((batch, p_len + gen), mask_id, dtype=torch.long, device=prompt.device)
        x[:, :p_len] = prompt
        kwargs = {}
        if attention_mask is not None:
            ones = torch.ones((batch, gen), dtype=attention_mask.dtype, device=attention_mask.device)
            kwargs["attention_mask"] = torch.cat([attention_mask, ones], dim=1)
        protected = torch.zeros_like(x, dtype=torch.bool)
        if not self.edit_prompt:
            protected[:, :p_len] = True
        done = torch.zeros(batch, dtype=torch.bool, device=x.device)
        if recorder is not None:
            recorder.start(x, mask_id, 1.0)
        call = 0
        for b in range(blocks):
            end = p_len + (b + 1) * block
            masked = (x[:, end - block: end] == mask_id).sum(dim=1)
            unmask = unmask_schedule(masked, per_block)
            edits = edit_schedule(unmask, self.k)
            for i in range(per_block):
                x = self._step(denoiser, x, kwargs, end, unmask[:, i], edits, i, protected | done[:, None],
                               generator)
                call += 1
                if recorder is not None:
                    recorder.step(x, 1.0 - call / self.steps)
                yield LLaDAStep(step=call, block=b, x=x)
            if self.stop_at_eos:
                finished = (x[:, p_len:end] == self.eos_id).any(dim=1) & ~done
                if bool(finished.any()):
                    x[finished] = pad_after_eos(x[finished], p_len, self.eos_id, self.pad_id)
                    x[finished, end:] = self.pad_id
                    done |= finished
                if bool(done.all()):
                    yield LLaDAStep(step=call, block=b, x=x)
                    return

    def _step(self, denoiser, x, kwargs, end, unmask_now, edits, i, frozen, generator):
        """One network call: unmask ``unmask_now`` [B] tokens and make up to ``edits[:, i]``
        edits (the shortfall carried into ``edits[:, i + 1]``, in place)."""
        mask_id = self.process.mask_id
        is_mask = x == mask_id
        t = is_mask.float().mean(dim=1)
        logits = denoiser(x, t, **kwargs).float()
        logits[..., mask_id] = -math.inf
        if self.ban_eos:
            logits[..., self.eos_id] = -math.inf
        proposal = self._propose(logits, generator)
        probs = torch.softmax(logits, dim=-1)
        confidence = probs.gather(-1, proposal[..., None])[..., 0]
        confidence[:, end:] = -math.inf
        current = probs.gather(-1, x[..., None])[..., 0]
        unmask_score = torch.where(is_mask & ~frozen, confidence, -math.inf)
        editable = ~is_mask & ~frozen & (proposal != x) & (confidence >= current)
        edit_score = torch.where(editable, confidence, -math.inf)
        take = torch.zeros_like(is_mask)
        for row in range(x.shape[0]):
            if frozen[row].all():
                continue
            take[row, top_positions(unmask_score[row], int(unmask_now[row]))] = True
            if self.k > 0.0:
                wanted = int(edits[row, i])
                made = min(int(editable[row].sum()), wanted)
                if i + 1 < edits.shape[1]:
                    edits[row, i + 1] += wanted - made
                take[row, top_positions(edit_score[row], made)] = True
        return torch.where(take, proposal, x)

    def _propose(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """argmax of l + T g with g ~ Gumbel(0, 1) in float64 (the argmax of the authors'
        exp(l) / (-log u)^T, taken in log space)."""
        if self.temperature == 0.0:
            return logits.argmax(dim=-1)
        u = torch.rand(logits.shape, dtype=torch.float64, generator=generator, device=logits.device)
        return (logits.double() - self.temperature * torch.log(-torch.log(u))).argmax(dim=-1)

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, shape: tuple[int, int] | None = None, **kwargs) -> torch.Tensor:
        """Run every step; returns [B, P + G] (the prompt, then the answer)."""
        state = None
        for state in self.iterate(denoiser, shape, **kwargs):  # noqa: B007 (the last one is the result)
            pass
        return state.x
