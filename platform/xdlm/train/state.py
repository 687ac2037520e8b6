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
    """What a run has done so far; saved in every checkpoint, so each survives restarts.

    ``wall_time_s`` is the training wall clock: the sum over attempts of the time each spent in
    its step loop (training, evaluation, checkpoints) up to the checkpoint it saved; time lost
    to a crash (steps replayed after it, worker start-up) is not counted. It differs between
    runs of the same job; every other field is the same bit for bit.
    ``loss_ema`` / ``loss_ema_weight``: the running EMA of the logged training loss and the sum
    of its weights (their ratio is ``train/loss_smooth``, bias-corrected).
    """

    step: int = 0
    tokens: int = 0
    wall_time_s: float = 0.0
    loss_ema: float = 0.0
    loss_ema_weight: float = 0.0

    def smooth_loss(self, loss: float, beta: float) -> float:
        """Fold ``loss`` into the EMA and return the bias-corrected smoothed value:
        ``m <- beta m + (1 - beta) loss``, ``w <- beta w + (1 - beta)``, smoothed = ``m / w``
        (``w = 1 - beta^n`` after n points, as in Adam's bias correction)."""
        self.loss_ema = beta * self.loss_ema + (1 - beta) * loss
        self.loss_ema_weight = beta * self.loss_ema_weight + (1 - beta)
        return self.loss_ema / self.loss_ema_weight if self.loss_ema_weight > 0 else loss


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
