"""What a training worker sends to MLflow: rank 0 logs, every other rank is silent.

The driver owns the MLflow run (creates it, logs the config, ends it FINISHED/FAILED/KILLED);
rank 0 only appends metrics and artifacts through the non-blocking ``RunLogger``, so a slow or
dead tracking server never stalls or kills training.
"""

from __future__ import annotations

from xdlm.config import JobConfig
from xdlm.eval.evaluators import load_evaluator
from xdlm.eval.generation import generate, generative_perplexity, unigram_entropy
from xdlm.eval.likelihood import nelbo_sums, perplexity


class WorkerTracker:
    def __init__(self, logger=None) -> None:
        self.logger = logger

    @classmethod
    def for_rank(cls, rank: int, loop_config: dict, job: JobConfig, params: dict, data_summary: dict) -> WorkerTracker:
        run_id, uri = loop_config.get("run_id"), loop_config.get("tracking_uri")
        if rank != 0 or not run_id or not uri:
            return cls(None)
        from xdlm.tracking.logger import RunLogger

        spill_dir = loop_config.get("spill_dir")
        logger = RunLogger(uri, run_id, spill_dir=spill_dir, install_handlers=False)
        logger.log_metrics({"params/total": params["total"], "params/non_embedding": params["non_embedding"]}, 0)
        logger.log_dict(data_summary, "data_summary.json")
        return cls(logger)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step)

    def log_samples(self, model, ema, process, schedule, tokenizer, job: JobConfig, step: int, device) -> None:
        """A few samples as a text artifact, drawn with the EMA weights at the fewest eval steps."""
        if self.logger is None or job.tracking.log_samples <= 0 or job.model.backbone == "causal_dit":
            return
        steps = min(job.eval.sample_steps)
        model.eval()
        with ema.applied(model):
            tokens = generate(model, process, schedule, job.tracking.log_samples, job.data.seq_len, steps,
                              job.eval.sampler, job.eval.top_p, seed=step, device=device)
        texts = [tokenizer.decode(row.tolist()) for row in tokens]
        body = f"# step {step}, {steps} sampler steps, k = {process.k}\n\n" + "\n\n-----\n\n".join(texts)
        self.logger.log_text(body, f"samples/step_{step:08d}.txt")

    def finish(self, model, ema, objective, process, schedule, data, job: JobConfig, device) -> dict[str, float]:
        """End-of-training evaluation (rank 0): zero-shot NELBO on the eval sets and generation
        quality at each ``eval.sample_steps``; then deliver everything."""
        if self.logger is None:
            return {}
        metrics = final_evaluation(model, ema, objective, process, schedule, data, job, device)
        self.logger.log_metrics(metrics, job.train.steps)
        self.logger.log_dict(metrics, "final_metrics.json")
        self.logger.close(status=None)  # the driver ends the run
        return metrics


def final_evaluation(model, ema, objective, process, schedule, data, job: JobConfig, device) -> dict[str, float]:
    metrics: dict[str, float] = {}
    baseline = data.unigram_baseline()
    metrics["val/unigram_ppl"] = float(baseline.perplexity)
    model.eval()
    with ema.applied(model):
        if job.eval.zero_shot:
            for name in data.eval_sets:
                batches = data.eval_batches(job.train.micro_batch, name=name)
                total, count = nelbo_sums(objective, model, batches, device, job.diffusion.t_min,
                                          max_batches=job.train.eval_batches)
                metrics[f"zeroshot/{name}/nelbo"] = total / max(count, 1)
                metrics[f"zeroshot/{name}/ppl"] = perplexity(total / max(count, 1))
        if job.model.backbone == "causal_dit":
            return metrics
        evaluator = load_evaluator(job.eval.evaluator, data.tokenizer, device)
        for steps in job.eval.sample_steps:
            tokens = generate(model, process, schedule, job.eval.num_samples, job.data.seq_len, steps,
                              job.eval.sampler, job.eval.top_p, seed=steps, device=device)
            metrics[f"gen/entropy_{steps}steps"] = unigram_entropy(tokens)
            if evaluator is not None:
                metrics[f"gen/ppl_{steps}steps"] = generative_perplexity(evaluator, tokens.to(device))
    return metrics
