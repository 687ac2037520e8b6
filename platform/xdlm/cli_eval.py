"""``xdlm eval-code RUN_OR_CHECKPOINT --bench mbpp|humaneval``: pass@1 of a trained run on code.

The run's newest complete checkpoint (or the checkpoint directory given) is loaded as ``xdlm
sample`` loads it (EMA weights, the job's tokenizer and process); the LLaDA-style sampler draws
each answer at ``--steps`` network calls with the run's k (``xdlm.eval.code.generate``); every
candidate runs in the sandbox (``xdlm.eval.code``).  pass@1, the outcome counts and the table of
every problem's outcome go to the run's own MLflow run at the checkpoint's step, or to a new run
(tagged with the checkpoint) when a checkpoint directory or an untracked run is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from xdlm.errors import UserError

log = logging.getLogger(__name__)

BENCHES = ("mbpp", "humaneval")
EVAL_RUN_TAG = "xdlm.eval_code.checkpoint"


@dataclass
class CodeEvalResult:
    report: object  # xdlm.eval.code.harness.CodeEvalReport
    tracking_uri: str | None
    run_id: str | None
    step: int


def add_eval_code_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-code", help="pass@1 of a run on MBPP / HumanEval with the LLaDA-style sampler "
                                         "(docs/code-eval.md)")
    p.add_argument("run", help="a run name (under --storage-path), a run directory or a checkpoint directory")
    p.add_argument("--bench", required=True, choices=BENCHES)
    p.add_argument("--variant", default="full", help="mbpp: full or sanitized (hub problems only)")
    p.add_argument("--problems", help="a local .json/.jsonl file of problems in the benchmark's schema "
                                      "(default: the published set, which needs a network or a cached copy)")
    p.add_argument("--steps", type=int, default=32, help="sampler steps (network calls) per answer")
    p.add_argument("--samples", type=int, default=1, help="answers per problem")
    p.add_argument("--limit", type=int, help="evaluate the first N problems only")
    p.add_argument("--gen-length", type=int, default=256, help="answer length in tokens")
    p.add_argument("--block-length", type=int, help="tokens per block (default: the whole answer)")
    p.add_argument("--temperature", type=float, default=0.0, help="Gumbel-max temperature; 0 is greedy")
    p.add_argument("--workers", type=int, default=2, help="candidates run at once in the sandbox")
    p.add_argument("--device", default="cpu")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--no-log", action="store_true", help="print only; log nothing to MLflow")
    p.set_defaults(func=_eval_code)


def _eval_code(args: argparse.Namespace) -> int:
    result = evaluate_code(
        args.run, args.bench, variant=args.variant, problems_file=args.problems, steps=args.steps,
        samples=args.samples, limit=args.limit, gen_length=args.gen_length, block_length=args.block_length,
        temperature=args.temperature, workers=args.workers, device=args.device, storage_path=args.storage_path,
        log_to_mlflow=not args.no_log)
    report = result.report
    print(f"{report.benchmark}: pass@1 = {report.pass_at_1:.4f} over {len(report.outcomes)} candidate(s) "
          f"at {report.steps} steps (generate {report.generate_s:.1f} s, execute {report.execute_s:.1f} s)")
    for category, count in report.counts.items():
        print(f"  {category:14s} {count}")
    if result.run_id:
        print(f"logged to MLflow run {result.run_id} at {result.tracking_uri} (step {result.step}): "
              f"{', '.join(sorted(report.metrics()))} and the table {report.table_name}")
    return 0


def _check_options(steps: int, samples: int, limit: int | None, gen_length: int, block_length: int | None,
                   temperature: float, workers: int) -> None:
    for name, value in (("--steps", steps), ("--samples", samples), ("--gen-length", gen_length),
                        ("--workers", workers)):
        if value < 1:
            raise UserError(f"{name}: must be >= 1, got {value}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit: must be >= 1, got {limit}")
    block = block_length or gen_length
    if block < 1 or gen_length % block:
        raise UserError(f"--block-length: must divide --gen-length {gen_length}, got {block}")
    if steps % (gen_length // block):
        raise UserError(f"--steps: must be a multiple of the number of blocks {gen_length // block} "
                        f"(--gen-length / --block-length), got {steps}")
    if not temperature >= 0:
        raise UserError(f"--temperature: must be >= 0, got {temperature}")


def evaluate_code(run: str, bench: str, *, variant: str = "full", problems_file: str | None = None,
                  steps: int = 32, samples: int = 1, limit: int | None = None, gen_length: int = 256,
                  block_length: int | None = None, temperature: float = 0.0, workers: int = 2,
                  device: str = "cpu", storage_path: str = "runs", log_to_mlflow: bool = True) -> CodeEvalResult:
    """Load, generate, execute, log: the body of ``xdlm eval-code``."""
    from xdlm.checkpoint import load_model_from_run
    from xdlm.eval.code.generate import llada_generator
    from xdlm.eval.code.harness import evaluate
    from xdlm.eval.code.problems import load_problems
    from xdlm.eval.code.prompts import STOP_WORDS
    from xdlm.eval.offline import resolve_run_dir
    from xdlm.models import backbone_info
    from xdlm.models.hf import HF_BACKBONE
    from xdlm.objective import build_process

    if bench not in BENCHES:
        raise UserError(f"--bench: {bench!r} is not one of {', '.join(BENCHES)}")
    _check_options(steps, samples, limit, gen_length, block_length, temperature, workers)
    problems = load_problems(bench, problems_file, variant=variant, limit=limit)  # before the model loads
    run_dir = resolve_run_dir(run, storage_path)
    model, job = load_model_from_run(run_dir, device)
    if not backbone_info(job.model.backbone).generates:
        raise UserError(f"eval-code: run {run!r} is a {job.model.backbone} model, which does not generate "
                        "through the diffusion sampler")
    model.eval()
    tokenizer = run_tokenizer(job)
    process = build_process(job, model.vocab_size, tokenizer.mask_id)
    max_length = None if job.model.backbone == HF_BACKBONE else job.model.max_seq_len
    generate = llada_generator(model, process.xdlm, tokenizer, stop_words=STOP_WORDS[bench],
                               gen_length=gen_length, block_length=block_length, temperature=temperature,
                               max_length=max_length, device=device)
    report = evaluate(problems, generate, steps=steps, samples=samples, workers=workers)
    step = checkpoint_step(run_dir)
    if not log_to_mlflow:
        return CodeEvalResult(report, None, None, step)
    from xdlm.eval.code.harness import log_report
    from xdlm.tracking.runs import make_client

    tracking_uri, run_id, created = _mlflow_run(run_dir, job, bench, steps)
    client = make_client(tracking_uri)
    try:
        log_report(client, run_id, report, step=step)
    finally:
        if created:  # a run of its own: it ends with the evaluation, FAILED if logging broke
            client.set_terminated(run_id, "FINISHED" if _logged(client, run_id, report) else "FAILED")
    return CodeEvalResult(report, tracking_uri, run_id, step)


def _logged(client, run_id: str, report) -> bool:
    return set(report.metrics()) <= set(client.get_run(run_id).data.metrics)


def run_tokenizer(job):
    """The tokenizer the run trained with, without building its token arrays (the sources of a
    large run may be streamed from the hub; only a ``bpe`` tokenizer not cached here reads them)."""
    from xdlm.data.sources import iter_documents, make_source
    from xdlm.data.tokenizers import bpe_training_bytes, load_tokenizer

    source = make_source(job.data.source, job.data)
    return load_tokenizer(job.data, lambda: iter_documents(source, "train", bpe_training_bytes(job.data)),
                          source.fingerprint())


def checkpoint_step(run_dir: Path) -> int:
    """The training step of the checkpoint evaluated (from its manifest: no weights read again)."""
    from xdlm.checkpoint import latest_checkpoint
    from xdlm.checkpoint.manifest import MANIFEST

    manifest = json.loads((latest_checkpoint(run_dir) / MANIFEST).read_text())
    return int(manifest.get("step", 0))


def _mlflow_run(run_dir: Path, job, bench: str, steps: int) -> tuple[str, str, bool]:
    """(tracking URI, run id, created): the run's own MLflow run, else a new one in the job's
    experiment tagged with the checkpoint."""
    from xdlm.checkpoint import RUN_RECORD, latest_checkpoint
    from xdlm.tracking.runs import start_run
    from xdlm.train.launch import default_tracking_uri

    record_path = run_dir / RUN_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("mlflow_run_id") and record.get("tracking_uri"):
            return record["tracking_uri"], record["mlflow_run_id"], False
    tracking_uri = default_tracking_uri(job)
    checkpoint = str(latest_checkpoint(run_dir).resolve())
    name = f"{job.name}-{bench}-{steps}steps-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = start_run(tracking_uri, job.tracking.experiment, name, tags={EVAL_RUN_TAG: checkpoint,
                                                                          "xdlm.job": job.name})
    return tracking_uri, run_id, True
