"""The memory plan: what one GPU holds while training, per ZeRO stage, printed before launch.

Per GPU, with P parameters, W data-parallel workers (``cluster.num_workers``), w bytes per weight
(2 with DeepSpeed's ``bf16: {enabled: true}``, else 4):

  parameters   w P                    / W under ZeRO-3     (0 on the GPU with offload_param: cpu)
  gradients    w P                    / W under ZeRO-2, 3
  optimizer    AdamW: 12 P with bf16 weights (fp32 master copy + two fp32 moments),
               8 P with fp32 weights (the weights are the master; two moments)
                                      / W under ZeRO-1, 2, 3 (0 on the GPU with offload_optimizer: cpu)
  EMA          4 P when optim.ema > 0 (fp32)  / W under ZeRO-3 (this platform keeps it per partition)
  activations  per micro-batch, T = micro_batch x seq_len tokens, s bytes per activation value
               (2 under bf16 autocast or bf16 weights, else 4), h hidden, f MLP width, n layers:
                 one layer  a = T (s (8 h + m) + r)   m = 2 f (GELU MLP) or 4 f (gated MLP: gate,
                            up, act(gate), product); 8 h = attention's input, Q, K, V and output
                            (5 h), the MLP input (h) and two norm inputs (2 h); r = 2 h bytes of
                            dropout masks when dropout > 0 (Korthikanti et al. 2022: 34 h bytes per
                            token for f = 4 h, s = 2, with dropout); attention is fused (SDPA), so
                            no L x L scores are kept;
                 all layers n a, or with gradient checkpointing n T s h (each layer's input) + a
                            (one layer recomputed at a time);
                 output     3 T V s for the logits, their softmax and gradient, unless the loss is
                            fused with the LM head (``BackboneInfo.fused_head``: chunks only).
  total        the sum; offloaded states are counted on the host instead (per worker).

So mixed-precision AdamW costs 2 + 2 + 12 = 16 bytes per parameter before partitioning (the
ZeRO paper's K = 12), and ZeRO-3 over W GPUs divides all of it by W.  Buffers, temporary
all-gather buckets, the CUDA context and fragmentation are not counted: keep a margin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from xdlm.config import ConfigError, JobConfig
from xdlm.models import backbone_info, build_model

GIB = 2**30
ADAM_MOMENTS = 2


@dataclass(frozen=True)
class Architecture:
    """What the plan needs of a transformer: its parameter count and a few shapes."""

    params: int
    n_layers: int
    hidden: int
    mlp: int
    vocab: int
    gated_mlp: bool = False
    dropout: bool = False

    @classmethod
    def of_module(cls, module: nn.Module, dropout: bool = False) -> Architecture:
        """Count and measure any module, e.g. one built on the meta device (no memory):
        ``with torch.device("meta"): net = build(...)``.  Parameters shared by two modules count
        once; the vocabulary and hidden size come from the largest ``nn.Embedding``; the layers
        from the longest ``nn.ModuleList``; the MLP width from the widest ``nn.Linear`` that
        reads the hidden size in the first layer (gated when two of them have that width)."""
        params = sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
        embeddings = [m for m in module.modules() if isinstance(m, nn.Embedding)]
        lists = [m for m in module.modules() if isinstance(m, nn.ModuleList)]
        if not embeddings or not lists:
            raise ValueError(f"{type(module).__name__}: no token embedding or no list of layers to measure")
        embedding = max(embeddings, key=lambda m: m.num_embeddings)
        vocab, hidden = embedding.weight.shape
        layers = max(lists, key=len)
        widths = [m.out_features for m in layers[0].modules() if isinstance(m, nn.Linear) and m.in_features == hidden]
        mlp = max(widths, default=4 * hidden)
        return cls(params=params, n_layers=len(layers), hidden=int(hidden), mlp=int(mlp), vocab=int(vocab),
                   gated_mlp=widths.count(mlp) >= 2, dropout=dropout)

    @classmethod
    def llama_like(cls, n_layers: int, hidden: int, mlp: int, vocab: int, tied: bool = False,
                   kv_hidden: int | None = None) -> Architecture:
        """A LLaMA-style decoder described, not built: per layer q, o (h x h), k, v (h x kv),
        gate, up, down (3 h f) and two RMSNorm weights (2 h); a final norm (h); the embedding and
        an untied head (V h each; one when ``tied``). The heads' count does not change P."""
        kv = hidden if kv_hidden is None else kv_hidden
        per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * mlp + 2 * hidden
        params = n_layers * per_layer + hidden + (1 if tied else 2) * vocab * hidden
        return cls(params=params, n_layers=n_layers, hidden=hidden, mlp=mlp, vocab=vocab, gated_mlp=True)


