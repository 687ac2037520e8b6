"""Steps ``train`` and ``train_compile``: a short bf16 training of the small DiT on one device.

On the GPU: the small DiT (12 x 768) at L = 1024 with GPT-2's 50258 ids, micro-batch 32, bf16
autocast, the default loss backend (triton on CUDA), AdamW with clipping; 2 warm-up + 10 timed
steps eager, 3 + 10 under torch.compile (whose first step is the compile).  In the dry run a
2-layer, 64-wide DiT at L = 32 with 257 ids, batch 4, 1 + 3 steps on the CPU.  Reported:

    tokens/s = micro_batch x L / median step time (the timed steps only)
    MFU      = tokens/s x flops_per_token / peak bf16 FLOP/s (devices.py; none in the dry run)
    flops_per_token = 6 N + 12 n_layers D L  (xdlm.models.flops_per_token: N the non-embedding
               parameters, no output head); "MFU incl. head" adds the head's 6 D V per token
    peak memory = torch.cuda.max_memory_allocated after the model is built

The model, objective and optimizer are built as xdlm.train.loop builds them; deepspeed_zero2.py
reuses this module's setup, loop and report with the ZeRO-2 engine.
"""

from __future__ import annotations

import math
import statistics
import time

from .common import GPT2_MASK, GPT2_VOCAB, K, StepContext


def train_setup(dry: bool, deepspeed: bool = False, compiled: bool = False):
    """(job, vocab, mask id, device): the small DiT at L = 1024 with GPT-2's vocabulary on a GPU;
    a 2-layer, 64-wide DiT at L = 32 with 257 ids on the CPU (dry run)."""
    import torch

    from xdlm.config import JobConfig
    from xdlm.models import ModelConfig

    job = JobConfig()
    if dry:
        job.model = ModelConfig(size="custom", n_layers=2, hidden=64, n_heads=4, max_seq_len=32)
        job.data.seq_len, vocab, mask = 32, 257, 256
        job.train.micro_batch = 4
    else:
        job.model = ModelConfig(size="small", max_seq_len=1024)
        job.data.seq_len, vocab, mask = 1024, GPT2_VOCAB, GPT2_MASK
        job.train.micro_batch = 32 if not deepspeed else 16
    job.train.global_batch = job.train.micro_batch
    job.cluster.num_workers = 1
    job.train.precision = "bf16"
    job.train.compile = compiled
    job.optim.warmup_steps = 0
    job.diffusion.k = K
    if deepspeed:
        job.train.deepspeed = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}
    return job, vocab, mask, torch.device("cpu" if dry else "cuda")


