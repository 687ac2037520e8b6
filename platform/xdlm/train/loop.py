"""The per-worker training loop: what every Ray Train worker runs, top to bottom.

One optimizer step:
  1. antithetic times for the whole global batch (same seed on every worker), this worker's slice;
  2. for each accumulation step: next micro-batch, noise it, NELBO, backward (DDP syncs on the last);
  3. clip, AdamW step, LR schedule, EMA;
  4. now and then: log (rank 0 -> MLflow), validate, checkpoint (all ranks report to Ray together).

Every random draw of a step is seeded from (seed, step, rank, accumulation step), so a resumed
run replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from xdlm.config import JobConfig, from_dict, to_yaml
from xdlm.data.build import build_datasets
from xdlm.diffusion import XDLM, schedules, time_sampling
from xdlm.eval.likelihood import nelbo_sums, perplexity
from xdlm.models import build_model, count_parameters, flops_per_token
from xdlm.train import checkpoint as ckpt
from xdlm.train.engine import build_engine
from xdlm.train.objective import make_objective
from xdlm.train.optim import EMA
from xdlm.train.progress import Progress
from xdlm.train.reporting import WorkerTracker


@dataclass
class Counters:
    step: int = 0
    tokens: int = 0


def step_seed(seed: int, step: int, rank: int = 0, micro: int = 0) -> int:
    return (seed * 1_000_003 + step) * 4096 + rank * 64 + micro


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def mean_over_workers(value: float, count: float = 1.0) -> float:
    """Token-weighted mean across workers (every rank must call it)."""
    pair = torch.tensor([value * count, count], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(pair)
    return float(pair[0] / pair[1])


def any_worker(flag: bool) -> bool:
    """True on every rank if it is True on any: ranks must take the same branch (every rank must
    call it), or the next collective deadlocks."""
    value = torch.tensor([1.0 if flag else 0.0])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def autocast_context(job: JobConfig, device: torch.device):
    use_bf16 = job.train.precision == "bf16" or (job.train.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_loop_per_worker(loop_config: dict) -> None:
    job = from_dict(loop_config["job"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(job.train.seed)

    # -- data, process, model ------------------------------------------------------------
    barrier = dist.barrier if dist.is_initialized() else None
    data = build_datasets(job.data, rank=rank, barrier=barrier)
    tok = data.tokenizer
    process = XDLM(tok.vocab_size, tok.mask_id, job.diffusion.k)
    schedule = schedules.get(job.diffusion.schedule, **job.diffusion.schedule_params)
    objective = make_objective(job.model.backbone, process, schedule, job.diffusion.loss_backend)
    model = build_model(job.model, tok.vocab_size).to(device)
    ema = EMA(model, job.optim.ema)
    batches = data.train_batches(job.train.micro_batch, rank=rank, world_size=world, seed=job.train.seed)
    counters = Counters()

    # -- resume: Ray hands back this run's latest checkpoint after a restart; a new run may
    #    start from another run's checkpoint instead (PBT's exploit step) ---------------------
    restored = ray.train.get_checkpoint()
    adopted = restored is None and bool(loop_config.get("init_checkpoint"))
    if adopted:
        restored = ray.train.Checkpoint(loop_config["init_checkpoint"])
    with restored.as_directory() if restored is not None else contextlib.nullcontext() as directory:
        state = ckpt.read_checkpoint(directory) if directory is not None else None
        if state is not None:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            batches.load_state_dict(state["data"][rank] if world == len(state["data"]) else state["data"][0])
            counters = Counters(**state["counters"])
        engine = build_engine(model, job, world)  # DDP or DeepSpeed: optimizer, schedule, clipping
        if state is not None:
            engine.load_state_dict(state, directory)
        if adopted:  # the weights, moments, step and data position carry over; the hyperparameters are ours
            engine.adopt_hyperparameters(job.optim, job.train.steps)
            ema.adopt_decay(job.optim.ema, model)

    accum = job.accum_steps
    tokens_per_step = job.train.global_batch * job.data.seq_len
    flops_per_step = flops_per_token(job.model, job.data.seq_len) * tokens_per_step
    tracker = WorkerTracker.for_rank(rank, loop_config, job, count_parameters(model), data.summary())
    progress = Progress(job.train.steps, start_step=counters.step, enabled=rank == 0)
    started = time.monotonic()

    while counters.step < job.train.steps:
        step = counters.step
        maybe_inject_fault(loop_config.get("fault"), step, rank, world)
        # 1. antithetic times over the global batch; this worker's strided slice per micro-step
        t_global = time_sampling.antithetic_times(
            job.train.global_batch, job.diffusion.t_min,
            generator=torch.Generator().manual_seed(step_seed(job.train.seed, step)),
        )
        engine.forward_model.train()
        engine.zero_grad()
        step_loss = 0.0
        # 2. accumulate gradients; DDP all-reduces only on the last micro-step
        for micro in range(accum):
            x0 = next(batches).to(device)
            t = time_sampling.shard_times(t_global, rank, world, micro, accum)
            seed = step_seed(job.train.seed, step, rank, micro)
            torch.manual_seed(seed)  # dropout
            noise = torch.Generator(device=device).manual_seed(seed)
            with engine.sync_context(micro == accum - 1), autocast_context(job, device):
                loss = objective(engine.forward_model, x0, t, noise)
            engine.backward(loss)
            step_loss += loss.detach().item() / accum
        # 3. update: clip, AdamW, LR schedule, EMA
        grad_norm = engine.step()
        ema.update(model)
        counters.step += 1
        counters.tokens += tokens_per_step

        # 4. log, evaluate, checkpoint (the same decisions on every rank)
        last = counters.step == job.train.steps
        out_of_time = job.train.max_time_s is not None and any_worker(
            time.monotonic() - started > job.train.max_time_s
        )
        if counters.step % job.train.log_every == 0 or last:
            train_loss = mean_over_workers(step_loss)
            tracker.log_metrics({
                "train/loss": train_loss,
                "lr": engine.lr(),
                "grad_norm": grad_norm,
                "tokens": counters.tokens,
                "flops": flops_per_step * counters.step,
                "throughput/tokens_per_s": progress.tokens_per_s(counters.step, tokens_per_step),
            }, counters.step)
            progress.update(counters.step, train_loss, tokens_per_step)
        metrics: dict[str, float] = {"step": counters.step, "tokens": counters.tokens}
        evaluate_now = counters.step % job.train.eval_every == 0 or last or out_of_time
        checkpoint_now = counters.step % job.train.checkpoint_every == 0 or last or out_of_time
        if evaluate_now:
            metrics.update(validate(model, ema, objective, data, job, rank, world, device))
            tracker.log_metrics(metrics, counters.step)
            tracker.log_samples(model, ema, process, schedule, tok, job, counters.step, device)
            progress.note(f"val/nelbo {metrics['val/nelbo']:.3f}  val/ppl {metrics['val/ppl']:.1f}")
        if evaluate_now or checkpoint_now:
            report(metrics, counters, model, ema, engine, batches, job, rank, world, checkpoint_now)
        if out_of_time:
            progress.note(f"train.max_time_s reached at step {counters.step}: stopping with a checkpoint")
            break

    tracker.finish(model, ema, objective, process, schedule, data, job, device)


def maybe_inject_fault(fault: dict | None, step: int, rank: int, world: int) -> None:
    """Failure drill: ``{"at_step": n, "marker": path}`` kills the last worker once at step n (the
    marker file records that it happened) to exercise FailureConfig end to end."""
    if not fault or step != fault["at_step"] or rank != world - 1 or os.path.exists(fault["marker"]):
        return
    marker = fault["marker"]
    with open(marker, "w") as f:
        f.write(f"killed rank {rank} at step {step}\n")
    os._exit(1)


def validate(model, ema, objective, data, job: JobConfig, rank, world, device) -> dict[str, float]:
    """Validation NELBO / PPL with the EMA weights, averaged over all workers' shards."""
    model.eval()
    with ema.applied(model):
        batches = data.eval_batches(job.train.micro_batch, rank=rank, world_size=world)
        total, count = nelbo_sums(objective, model, batches, device, job.diffusion.t_min,
                                  max_batches=job.train.eval_batches)
    nelbo = mean_over_workers(total / max(count, 1), count)
    return {"val/nelbo": nelbo, "val/ppl": perplexity(nelbo)}


def report(metrics, counters, model, ema, engine, batches, job, rank, world, with_checkpoint):
    """Every rank reports (it is a barrier). Rank 0 writes ``state.pt``; with a sharded
    optimizer (ZeRO) every rank also writes its shard, and Ray merges them into one checkpoint."""
    data_states = [None] * world
    if dist.is_initialized():
        dist.all_gather_object(data_states, batches.state_dict())
    else:
        data_states = [batches.state_dict()]
    writes = with_checkpoint and (rank == 0 or engine.shards_optimizer)
    if not writes:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="xdlm-ckpt-") as directory:
        if engine.shards_optimizer:
            engine.save_shards(directory)
        if rank == 0:
            state = {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                **engine.state_dict(),
                "data": data_states,
                "counters": vars(counters).copy(),
                "rng": ckpt.rng_states(),
            }
            ckpt.write_checkpoint(directory, state, to_yaml(job))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