@dataclass(frozen=True)
class Setting:
    """How the job trains, as far as memory goes."""

    workers: int
    micro_batch: int
    seq_len: int
    bf16_weights: bool
    """DeepSpeed's ``bf16: {enabled: true}``: 16-bit weights and gradients, fp32 master copy."""
    bf16_activations: bool
    ema: bool
    checkpointing: bool = False
    fused_head: bool = False


@dataclass(frozen=True)
class Row:
    stage: int
    offload_optimizer: bool
    offload_param: bool
    params: float
    grads: float
    optimizer: float
    ema: float
    activations: float
    host: float
    """Bytes offloaded to the host, per worker."""

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.ema + self.activations

    def label(self) -> str:
        off = [name for name, on in (("optimizer", self.offload_optimizer), ("param", self.offload_param)) if on]
        return f"ZeRO-{self.stage}" + (f" + offload {'+'.join(off)}" if off else "")


def activation_bytes(arch: Architecture, setting: Setting, checkpointing: bool) -> float:
    """Activations of one micro-batch on one GPU (module docstring)."""
    tokens = setting.micro_batch * setting.seq_len
    s = 2 if setting.bf16_activations or setting.bf16_weights else 4
    h, f = arch.hidden, arch.mlp
    layer = tokens * (s * (8 * h + (4 if arch.gated_mlp else 2) * f) + (2 * h if arch.dropout else 0))
    body = arch.n_layers * tokens * s * h + layer if checkpointing else arch.n_layers * layer
    head = 0 if setting.fused_head else 3 * tokens * arch.vocab * s
    return float(body + head)


def row(arch: Architecture, setting: Setting, stage: int, offload_optimizer: bool = False,
        offload_param: bool = False) -> Row:
    """Bytes per GPU for one ZeRO stage (module docstring)."""
    p, workers = arch.params, setting.workers
    w = 2 if setting.bf16_weights else 4
    params = w * p / (workers if stage == 3 else 1)
    grads = w * p / (workers if stage >= 2 else 1)
    optimizer = (4 + 4 * ADAM_MOMENTS if setting.bf16_weights else 4 * ADAM_MOMENTS) * p / (workers if stage >= 1 else 1)
    ema = 4 * p / (workers if stage == 3 else 1) if setting.ema else 0.0
    host = (optimizer if offload_optimizer else 0.0) + (params if offload_param else 0.0)
    return Row(stage, offload_optimizer, offload_param, 0.0 if offload_param else params, grads,
               0.0 if offload_optimizer else optimizer, ema,
               activation_bytes(arch, setting, setting.checkpointing), host)


def plan(arch: Architecture, setting: Setting) -> list[Row]:
    """Every stage, 0 to 3, without and with optimizer offload (and ZeRO-3 with both offloads)."""
    rows = [row(arch, setting, 0)]
    for stage in (1, 2, 3):
        rows += [row(arch, setting, stage), row(arch, setting, stage, offload_optimizer=True)]
    rows.append(row(arch, setting, 3, offload_optimizer=True, offload_param=True))
    return rows


def job_row(job: JobConfig, rows: list[Row]) -> Row:
    """The row of the job's own configuration (DDP is stage 0)."""
    stage = job.train.zero_stage() or 0
    key = (stage, job.train.offload("optimizer") == "cpu", job.train.offload("param") == "cpu")
    return next(r for r in rows if (r.stage, r.offload_optimizer, r.offload_param) == key)


def setting_of(job: JobConfig) -> Setting:
    ds_bf16 = bool((job.train.deepspeed.get("bf16") or {}).get("enabled", False))
    autocast = job.train.precision == "bf16" or (job.train.precision == "auto" and job.cluster.use_gpu)
    hf = getattr(job.model, "hf", None)
    checkpointing = job.model.backbone == "hf" and bool(getattr(hf, "gradient_checkpointing", False))
    return Setting(workers=job.cluster.num_workers, micro_batch=job.train.micro_batch, seq_len=job.data.seq_len,
                   bf16_weights=ds_bf16, bf16_activations=autocast, ema=job.optim.ema > 0,
                   checkpointing=checkpointing, fused_head=backbone_info(job.model.backbone).fused_head)


def _declared_int(config: dict, *names: str) -> int | None:
    for name in names:
        if isinstance(config.get(name), int):
            return int(config[name])
    return None


