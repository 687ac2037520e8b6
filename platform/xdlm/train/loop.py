"""The per-worker training loop: what every Ray Train worker runs, top to bottom.

One optimizer step:
  1. antithetic times for the whole global batch (same seed on every worker), this worker's slice;
  2. for each accumulation step: next micro-batch, noise it, NELBO, backward (DDP syncs on the last);
  3. clip, AdamW step, LR schedule, EMA;
  4. now and then: log (rank 0 -> MLflow), validate, checkpoint (all ranks report to Ray together).

Every random draw of a step is seeded from (train.seed, step, rank, accumulation step) and the
data order from data.seed and the iterator's saved position, so a resumed run replays exactly
what an uninterrupted one would have done; that is why checkpoints hold no RNG states.

A (re)started worker resumes from the newest complete checkpoint on storage, whatever Ray's own
record says (``xdlm.checkpoint.open_newest``).  A non-finite gradient norm is skipped or stops
the run (``train.on_nonfinite``); a run stopped that way, or one whose weights went non-finite,
writes no checkpoint and ends FAILED with the step and the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from xdlm.checkpoint import (
    FAILURE_RECORD,
    open_checkpoint,
    open_newest,
    prune,
    read_checkpoint,
    scan,
    write_checkpoint,
    write_manifest,
)
from xdlm.cluster import storage
from xdlm.config import JobConfig, from_dict, to_yaml
from xdlm.data.build import build_datasets
from xdlm.diffusion import time_sampling
from xdlm.eval import metric_names
from xdlm.eval.likelihood import nelbo_sums, perplexity
from xdlm.models import build_model
from xdlm.models.accounting import flops_per_token, flops_with_embedding_per_token
from xdlm.objective import build_process, make_objective
from xdlm.train.engine import build_engine
from xdlm.train.optim import EMA
from xdlm.train.progress import Progress
from xdlm.train.reporting import WorkerTracker
from xdlm.train.state import Counters, WorkerState


def step_seed(seed: int, step: int, rank: int = 0, micro: int = 0) -> int:
    return (seed * 1_000_003 + step) * 4096 + rank * 64 + micro


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


@dataclass(frozen=True)
class Accounting:
    """FLOPs per training token, without and with the output head (``models.accounting``)."""

    flops_per_token: int
    flops_with_embedding_per_token: int

    @classmethod
    def of(cls, job: JobConfig, vocab_size: int) -> Accounting:
        return cls(flops_per_token(job.model, job.data.seq_len),
                   flops_with_embedding_per_token(job.model, job.data.seq_len, vocab_size))

    def at(self, counters: Counters) -> dict[str, float]:
        """The accounting metrics, logged with every record: the x-axes runs of any size share."""
        return {metric_names.TOKENS: counters.tokens,
                metric_names.FLOPS: float(self.flops_per_token) * counters.tokens,
                metric_names.FLOPS_WITH_EMBEDDING: float(self.flops_with_embedding_per_token) * counters.tokens,
                metric_names.WALL_TIME: counters.wall_time_s}


def train_loop_per_worker(loop_config: dict) -> None:
    state = setup_worker(loop_config)
    job, counters, engine = state.job, state.counters, state.engine
    accum = job.accum_steps
    tokens_per_step = job.train.global_batch * job.data.seq_len
    accounting = Accounting.of(job, state.data.tokenizer.vocab_size)
    tracker = WorkerTracker.for_rank(state, loop_config)
    progress = Progress(job.train.steps, start_step=counters.step, enabled=state.rank == 0)
    started = time.monotonic()
    wall_time_before = counters.wall_time_s  # of the attempts before this one (from the checkpoint)
    nonfinite_in_a_row = 0

    while counters.step < job.train.steps:
        step = counters.step
        maybe_inject_fault(loop_config.get("fault"), step, state.rank, state.world)
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
            x0 = next(state.batches).to(state.device)
            t = time_sampling.shard_times(t_global, state.rank, state.world, micro, accum)
            seed = step_seed(job.train.seed, step, state.rank, micro)
            torch.manual_seed(seed)  # dropout
            noise = torch.Generator(device=state.device).manual_seed(seed)
            with engine.sync_context(micro == accum - 1), autocast_context(job, state.device):
                loss = state.objective(engine.forward_model, x0, t, noise)
            engine.backward(loss)
            step_loss += loss.detach().item() / accum
        # 3. update: clip, AdamW, LR schedule, EMA (a non-finite step is skipped or stops the run)
        grad_norm = engine.step(skip_nonfinite=job.train.on_nonfinite == "skip")
        # the norm is of the all-reduced gradients, so every rank sees the same one (a NaN loss on
        # any rank makes it NaN): no extra collective on the hot path
        nonfinite = not math.isfinite(grad_norm)
        nonfinite_in_a_row = nonfinite_in_a_row + 1 if nonfinite else 0
        if nonfinite and (job.train.on_nonfinite == "stop" or nonfinite_in_a_row >= job.train.max_nonfinite_steps):
            stop_failed(state, loop_config, f"step {step + 1}: non-finite loss {step_loss} / gradient norm "
                        f"{grad_norm} ({nonfinite_in_a_row} step(s) in a row; train.on_nonfinite="
                        f"{job.train.on_nonfinite})")
            tracker.close()
            return
        if not nonfinite:
            state.ema.update(state.model)
        counters.step += 1
        counters.tokens += tokens_per_step
        counters.wall_time_s = wall_time_before + (time.monotonic() - started)

        # 4. log, evaluate, checkpoint (the same decisions on every rank)
        last = counters.step == job.train.steps
        out_of_time = job.train.max_time_s is not None and any_worker(
            time.monotonic() - started > job.train.max_time_s
        )
        record: dict[str, float] = {}  # what MLflow gets at this step: one record, accounting included
        if counters.step % job.train.log_every == 0 or last:
            train_loss = mean_over_workers(step_loss)
            record.update({
                metric_names.TRAIN_LOSS: train_loss,
                metric_names.TRAIN_LR: engine.lr(),
                metric_names.TRAIN_GRAD_NORM: grad_norm,
                metric_names.TRAIN_TOKENS_PER_S: progress.tokens_per_s(counters.step, tokens_per_step),
            })
            if math.isfinite(train_loss):
                record[metric_names.TRAIN_LOSS_SMOOTH] = counters.smooth_loss(train_loss, job.tracking.loss_smoothing)
            progress.update(counters.step, train_loss, tokens_per_step)
        # Ray (and Tune) get the step and tokens; MLflow records the step with every value
        metrics: dict[str, float] = {metric_names.STEP: counters.step, metric_names.TOKENS: counters.tokens}
        evaluate_now = counters.step % job.train.eval_every == 0 or last or out_of_time
        checkpoint_now = (counters.step % job.train.checkpoint_every == 0 or last or out_of_time
                          or counters.step in job.optim.branch_starts(job.train.steps, job.train.branch_horizons))
        # ZeRO-3 gathers the sharded weights and EMA here (every rank); other engines have them
        with engine.full_weights(state.ema) if evaluate_now or checkpoint_now else contextlib.nullcontext():
            if evaluate_now:
                metrics.update(validate(state))
                record.update({k: v for k, v in metrics.items() if metric_names.is_evaluation(k)})
                progress.note(f"{metric_names.nelbo()} {metrics[metric_names.nelbo()]:.3f}  "
                              f"{metric_names.ppl()} {metrics[metric_names.ppl()]:.1f}")
            if record:
                tracker.log_metrics({**record, **accounting.at(counters)}, counters.step)
            if evaluate_now and not (last or out_of_time):  # the final evaluation draws its own samples
                tracker.log_samples(state)
            if checkpoint_now and any_worker(not weights_finite(state.model)):
                stop_failed(state, loop_config, f"step {counters.step}: the weights are no longer finite; "
                            "no checkpoint written (lower optim.lr, or check the data)")
                tracker.close()
                return
            if evaluate_now or checkpoint_now:
                lost = report(state, metrics, with_checkpoint=checkpoint_now, run_dir=loop_config["run_dir"])
                if lost:
                    tracker.note_lost_checkpoint(counters.step, lost)
        if out_of_time:
            progress.note(f"train.max_time_s reached at step {counters.step}: stopping with a checkpoint")
            break

    with engine.full_weights(state.ema):
        tracker.finish(state)


def setup_worker(loop_config: dict) -> WorkerState:
    """Data, process, objective, model, EMA and engine of this worker, restored from the run's
    latest checkpoint after a restart, or from another run's (``init_checkpoint``: PBT's exploit
    step, which keeps the weights, moments, step and data position but takes this job's
    hyperparameters)."""
    job = from_dict(loop_config["job"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(job.train.seed)

    barrier = dist.barrier if dist.is_initialized() else None
    data = build_datasets(job.data, rank=rank, barrier=barrier)
    process = build_process(job, data.tokenizer.vocab_size, data.tokenizer.mask_id)
    model = build_model(job.model, data.tokenizer.vocab_size).to(device)
    ema = EMA(model, job.optim.ema)
    batches = data.train_batches(job.train.micro_batch, rank=rank, world_size=world)  # data.seed orders them
    counters = Counters()

    with contextlib.ExitStack() as stack:
        found = stack.enter_context(open_newest(loop_config["run_dir"]))
        adopted = found is None and bool(loop_config.get("init_checkpoint"))
        directory = found[0] if found is not None else None
        if adopted:
            directory = stack.enter_context(open_checkpoint(loop_config["init_checkpoint"]))
        saved = read_checkpoint(directory) if directory is not None else None
        if not same_on_every_worker(saved["counters"]["step"] if saved else -1):
            raise RuntimeError("workers found different newest checkpoints on storage; is another "
                               "process writing to this run?")
        if saved is not None:
            model.load_state_dict(saved["model"])
            ema.load_state_dict(saved["ema"])
            batches.load_state_dict(saved["data"][rank] if world == len(saved["data"]) else saved["data"][0])
            counters = Counters(**saved["counters"])
        if adopted:  # before the engine: ZeRO-3 partitions the weights it reads
            ema.adopt_decay(job.optim.ema, model)
        engine = build_engine(model, job, world)  # DDP or DeepSpeed: optimizer, schedule, clipping
        if saved is not None:
            engine.load_state_dict(saved, directory)
        if adopted:
            engine.adopt_hyperparameters(job.optim, job.train.steps)
    # ZeRO-3: the model the loop reads is a view filled only inside engine.full_weights()
    return WorkerState(job, rank, world, device, data, process, make_objective(job, process), engine.view,
                       engine.track_ema(ema), engine, batches, counters)


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def same_on_every_worker(value: int) -> bool:
    values = torch.tensor([float(value), -float(value)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return bool(values[0] == -values[1])


def stop_failed(state: WorkerState, loop_config: dict, reason: str) -> None:
    """End this run on purpose: rank 0 records why (the driver ends the MLflow run FAILED with
    it); every rank returns without a checkpoint, so nothing non-finite becomes the latest."""
    if state.rank == 0:
        storage.write_text(f"{loop_config['run_dir']}/{FAILURE_RECORD}",
                           json.dumps({"step": state.counters.step, "reason": reason}))
        print(f"xdlm: stopping the run: {reason}", flush=True)


def maybe_inject_fault(fault: dict | None, step: int, rank: int, world: int) -> None:
    """Failure drill: ``{"at_step": n, "marker": path}`` kills the last worker once at step n (the
    marker file records that it happened) to exercise FailureConfig end to end;
    ``{"at_step": n, "raise": message}`` raises ``RuntimeError(message)`` there instead (a
    worker's exception, as a bug would raise it)."""
    if not fault or step != fault["at_step"] or rank != world - 1:
        return
    if fault.get("raise"):
        raise RuntimeError(fault["raise"])
    if os.path.exists(fault["marker"]):
        return
    marker = fault["marker"]
    with open(marker, "w") as f:
        f.write(f"killed rank {rank} at step {step}\n")
    os._exit(1)


def validate(state: WorkerState) -> dict[str, float]:
    """Validation NELBO / PPL with the EMA weights, averaged over all workers' shards."""
    job, model = state.job, state.model
    model.eval()
    with state.ema.applied(model):
        batches = state.data.eval_batches(job.train.micro_batch, rank=state.rank, world_size=state.world)
        total, count = nelbo_sums(state.objective, model, batches, state.device, job.diffusion.t_min,
                                  max_batches=job.train.eval_batches)
    nelbo = mean_over_workers(total / max(count, 1), count)
    return {metric_names.nelbo(): nelbo, metric_names.ppl(): perplexity(nelbo)}


def report(state: WorkerState, metrics: dict[str, float], with_checkpoint: bool, run_dir: str) -> str | None:
    """Every rank reports (it is a barrier). Rank 0 writes ``state.pt``; with a sharded
    optimizer (ZeRO) every rank also writes its shard, and Ray merges them into one checkpoint.
    Each writing rank's manifest comes last.  Once the report returns, rank 0 checks that the new
    checkpoint is whole on storage (Ray's upload can report success with a file missing when
    S3 retries run out: pyarrow ignores the error on close) and returns what is wrong, else None;
    only then does it delete checkpoints beyond ``train.keep_checkpoints`` (never the newest
    complete one)."""
    data_states = [None] * state.world
    if dist.is_initialized():
        dist.all_gather_object(data_states, state.batches.state_dict())
    else:
        data_states = [state.batches.state_dict()]
    engine = state.engine
    if not (with_checkpoint and (state.rank == 0 or engine.shards_optimizer)):
        ray.train.report(metrics)
        return None
    with tempfile.TemporaryDirectory(prefix="xdlm-ckpt-") as directory:
        if engine.shards_optimizer:
            engine.save_shards(directory)
        if state.rank == 0:
            write_checkpoint(directory, {
                "model": state.model.state_dict(),
                "ema": state.ema.state_dict(),
                **engine.state_dict(),
                "data": data_states,
                "counters": vars(state.counters).copy(),
            }, to_yaml(state.job), ranks=state.world if engine.shards_optimizer else 1)
        else:
            write_manifest(directory, rank=state.rank, step=state.counters.step)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    if state.rank != 0:
        return None
    lost = checkpoint_landed(run_dir, state.counters.step)
    prune(run_dir, state.job.train.keep_checkpoints)
    return lost


def checkpoint_landed(run_dir: str, step: int) -> str | None:
    """None when a complete checkpoint of ``step`` is on storage, else what is wrong with it."""
    try:
        complete, broken = scan(run_dir)
    except OSError as err:
        return f"its storage could not be listed ({err})"
    if any(c.step == step for c in complete):
        return None
    problems = "; ".join(f"{name}: {why}" for name, why in sorted(broken.items())) or "no directory of it"
    return f"not whole on storage ({problems})"
