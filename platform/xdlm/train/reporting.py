"""What a training worker sends to MLflow: rank 0 logs, every other rank is silent.

The driver owns the MLflow run (creates it, logs the config, ends it FINISHED/FAILED/KILLED);
rank 0 only appends metrics and artifacts through the non-blocking ``RunLogger``, so a slow or
dead tracking server never stalls or kills training. Rank 0 logs:

- params only a worker knows: the parameter counts of the built model (``params.total``,
  ``params.non_embedding``) and the hardware (``system.device_type``, ``system.device_count``);
- the training and evaluation data as MLflow datasets (source, tokenizer hash, token counts);
- system metrics (MLflow's monitor) sampled where the training runs: a driver submitting over
  ``ray://`` may sit on a laptop or a head node without the GPUs, rank 0 drives one of them;
- metrics, and samples as rows of the MLflow table ``samples.json``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from xdlm.eval import metric_names
from xdlm.eval.evaluators import load_evaluator
from xdlm.eval.generation import generate, generative_perplexity, mean_sample_entropy
from xdlm.eval.suite import likelihood_metrics
from xdlm.eval.synthetic import synthetic_metrics
from xdlm.models import backbone_info
from xdlm.models.accounting import count_parameters
from xdlm.tracking.logger import RunLogger
from xdlm.tracking.records import dataset_input
from xdlm.tracking.runs import make_client
from xdlm.tracking.system_metrics import SystemMetrics
from xdlm.train.state import WorkerState


class WorkerTracker:
    """Rank 0's MLflow logger.  After a restart the steps between the checkpoint and the crash
    are replayed (bit for bit); ``logged_up_to`` holds, per metric, the last step MLflow already
    has, and those steps are not logged twice."""

    def __init__(self, logger: RunLogger | None = None, logged_up_to: dict[str, int] | None = None,
                 system: SystemMetrics | None = None) -> None:
        self.logger = logger
        self.logged_up_to = logged_up_to or {}
        self.system = system

    @classmethod
    def for_rank(cls, state: WorkerState, loop_config: dict) -> WorkerTracker:
        run_id, uri = loop_config.get("run_id"), loop_config.get("tracking_uri")
        if state.rank != 0 or not run_id or not uri:
            return cls(None)
        logger = RunLogger(uri, run_id, spill_dir=loop_config.get("spill_dir"), install_handlers=False)
        system = SystemMetrics(logger, uri, run_id, state.job.tracking.system_metrics_interval_s)
        tracker = cls(logger, logged_steps(uri, run_id), system)
        logger.log_params(worker_params(state))
        summary = state.data.summary()
        logger.log_dict(summary, "data_summary.json")
        logger.log_inputs(dataset_inputs(state.job.data.source, summary))
        system.start()
        return tracker

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is None:
            return
        fresh = {k: v for k, v in metrics.items() if step > self.logged_up_to.get(k, -1)}
        if fresh:
            self.logger.log_metrics(fresh, step)

    def note_lost_checkpoint(self, step: int, problem: str) -> None:
        """Say loudly that the checkpoint of ``step`` did not land: resume would start from an
        older one (the run goes on; the next checkpoint may land)."""
        print(f"xdlm: WARNING: the checkpoint of step {step} is {problem}; a resume would start from "
              "the previous complete checkpoint", flush=True)
        if self.logger is not None:
            self.logger.set_tag("xdlm.checkpoint_lost", f"step {step}: {problem}"[:5000])

    def close(self) -> None:
        """Deliver what is queued without a final evaluation (a run stopped on purpose)."""
        if self.logger is not None:
            if self.system is not None:
                self.system.stop()
            self.logger.close(status=None)

    def log_samples(self, state: WorkerState) -> None:
        """``tracking.log_samples`` samples, drawn with the EMA weights at the fewest eval steps,
        appended to the samples table."""
        job, step = state.job, state.counters.step
        if self.logger is None or job.tracking.log_samples <= 0 or not backbone_info(job.model.backbone).generates:
            return
        if step <= self.logged_up_to.get(metric_names.nelbo(), -1):
            return  # a replayed evaluation: its samples are in the table already
        steps = min(job.eval.sample_steps)
        state.model.eval()
        with state.ema.applied(state.model):
            tokens = generate(state.model, state.process.xdlm, state.process.schedule, job.tracking.log_samples,
                              job.data.seq_len, steps, job.eval.sampler, job.eval.top_p, seed=step,
                              device=state.device)
        texts = [state.data.tokenizer.decode(row.tolist()) for row in tokens]
        self.logger.log_table(sample_rows(step, steps, job.diffusion.k, texts), metric_names.SAMPLES_TABLE)

    def finish(self, state: WorkerState) -> dict[str, float]:
        """End-of-training evaluation (rank 0): zero-shot NELBO on the eval sets and generation
        quality at each ``eval.sample_steps`` (those samples join the table); then deliver
        everything."""
        if self.logger is None:
            return {}
        metrics, samples = final_evaluation(state)
        step = state.counters.step
        self.logger.log_metrics(metrics, step)
        self.logger.log_dict(metrics, "final_metrics.json")
        for steps, texts in samples.items():
            self.logger.log_table(sample_rows(step, steps, state.job.diffusion.k, texts), metric_names.SAMPLES_TABLE)
        self.close()  # the driver ends the run
        return metrics


def sample_rows(step: int, sampler_steps: int, k: float, texts: list[str]) -> dict[str, list]:
    """Rows of the samples table, as ``{column: [values]}`` (``metric_names.SAMPLE_COLUMNS``)."""
    n = len(texts)
    return {"step": [int(step)] * n, "sampler_steps": [int(sampler_steps)] * n, "k": [float(k)] * n,
            "index": list(range(n)), "text": list(texts)}


def worker_params(state: WorkerState) -> dict[str, Any]:
    """Params only a worker knows: the built model's parameter counts and the hardware (each
    Ray Train worker drives one device: a GPU with cluster.use_gpu, else its CPU share)."""
    counts = count_parameters(state.model)
    return {"params.total": counts["total"], "params.non_embedding": counts["non_embedding"],
            "system.device_type": state.device.type, "system.device_count": state.world}


def dataset_inputs(source: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The training split (context ``training``), the validation split and each zero-shot set
    (context ``evaluation``) as MLflow dataset inputs: named ``<source>/<split>``, with the
    tokenizer hash and token counts in the profile; the digest fingerprints those facts."""
    parts = [("training", summary["train"]), ("evaluation", summary["validation"])]
    parts += [("evaluation", part) for part in summary.get("eval_sets", {}).values()]
    out = []
    for context, part in parts:
        profile = {"tokenizer_hash": summary["tokenizer"], "tokenizer": summary.get("tokenizer_origin"),
                   "vocab_size": summary["vocab_size"], "seq_len": summary["seq_len"],
                   "num_tokens": part["num_tokens"], "num_sequences": part["num_blocks"],
                   "num_documents": part.get("num_documents"), "num_text_bytes": part.get("num_text_bytes")}
        name = f"{part['source']}/{part['split']}"
        digest = hashlib.sha256(json.dumps([name, profile], sort_keys=True, default=str).encode()).hexdigest()[:16]
        source = json.dumps({"uri": str(part["path"]), "source": part["source"], "split": part["split"]})
        out.append(dataset_input(name, digest, source, "local", profile, context))
    return out