def declared_architecture(job: JobConfig) -> Architecture | None:
    """A pretrained Hugging Face model described by the job's declared ``model.hf.config``
    (layers, width, MLP width, vocabulary; LLaDA's or ``transformers``' key names) as a
    LLaMA-style decoder, so its plan needs no download; None when the job declares too little."""
    hf = job.model.hf
    if job.model.backbone != "hf" or not hf.pretrained or not hf.config:
        return None
    config = dict(hf.config)
    n_layers = _declared_int(config, "num_hidden_layers", "n_layers")
    hidden = _declared_int(config, "hidden_size", "d_model")
    mlp = _declared_int(config, "intermediate_size", "mlp_hidden_size")
    vocab = _declared_int(config, "vocab_size", "embedding_size")
    if None in (n_layers, hidden, mlp, vocab):
        return None
    heads = _declared_int(config, "num_attention_heads", "n_heads")
    kv_heads = _declared_int(config, "num_key_value_heads", "n_kv_heads")
    kv_hidden = hidden * kv_heads // heads if heads and kv_heads else None
    tied = bool(config.get("tie_word_embeddings", config.get("weight_tying", False)))
    return Architecture.llama_like(n_layers, hidden, mlp, vocab, tied=tied, kv_hidden=kv_hidden)


def architecture_of(job: JobConfig) -> Architecture:
    """The job's model: a pretrained one from its declared architecture (``declared_architecture``),
    anything else built on the meta device (no memory, no weights read)."""
    import torch

    declared = declared_architecture(job)
    if declared is not None:
        return declared
    with torch.device("meta"):
        net = build_model(job.model, job.data.vocab_size)
    return Architecture.of_module(net, dropout=job.model.dropout > 0)


def gib(value: float) -> str:
    return f"{value / GIB:.3g}"


def format_plan(arch: Architecture, setting: Setting, rows: list[Row], mine: Row | None = None,
                gpu_memory_gb: float | None = None) -> str:
    """The table ``check_plan`` prints: one row per configuration, the job's marked ``->``
    (GiB, or MiB for a model whose largest row is under 1 GiB)."""
    other = activation_bytes(arch, setting, not setting.checkpointing)
    unit, scale = ("GiB", GIB) if max(r.total for r in rows) >= GIB else ("MiB", 2**20)

    def gib(value: float) -> str:
        return f"{value / scale:.2f}"

    lines = [f"memory plan per GPU ({unit}): {arch.params / 1e9:.3f} B parameters, {setting.workers} workers, "
             f"micro-batch {setting.micro_batch} x {setting.seq_len} tokens, "
             f"{'bf16' if setting.bf16_weights else 'fp32'} weights"
             + (f", {gpu_memory_gb:g} GiB per GPU" if gpu_memory_gb else ""),
             f"  {'':2}{'configuration':<32}{'params':>8}{'grads':>8}{'optim':>8}{'ema':>8}{'activ':>8}"
             f"{'total':>9}{'host':>8}"]
    for r in rows:
        mark = "->" if r is mine else "  "  # followed by a space: "-> ZeRO-2"
        fits = "" if not gpu_memory_gb else ("  fits" if r.total <= gpu_memory_gb * GIB else "  too big")
        lines.append(f"  {mark} {r.label():<31}{gib(r.params):>8}{gib(r.grads):>8}{gib(r.optimizer):>8}"
                     f"{gib(r.ema):>8}{gib(r.activations):>8}{gib(r.total):>9}{gib(r.host):>8}{fits}")
    lines.append(f"  activations {gib(rows[0].activations)} {unit} "
                 f"{'with' if setting.checkpointing else 'without'} gradient checkpointing, {gib(other)} "
                 f"{'without' if setting.checkpointing else 'with'} (formulas: docs/deepspeed.md)")
    return "\n".join(lines)


def check_plan(job: JobConfig, arch: Architecture | None = None, echo=print) -> Row:
    """Print the job's memory plan; raise ``ConfigError`` when ``cluster.gpu_memory_gb`` is set
    and the job's own configuration needs more per GPU, naming the numbers and what fits."""
    arch = arch or architecture_of(job)
    setting = setting_of(job)
    rows = plan(arch, setting)
    mine = job_row(job, rows)
    limit = job.cluster.gpu_memory_gb
    echo(format_plan(arch, setting, rows, mine, limit))
    if limit is not None and mine.total > limit * GIB:
        fitting = [r.label() for r in rows if r.total <= limit * GIB]
        smaller = replace(setting, micro_batch=1)
        at_one = row(arch, smaller, mine.stage, mine.offload_optimizer, mine.offload_param).total
        hint = (f"configurations that fit: {', '.join(fitting)}" if fitting
                else "no ZeRO stage fits at this micro-batch")
        raise ConfigError(
            f"cluster.gpu_memory_gb: the job needs {gib(mine.total)} GiB per GPU with {mine.label()} "
            f"(params {gib(mine.params)}, grads {gib(mine.grads)}, optimizer {gib(mine.optimizer)}, EMA "
            f"{gib(mine.ema)}, activations {gib(mine.activations)}) but a GPU has {limit:g} GiB; {hint} "
            f"(train.deepspeed.zero_optimization.stage / offload_optimizer); train.micro_batch=1 would need "
            f"{gib(at_one)} GiB; or more workers (cluster.num_workers)")
    return mine