def train_steps(job, vocab, mask, device, engine, objective, steps: int, warmup: int, on_step=None) -> dict:
    """The loop of xdlm.train.loop for one worker: antithetic times, noise, bf16 autocast, the
    engine's backward / step; returns per-step timings and losses."""
    import torch

    from xdlm.diffusion import time_sampling

    B, L = job.train.micro_batch, job.data.seq_len
    data = torch.Generator().manual_seed(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    durations, losses, norms = [], [], []
    for step in range(warmup + steps):
        x0 = torch.randint(0, vocab - 1, (B, L), generator=data)  # never the mask id (the last)
        x0 = (x0 + (x0 >= mask).long()).to(device)
        t_global = time_sampling.antithetic_times(B, job.diffusion.t_min,
                                                  generator=torch.Generator().manual_seed(step))
        t = time_sampling.shard_times(t_global, 0, 1, 0, 1)
        sync()  # time the step alone, not the queue of earlier GPU work
        start = time.perf_counter()
        engine.forward_model.train()
        engine.zero_grad()
        torch.manual_seed(step)
        noise = torch.Generator(device=device).manual_seed(step)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = objective(engine.forward_model, x0, t, noise)
        engine.backward(loss)
        losses.append(loss.detach().item())
        norms.append(engine.step())
        sync()
        durations.append(time.perf_counter() - start)
        if on_step is not None:
            on_step(step, durations, losses)
    return {"durations": durations, "losses": losses, "grad_norms": norms, "warmup": warmup}


def print_step(step, durations, losses) -> None:
    print(f"  step {step}: {durations[-1]:.3f} s, loss {losses[-1]:.4f}", flush=True)


def train_result(ctx, job, vocab, device, model, run: dict, label: str, extra_notes=()) -> dict:
    """The step's result: tokens/s, MFU (with and without the head), peak memory, the losses; a
    non-finite loss fails the step."""
    import torch

    from xdlm.models import count_parameters, flops_per_token

    B, L = job.train.micro_batch, job.data.seq_len
    timed = run["durations"][run["warmup"]:]
    median = statistics.median(timed)
    tokens_s = B * L / median
    fpt = flops_per_token(job.model, L)
    hidden = job.model.dims().hidden
    head = 6 * hidden * vocab  # output head forward + backward per token (not in the docs' formula)
    peak = ctx.spec.get("peak_bf16_tflops")
    mfu = tokens_s * fpt / (peak * 1e12) if peak else None
    mfu_head = tokens_s * (fpt + head) / (peak * 1e12) if peak else None
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    params = count_parameters(model)
    losses = run["losses"]
    finite = all(math.isfinite(x) for x in losses)
    data = {
        "label": label, "model": f"{job.model.size} ({job.model.dims()})", "vocab": vocab, "seq_len": L,
        "micro_batch": B, "params": params, "flops_per_token": fpt, "head_flops_per_token": head,
        "first_step_s": run["durations"][0], "median_step_s": median, "tokens_per_s": tokens_s,
        "mfu": mfu, "mfu_with_head": mfu_head, "peak_memory_gib": mem, "losses": losses,
        "grad_norms": run["grad_norms"], "steps_timed": len(timed), "warmup": run["warmup"],
    }
    rows = [[label, f"{job.model.size} {params['non_embedding'] / 1e6:.1f}M non-emb", f"{B} x {L}",
             f"{run['durations'][0]:.2f}", f"{1e3 * median:.1f}", f"{tokens_s:,.0f}",
             f"{100 * mfu:.1f}%" if mfu is not None else "-",
             f"{100 * mfu_head:.1f}%" if mfu_head is not None else "-",
             f"{mem:.1f}" if mem is not None else "-", f"{losses[0]:.3f} -> {losses[-1]:.3f}"]]
    columns = ["run", "model", "batch x L", "first step s", "median step ms", "tokens/s", "MFU", "MFU incl. head",
               "peak GiB", "loss"]
    notes = [f"MFU = tokens/s x flops_per_token / peak bf16, flops_per_token = 6 N + 12 n_layers D L = "
             f"{fpt:,} (xdlm.models.flops_per_token: non-embedding N, no output head); 'incl. head' adds "
             f"6 D V = {head:,} per token", *extra_notes]
    if not peak:
        notes.append("no peak FLOPs for this device (dry run or not in DEVICE_SPECS): no MFU")
    summary = (f"{tokens_s:,.0f} tokens/s" + (f", MFU {100 * mfu:.1f}%" if mfu is not None else "")
               + (f", peak {mem:.1f} GiB" if mem is not None else "") + f", first step {run['durations'][0]:.1f} s"
               + ("" if finite else ", NON-FINITE LOSS"))
    return {"status": "ok" if finite else "failed", "summary": summary, "data": data, "notes": notes,
            "tables": [{"columns": columns, "rows": rows}]}


class SingleDeviceEngine:
    """What ``xdlm.train.engine.DDPEngine`` does at world size 1 (AdamW from
    ``xdlm.train.optim``, global-norm clipping, ``torch.compile`` when ``train.compile``), without
    its import of Ray, which a bare GPU image may lack."""

    def __init__(self, model, job) -> None:
        import torch

        from xdlm.train.optim import build_optimizer

        self.module = model
        self.grad_clip = job.optim.grad_clip
        self.optimizer = build_optimizer(model, job.optim)
        self.forward_model = torch.compile(model) if job.train.compile else model

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss) -> None:
        loss.backward()  # one micro-step per optimizer step here

    def step(self) -> float:
        import torch

        clip = self.grad_clip if self.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
        self.optimizer.step()
        return float(norm)


def _step_train(ctx: StepContext, compiled: bool) -> dict:
    import torch

    from xdlm.models import build_model
    from xdlm.objective import build_process, make_objective

    job, vocab, mask, device = train_setup(ctx.dry_run, compiled=compiled)
    torch.manual_seed(0)
    model = build_model(job.model, vocab).to(device)
    engine = SingleDeviceEngine(model, job)
    objective = make_objective(job, build_process(job, vocab, mask))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup, steps = (1, 3) if ctx.dry_run else ((3, 10) if compiled else (2, 10))
    run = train_steps(job, vocab, mask, device, engine, objective, steps, warmup, print_step)
    label = "torch.compile" if compiled else "eager"
    notes = [f"loss backend: {job.diffusion.loss_backend} (triton on CUDA, chunked on the CPU); bf16 autocast; "
             f"AdamW (xdlm.train.optim.build_optimizer), clipping at {job.optim.grad_clip}, one micro-batch per step"]
    if compiled:
        notes.append("first step includes torch.compile's compilation (the model only; the loss is outside)")
    return train_result(ctx, job, vocab, device, model, run, label, notes)


def step_train(ctx: StepContext) -> dict:
    return _step_train(ctx, compiled=False)


def step_train_compile(ctx: StepContext) -> dict:
    return _step_train(ctx, compiled=True)
