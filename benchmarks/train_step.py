"""Ray Train overhead on the training step, and time from `xdlm train` to the first step.

Same model (tiny DiT), same data shape, same number of processes (2 by default), same step code:
  plain  : torch.multiprocessing + torch.distributed (gloo), DDP
  ray    : ray.train.torch.TorchTrainer workers, DDP through prepare_model
Both time the steady-state steps after warm-up inside the workers. Then `xdlm train` is started
as a user would (fresh process, local Ray) and the time to its first "step 1/" line is measured.

    .venv/bin/python benchmarks/train_step.py [--steps 8] [--workers 2] [--json out.json]
Targets: Ray overhead <= 10 % per step; first step <= 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VOCAB, SEQ_LEN, MICRO_BATCH = 4096, 128, 8


def timed_steps(rank: int, world: int, steps: int, warmup: int, wrap) -> list[float]:
    """Run warmup + steps optimizer steps of the tiny model; return the timed step durations."""
    from xdlm.diffusion import XDLM, schedules, time_sampling
    from xdlm.models import ModelConfig, build_model
    from xdlm.objective import diffusion_loss

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = wrap(build_model(ModelConfig(size="tiny", dropout=0.0, max_seq_len=SEQ_LEN), VOCAB))
    process = XDLM(VOCAB, 2, 0.1)
    schedule = schedules.get("loglinear")

    def objective(model, x0, t, generator):
        return diffusion_loss(model, process, schedule, x0, t, generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    gen = torch.Generator().manual_seed(rank)
    durations = []
    for step in range(warmup + steps):
        x0 = torch.randint(3, VOCAB, (MICRO_BATCH, SEQ_LEN), generator=gen)
        t = time_sampling.shard_times(time_sampling.antithetic_times(MICRO_BATCH * world), rank, world)
        start = time.perf_counter()
        loss = objective(model, x0, t, gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup:
            durations.append(time.perf_counter() - start)
    return durations


def _plain_worker(rank: int, world: int, steps: int, warmup: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    durations = timed_steps(rank, world, steps, warmup, torch.nn.parallel.DistributedDataParallel)
    if rank == 0:
        Path(out).write_text(json.dumps(durations))
    dist.destroy_process_group()


def plain(world: int, steps: int, warmup: int) -> list[float]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        mp.spawn(_plain_worker, args=(world, steps, warmup, port, out.name), nprocs=world)
        return json.loads(Path(out.name).read_text())


def ray_train(world: int, steps: int, warmup: int) -> list[float]:
    import ray.train
    from ray.train.torch import TorchTrainer, prepare_model

    from xdlm.cluster.ray_session import ensure_ray

    ensure_ray(num_cpus=world, include_dashboard=os.environ.get("XDLM_BENCH_DASHBOARD", "1") == "1")

    def loop(cfg):
        ctx = ray.train.get_context()
        durations = timed_steps(ctx.get_world_rank(), ctx.get_world_size(), cfg["steps"], cfg["warmup"],
                                prepare_model)
        with tempfile.TemporaryDirectory() as d:
            Path(d, "durations.json").write_text(json.dumps(durations))
            ckpt = ray.train.Checkpoint.from_directory(d) if ctx.get_world_rank() == 0 else None
            ray.train.report({"done": 1}, checkpoint=ckpt)

    with tempfile.TemporaryDirectory() as storage:
        result = TorchTrainer(
            loop, train_loop_config={"steps": steps, "warmup": warmup},
            scaling_config=ray.train.ScalingConfig(num_workers=world, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name="bench", storage_path=storage),
        ).fit()
        with result.checkpoint.as_directory() as d:
            return json.loads(Path(d, "durations.json").read_text())


def time_to_first_step(timeout_s: float = 300) -> float:
    """Wall time from launching `xdlm train jobs/quickstart.yaml` to its first 'step 1/' line."""
    with tempfile.TemporaryDirectory() as work:
        cmd = [str(ROOT / ".venv/bin/xdlm"), "train", str(ROOT / "jobs/quickstart.yaml"), "train.steps=1",
               "train.log_every=1", "eval.sample_steps=[2]", "eval.num_samples=1", "train.eval_batches=1",
               f"cluster.storage_path={work}/runs"]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        elapsed = float("nan")
        for line in proc.stdout:
            if re.search(r"step 1/\d+", line):
                elapsed = time.monotonic() - start
                break
            if time.monotonic() - start > timeout_s:
                break
        proc.kill()
        proc.wait()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-first-step", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    base = plain(args.workers, args.steps, args.warmup)
    ray_times = ray_train(args.workers, args.steps, args.warmup)
    tokens = MICRO_BATCH * SEQ_LEN * args.workers
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    rows = [("plain torch.distributed", med(base)), ("Ray Train worker", med(ray_times))]
    print(f"tiny DiT, {args.workers} processes x micro-batch {MICRO_BATCH} x {SEQ_LEN} tokens, median of {args.steps} steps")
    print(f"{'loop':28s} {'step (s)':>10s} {'tokens/s':>10s} {'vs plain':>9s}")
    for name, seconds in rows:
        print(f"{name:28s} {seconds:10.3f} {tokens / seconds:10.0f} {seconds / rows[0][1]:9.3f}")
    overhead = med(ray_times) / med(base) - 1
    print(f"Ray overhead per step: {overhead:+.1%} (target <= +10%)")
    result = {"plain_step_s": med(base), "ray_step_s": med(ray_times), "ray_overhead": overhead,
              "tokens_per_step": tokens}
    if not args.skip_first_step:
        first = time_to_first_step()
        print(f"time from `xdlm train` to step 1: {first:.1f} s (target <= 30 s)")
        result["time_to_first_step_s"] = first
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
