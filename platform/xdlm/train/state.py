"""``WorkerState``: everything one training worker's step reads or changes, in one object, so
the loop and its helpers (validate, report, finish) take one argument instead of ten."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from xdlm.config import JobConfig
from xdlm.objective import Objective, Process
from xdlm.train.engine import DDPEngine
from xdlm.train.optim import EMA


@dataclass
class Counters:
    step: int = 0
    tokens: int = 0


@dataclass
class WorkerState:
    job: JobConfig
    rank: int
    world: int
    device: torch.device
    data: object
    """``xdlm.data.build.Datasets``: tokenizer, train/eval batches, unigram baseline."""
    process: Process
    objective: Objective
    model: torch.nn.Module
    ema: EMA
    engine: DDPEngine
    """DDP or DeepSpeed behind one interface (``xdlm.train.engine``)."""
    batches: object
    """This worker's resumable ``TrainBatches`` iterator."""
    counters: Counters = field(default_factory=Counters)
