"""Which metrics a trial reports, and when: the sweep's metric must be one of them.

Tune only sees what the trial reports. During training the Ray Train workers report
``metric_names.during_training()`` at every evaluation (``train.eval_every``); those are what
ASHA and PBT can act on. The end-of-training numbers (zero-shot, generation quality, the unigram
baseline) exist only once a trial has finished, so a sweep can optimise them with FIFO but not
stop early on them. Knowing this statically lets a sweep with a metric that no trial reports
fail before any trial starts, instead of after the first hour. The names themselves are
``xdlm.eval.metric_names``'s, the module training writes them with.
"""

from __future__ import annotations

from xdlm.config import ConfigError, JobConfig
from xdlm.eval import metric_names
from xdlm.models import backbone_info


def final_metrics(job: JobConfig) -> list[str]:
    """Metrics a finished trial of ``job`` reports on top of the intermediate ones."""
    return metric_names.at_end(
        eval_sets=job.data.eval_sets, zero_shot=job.eval.zero_shot,
        generates=backbone_info(job.model.backbone).generates, sample_steps=job.eval.sample_steps,
        has_evaluator=bool(job.eval.evaluator),
    )


def check_metric(metric: str, job: JobConfig, early_stopping: bool) -> None:
    """Raise ``ConfigError`` unless every trial of ``job`` reports ``metric`` (during training
    when the scheduler stops trials early)."""
    during = metric_names.during_training()
    if metric in during:
        return
    finals = final_metrics(job)
    if metric in finals:
        if early_stopping:
            raise ConfigError(
                f"metric: {metric!r} is only reported when a trial finishes, so ASHA/PBT cannot act "
                f"on it during training; use one reported during training ({', '.join(during)}) "
                "or scheduler.kind=fifo"
            )
        return
    raise ConfigError(
        f"metric: no trial reports {metric!r}; during training: {', '.join(during)}; "
        f"at the end (this base job): {', '.join(finals)}"
    )
