"""Step ``deepspeed``: DeepSpeed ZeRO-2 for a few steps, in one process.

Through the project's ``xdlm.train.engine.DeepSpeedEngine`` (ZeRO stage 2, bf16): torch.distributed
with world size 1 on a free loopback port (nccl on a GPU, gloo on the CPU), the small DiT at
L = 1024 with micro-batch 16, 2 warm-up + 6 timed steps (1 + 2 in the dry run).  The
same numbers as training.py (tokens/s, MFU, peak memory), plus the engine's set-up time; a stage
other than 2 fails the step.
"""

from __future__ import annotations

import os
import socket
import time

from .common import StepContext
from .training import print_step, train_result, train_setup, train_steps


def free_port() -> int:
    """A loopback port nothing listens on now, for torch.distributed's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_deepspeed(ctx: StepContext) -> dict:
    """ZeRO-2 through the project's DeepSpeedEngine, one process: torch.distributed with world
    size 1 on a free loopback port (nccl on a GPU, gloo on the CPU)."""
    import torch
    import torch.distributed as dist

    from xdlm.models import build_model
    from xdlm.objective import build_process, make_objective
    from xdlm.train.engine import DeepSpeedEngine

    job, vocab, mask, device = train_setup(ctx.dry_run, deepspeed=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_model(job.model, vocab).to(device)
        start = time.perf_counter()
        engine = DeepSpeedEngine(model, job, world=1)
        init_s = time.perf_counter() - start
        objective = make_objective(job, build_process(job, vocab, mask))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        warmup, steps = (1, 2) if ctx.dry_run else (2, 6)
        run = train_steps(job, vocab, mask, device, engine, objective, steps, warmup, print_step)
        stage = engine.engine.zero_optimization_stage()
        notes = [f"deepspeed.initialize through xdlm.train.engine.DeepSpeedEngine: {backend}, world size 1, "
                 f"ZeRO stage {stage}, bf16 {engine.engine.bfloat16_enabled()}; engine set up in {init_s:.1f} s"]
        result = train_result(ctx, job, vocab, device, engine.engine.module, run, f"ZeRO-{stage}", notes)
        result["data"].update(zero_stage=stage, init_s=init_s, comm_backend=backend)
        if stage != 2:
            result["status"] = "failed"
            result["summary"] += f"; ZeRO stage {stage}, expected 2"
        return result
    finally:
        dist.destroy_process_group()
