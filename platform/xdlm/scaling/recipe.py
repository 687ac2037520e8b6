"""The recipe: a compute budget C (training FLOPs) -> candidate configurations for an IsoFLOP grid.

C is the platform's count, ``xdlm.models.accounting.flops_per_token`` times training tokens:
``C = F(N) * D`` with ``F(N) = 6 N + 12 n_layers hidden L`` (N non-embedding parameters, L the
sequence length).  The rules, each a formula with its knob in ``Rules``:

  shape     hidden = round_to(aspect * n_layers, head_dim), n_heads = hidden / head_dim: one
            ladder of shapes indexed by depth (fixed aspect ratio and head width);
  centre    N*(C) = sqrt(C / (6 r)), r = tokens_per_param (Chinchilla's D = 20 N with C = 6 N D);
            the candidates of C are ``sizes`` ladder shapes ``depth_step`` apart, centred on the
            one nearest N*(C) in log N;
  tokens    D = C / F(N), trained as steps = round(D / (B L));
  batch     B(C) = B_0 (C / C_0)^(1/3) sequences, B_0 the base job's global batch at the smallest
            budget C_0, rounded to a multiple of micro_batch x workers (the batch grows slowly
            with compute, as measured optima do, e.g. DeepSeek LLM's B ~ C^0.33);
  lr        lr(hidden) = lr_0 * hidden_0 / hidden, lr_0 and hidden_0 the base job's (Adam's update
            per weight shrinks with fan-in);
  warm-up   warmup_fraction of the steps.

Memory per device (``memory_bytes``; P all parameters, embeddings included, fp32):
  states       4P weights + 4P gradients + 8P AdamW moments (+ 4P EMA when optim.ema > 0);
  activations  n_layers * b L hidden (34 + 5 n_heads L / hidden) * s / 2 bytes for a micro-batch
               b, s = 2 (bf16) or 4 (fp32) bytes per value (Korthikanti et al. 2022, counted in
               16-bit values), plus 3 b L V s for the logits, their softmax and gradient.
A candidate over ``Rules.memory_gib`` is dropped with that reason, as is one with fewer than
``min_steps`` steps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from xdlm.config import JobConfig
from xdlm.errors import UserError
from xdlm.models.accounting import estimate_parameters, flops_per_token
from xdlm.models.config import CUSTOM, ModelConfig

PRETRAINED_VOCAB = {"gpt2": 50258, "bert-base-uncased": 30522}
"""Vocabulary (special tokens included) of the pretrained tokenizers, for the memory estimate."""
BATCH_EXPONENT = 1 / 3
MAX_DEPTH = 96


@dataclass(frozen=True)
class Rules:
    aspect: float
    """hidden / n_layers along the ladder."""
    head_dim: int
    tokens_per_param: float = 20.0
    """r in N*(C) = sqrt(C / (6 r)): where the sizes of a budget are centred."""
    depth_step: int = 1
    """Ladder steps between the sizes of a budget (deep ladders need > 1 to spread N)."""
    batch_0: int = 32
    """B_0: global batch (sequences) at the smallest budget."""
    budget_0: float = 1.0
    """C_0: the smallest budget of the plan."""
    lr_0: float = 1e-3
    hidden_0: int = 128
    warmup_fraction: float = 0.1
    min_steps: int = 20
    memory_gib: float = 16.0
    """Memory of one device (GPU, or the CPU share of one worker)."""

    @classmethod
    def from_job(cls, job: JobConfig, budgets: list[float], **overrides) -> Rules:
        n_layers, hidden, n_heads = job.model.dims()
        rules = cls(aspect=hidden / n_layers, head_dim=hidden // n_heads, batch_0=job.train.global_batch,
                    budget_0=min(budgets), lr_0=job.optim.lr, hidden_0=hidden)
        return dataclasses.replace(rules, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Candidate:
    budget: float
    label: str
    model: ModelConfig
    non_embedding: int
    params: int
    flops_per_token: int
    steps: int
    global_batch: int
    lr: float
    warmup_steps: int
    seq_len: int
    memory: dict[str, float] = field(default_factory=dict)
    dropped: str | None = None
    """Why the candidate is not in the sweep, or None."""

    @property
    def tokens(self) -> int:
        return self.steps * self.global_batch * self.seq_len

    @property
    def flops(self) -> float:
        """What the trial will really train: F(N) * steps * B * L."""
        return float(self.flops_per_token) * self.tokens


def vocab_size_of(job: JobConfig) -> int:
    data = job.data
    if data.source == "markov":
        return data.markov.num_symbols + 1
    return PRETRAINED_VOCAB.get(data.tokenizer, data.vocab_size)


def ladder_shape(depth: int, rules: Rules) -> tuple[int, int, int]:
    """(n_layers, hidden, n_heads) of the ladder at ``depth``."""
    heads = max(1, round(rules.aspect * depth / rules.head_dim))
    return depth, heads * rules.head_dim, heads


def ladder_model(depth: int, rules: Rules, base: ModelConfig) -> ModelConfig:
    n_layers, hidden, n_heads = ladder_shape(depth, rules)
    return dataclasses.replace(base, size=CUSTOM, n_layers=n_layers, hidden=hidden, n_heads=n_heads)


def memory_bytes(model: ModelConfig, vocab: int, micro_batch: int, seq_len: int, bf16: bool, ema: bool) -> dict[str, float]:
    """Bytes one device holds while training (module docstring): states and activations."""
    params = estimate_parameters(model, vocab)["total"]
    n_layers, hidden, n_heads = model.dims()
    states = (16 + (4 if ema else 0)) * params
    width = 2 if bf16 else 4
    per_layer = micro_batch * seq_len * hidden * (34 + 5 * n_heads * seq_len / hidden) * width / 2
    activations = n_layers * per_layer + 3 * micro_batch * seq_len * vocab * width
    return {"states": float(states), "activations": float(activations), "total": float(states + activations)}


def size_label(model: ModelConfig) -> str:
    n_layers, hidden, _ = model.dims()
    return f"L{n_layers}-D{hidden}"


def candidates(job: JobConfig, budget: float, sizes: int, rules: Rules, workers: int) -> list[Candidate]:
    """The ``sizes`` ladder shapes around N*(``budget``), smallest first, each with its steps,
    batch, learning rate and memory; the ones that cannot run carry ``dropped``."""
    seq_len = job.data.seq_len
    target = math.sqrt(budget / (6 * rules.tokens_per_param))
    ladder = [ladder_model(d, rules, job.model) for d in range(1, MAX_DEPTH + 1)]
    sizes_n = [estimate_parameters(m, 1)["non_embedding"] for m in ladder]
    nearest = min(range(len(ladder)), key=lambda i: abs(math.log(sizes_n[i] / target)))
    span = (sizes - 1) * rules.depth_step
    first = min(max(0, nearest - span // 2), len(ladder) - 1 - span)
    unit = job.train.micro_batch * workers
    batch = max(unit, round(rules.batch_0 * (budget / rules.budget_0) ** BATCH_EXPONENT / unit) * unit)
    vocab = vocab_size_of(job)
    bf16 = job.train.precision == "bf16" or (job.train.precision == "auto" and job.cluster.use_gpu)
    out = []
    for model in ladder[first:first + span + 1:rules.depth_step]:
        fpt = flops_per_token(model, seq_len)
        steps = round(budget / (fpt * batch * seq_len))
        hidden = model.dims().hidden
        memory = memory_bytes(model, vocab, job.train.micro_batch, seq_len, bf16, job.optim.ema > 0)
        candidate = Candidate(
            budget=budget, label=size_label(model), model=model,
            non_embedding=estimate_parameters(model, 1)["non_embedding"],
            params=estimate_parameters(model, vocab)["total"], flops_per_token=fpt, steps=steps,
            global_batch=batch, lr=rules.lr_0 * rules.hidden_0 / hidden,
            warmup_steps=max(1, round(rules.warmup_fraction * steps)), memory=memory, seq_len=seq_len)
        if steps < rules.min_steps:
            candidate.dropped = (f"{steps} steps of {batch} x {seq_len} tokens (fewer than {rules.min_steps}): "
                                 "the budget is too small for this size")
        elif memory["total"] > rules.memory_gib * 2**30:
            candidate.dropped = (f"needs {memory['total'] / 2**30:.1f} GiB per device "
                                 f"(more than --memory-gib {rules.memory_gib:g})")
        out.append(candidate)
    return out


def check_inputs(budgets: list[float], sizes: int, ks: list[float]) -> None:
    if not budgets:
        raise UserError("--budgets: give at least one compute budget in FLOPs, e.g. --budgets 1e12,3e12,1e13")
    bad = [b for b in budgets if not (math.isfinite(b) and b > 0)]
    if bad:
        raise UserError(f"--budgets: budgets must be positive FLOPs, got {bad}")
    if len(set(budgets)) != len(budgets):
        raise UserError(f"--budgets: each budget once, got {budgets}")
    if sizes < 1:
        raise UserError(f"--sizes: must be >= 1 (models per budget), got {sizes}")
    if not ks:
        raise UserError("--k: give at least one mixing ratio in [0, 1], e.g. --k 0,0.5")
    bad = [k for k in ks if not 0 <= k <= 1]
    if bad:
        raise UserError(f"--k: mixing ratios must be in [0, 1] (0 = MDLM, 1 = UDLM), got {bad}")
