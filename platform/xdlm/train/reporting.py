"""What a training worker sends to MLflow: rank 0 logs, every other rank is silent.

The driver owns the MLflow run (creates it, logs the config, ends it FINISHED/FAILED/KILLED);
rank 0 only appends metrics and artifacts through the non-blocking ``RunLogger``, so a slow or
dead tracking server never stalls or kills training.
"""

from __future__ import annotations

from xdlm.eval import metric_names
from xdlm.eval.evaluators import load_evaluator
from xdlm.eval.generation import generate
from xdlm.eval.suite import generation_metrics, likelihood_metrics
from xdlm.eval.synthetic import synthetic_metrics
from xdlm.models import backbone_info
from xdlm.tracking.logger import RunLogger
from xdlm.tracking.runs import make_client
from xdlm.train.state import WorkerState


class WorkerTracker:
    """Rank 0's MLflow logger.  After a restart the steps between the checkpoint and the crash
    are replayed (bit for bit); ``logged_up_to`` holds, per metric, the last step MLflow already
    has, and those steps are not logged twice."""

    def __init__(self, logger: RunLogger | None = None, logged_up_to: dict[str, int] | None = None) -> None:
        self.logger = logger
        self.logged_up_to = logged_up_to or {}

    @classmethod
    def for_rank(cls, rank: int, loop_config: dict, params: dict, data_summary: dict) -> WorkerTracker:
        run_id, uri = loop_config.get("run_id"), loop_config.get("tracking_uri")
        if rank != 0 or not run_id or not uri:
            return cls(None)
        logger = RunLogger(uri, run_id, spill_dir=loop_config.get("spill_dir"), install_handlers=False)
        tracker = cls(logger, logged_steps(uri, run_id))
        tracker.log_metrics({"params/total": params["total"], "params/non_embedding": params["non_embedding"]}, 0)
        logger.log_dict(data_summary, "data_summary.json")
        return tracker

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is None:
            return
        fresh = {k: v for k, v in metrics.items() if step > self.logged_up_to.get(k, -1)}
        if fresh:
            self.logger.log_metrics(fresh, step)

    def close(self) -> None:
        """Deliver what is queued without a final evaluation (a run stopped on purpose)."""
        if self.logger is not None:
            self.logger.close(status=None)

    def log_samples(self, state: WorkerState) -> None:
        """A few samples as a text artifact, drawn with the EMA weights at the fewest eval steps."""
        job, step = state.job, state.counters.step
        if self.logger is None or job.tracking.log_samples <= 0 or not backbone_info(job.model.backbone).generates:
            return
        steps = min(job.eval.sample_steps)
        state.model.eval()
        with state.ema.applied(state.model):
            tokens = generate(state.model, state.process.xdlm, state.process.schedule, job.tracking.log_samples,
                              job.data.seq_len, steps, job.eval.sampler, job.eval.top_p, seed=step,
                              device=state.device)
        texts = [state.data.tokenizer.decode(row.tolist()) for row in tokens]
        body = f"# step {step}, {steps} sampler steps, k = {job.diffusion.k}\n\n" + "\n\n-----\n\n".join(texts)
        self.logger.log_text(body, f"samples/step_{step:08d}.txt")

    def finish(self, state: WorkerState) -> dict[str, float]:
        """End-of-training evaluation (rank 0): zero-shot NELBO on the eval sets and generation
        quality at each ``eval.sample_steps``; then deliver everything."""
        if self.logger is None:
            return {}
        metrics = final_evaluation(state)
        self.logger.log_metrics(metrics, state.job.train.steps)
        self.logger.log_dict(metrics, "final_metrics.json")
        self.logger.close(status=None)  # the driver ends the run
        return metrics


def logged_steps(tracking_uri: str, run_id: str) -> dict[str, int]:
    """{metric: last step MLflow has} for a run that is resumed; {} for a new run, or when the
    tracker cannot tell (then a replayed step may be logged twice: better than not at all)."""
    try:
        client = make_client(tracking_uri)
        keys = client.get_run(run_id).data.metrics
        return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}
    except Exception:
        return {}


def final_evaluation(state: WorkerState) -> dict[str, float]:
    """The suite of ``xdlm eval`` (without the validation split, which every evaluation during
    training already logged), with the EMA weights."""
    job, data, model = state.job, state.data, state.model
    metrics = {metric_names.UNIGRAM_PPL: float(data.unigram_baseline().perplexity)}
    model.eval()
    with state.ema.applied(model):
        if job.eval.zero_shot:
            metrics.update(likelihood_metrics(state.objective, model, data, list(data.eval_sets),
                                              job.train.micro_batch, state.device, job.diffusion.t_min,
                                              job.train.eval_batches))
        if backbone_info(job.model.backbone).generates:
            scorer = load_evaluator(job.eval.evaluator, data.tokenizer, state.device)
            metrics.update(generation_metrics(model, state.process, job.eval.sampler, job.eval.top_p,
                                              job.data.seq_len, list(job.eval.sample_steps),
                                              job.eval.num_samples, scorer, state.device))
        # a source with a known law (markov): exact gaps and sample NLLs, the oracle's beside them
        metrics.update(synthetic_metrics(job, model if backbone_info(job.model.backbone).generates else None,
                                         data, state.process, state.device, job.train.eval_batches))
    return metrics