def logged_steps(tracking_uri: str, run_id: str) -> dict[str, int]:
    """{metric: last step MLflow has} for a run that is resumed; {} for a new run, or when the
    tracker cannot tell (then a replayed step may be logged twice: better than not at all)."""
    try:
        client = make_client(tracking_uri)
        keys = client.get_run(run_id).data.metrics
        return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}
    except Exception:
        return {}


def final_evaluation(state: WorkerState) -> tuple[dict[str, float], dict[int, list[str]]]:
    """The suite of ``xdlm eval`` (without the validation split, which every evaluation during
    training already logged), with the EMA weights; and the sample texts it drew at each
    ``eval.sample_steps`` count (the same samples, same seeds, as ``xdlm eval`` draws)."""
    job, data, model = state.job, state.data, state.model
    metrics = {metric_names.UNIGRAM_PPL: float(data.unigram_baseline().perplexity)}
    samples: dict[int, list[str]] = {}
    model.eval()
    with state.ema.applied(model):
        if job.eval.zero_shot:
            metrics.update(likelihood_metrics(state.objective, model, data, list(data.eval_sets),
                                              job.train.micro_batch, state.device, job.diffusion.t_min,
                                              job.train.eval_batches))
        if backbone_info(job.model.backbone).generates:
            scorer = load_evaluator(job.eval.evaluator, data.tokenizer, state.device)
            # as eval.suite.generation_metrics, keeping the texts
            for steps in job.eval.sample_steps:
                tokens = generate(model, state.process.xdlm, state.process.schedule, job.eval.num_samples,
                                  job.data.seq_len, steps, job.eval.sampler, job.eval.top_p, seed=steps,
                                  device=state.device)
                metrics[metric_names.sample_entropy(steps)] = mean_sample_entropy(tokens)
                if scorer is not None:
                    metrics[metric_names.generative_ppl(steps)] = generative_perplexity(scorer, tokens.to(state.device))
                samples[int(steps)] = [data.tokenizer.decode(row.tolist()) for row in tokens]
        # a source with a known law (markov): exact gaps and sample NLLs, the oracle's beside them
        metrics.update(synthetic_metrics(job, model if backbone_info(job.model.backbone).generates else None,
                                         data, state.process, state.device, job.train.eval_batches))
    return metrics, samples
