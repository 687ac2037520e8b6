"""Which metrics a trial reports, and when: the sweep's metric must be one of them.

Tune only sees what the trial reports. During training the Ray Train workers report
``val/nelbo``, ``val/ppl``, ``step`` and ``tokens`` at every evaluation (``train.eval_every``);
those are what ASHA can stop on. The end-of-training numbers (zero-shot, generation quality,
the unigram baseline) exist only once a trial has finished, so a sweep can optimise them with
FIFO but not stop early on them. Knowing this statically lets a sweep with a metric that no
trial reports fail before any trial starts, instead of after the first hour.
"""

from __future__ import annotations

from xdlm.config import ConfigError, JobConfig

INTERMEDIATE_METRICS = ("val/nelbo", "val/ppl", "step", "tokens")


def final_metrics(job: JobConfig) -> list[str]:
    """Metrics a finished trial reports on top of the intermediate ones."""
    names = ["val/unigram_ppl"]
    if job.eval.zero_shot:
        for eval_set in job.data.eval_sets:
            names += [f"zeroshot/{eval_set}/nelbo", f"zeroshot/{eval_set}/ppl"]
    if job.model.backbone != "causal_dit":
        for steps in job.eval.sample_steps:
            names.append(f"gen/entropy_{steps}steps")
            if job.eval.evaluator:
                names.append(f"gen/ppl_{steps}steps")
    return names


def check_metric(metric: str, job: JobConfig, early_stopping: bool) -> None:
    """Raise ``ConfigError`` unless every trial of ``job`` reports ``metric`` (during training
    when the scheduler stops trials early)."""
    if metric in INTERMEDIATE_METRICS:
        return
    finals = final_metrics(job)
    if metric in finals:
        if early_stopping:
            raise ConfigError(
                f"metric: {metric!r} is only reported when a trial finishes, so ASHA/PBT cannot act "
                f"on it during training; use one reported during training ({', '.join(INTERMEDIATE_METRICS)}) "
                "or scheduler.kind=fifo"
            )
        return
    raise ConfigError(
        f"metric: no trial reports {metric!r}; during training: {', '.join(INTERMEDIATE_METRICS)}; "
        f"at the end (this base job): {', '.join(finals)}"
    )
