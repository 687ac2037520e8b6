"""jobs/tiny_hf_xdlm.yaml end to end, the 8B recipe's path at toy scale: a tiny llama (random init
from a config) with a Hugging Face tokenizer, trained under Ray Train by 2 workers with DeepSpeed
ZeRO-2 on the CPU, resumed from its checkpoint for a few more steps, sampled with the LLaDA-style
sampler, code-evaluated on the tiny problems, all tracked in one MLflow run (sqlite in tmp_path).
Cut by overrides to stay fast: fewer steps and a shorter sequence than the job file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from xdlm.checkpoint import read_checkpoint
from xdlm.cli import main
from xdlm.config import load_job
from xdlm.data.sources import iter_documents, make_source
from xdlm.data.tokenizers import bpe_training_bytes, load_tokenizer
from xdlm.eval.code.sandbox import CATEGORIES
from xdlm.tracking.runs import make_client

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "eval" / "data"


def hf_tokenizer_of(job, directory: Path) -> Path:
    """The job's own BPE saved as a transformers tokenizer (what data.tokenizer: hf reads)."""
    source = make_source(job.data.source, job.data)
    bpe = load_tokenizer(job.data, lambda: iter_documents(source, "train", bpe_training_bytes(job.data)),
                         source.fingerprint())
    PreTrainedTokenizerFast(tokenizer_object=bpe.backend, bos_token=bpe.bos_token, eos_token=bpe.eos_token,
                            mask_token=bpe.mask_token).save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_tiny_hf_job_trains_resumes_samples_and_code_evaluates(ray_session, tmp_path, data_cache, capsys):
    from xdlm.train.launch import run_training

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [f"data.cache_dir={data_cache}", "data.max_train_bytes=150000", "data.seq_len=32",
              "model.max_seq_len=32", f"cluster.storage_path={tmp_path / 'runs'}", "cluster.cpus_per_worker=0.5",
              "cluster.max_failures=0", f"tracking.tracking_uri={uri}", "train.eval_every=6",
              "train.checkpoint_every=6", "train.log_every=2", "eval.sample_steps=[4]"]
    bpe_job = load_job(ROOT / "jobs" / "tiny_hf_xdlm.yaml", common)
    tokenizer = hf_tokenizer_of(bpe_job, tmp_path / "tokenizer")
    overrides = [*common, "data.tokenizer=hf", f"data.hf_tokenizer={tokenizer}"]

    times = {}
    start = time.monotonic()
    first = run_training(load_job(ROOT / "jobs" / "tiny_hf_xdlm.yaml", [*overrides, "train.steps=6"]))
    times["train"] = time.monotonic() - start
    assert read_checkpoint(first.checkpoint)["counters"]["step"] == 6
    start = time.monotonic()
    resumed = run_training(load_job(ROOT / "jobs" / "tiny_hf_xdlm.yaml", [*overrides, "train.steps=10"]),
                           resume=True)
    times["resume"] = time.monotonic() - start
    assert resumed.run_id == first.run_id and resumed.run_dir == first.run_dir
    state = read_checkpoint(resumed.checkpoint)
    assert state["counters"]["step"] == 10 and "net.lm_head.weight" in state["model"]

    client = make_client(uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    losses = client.get_metric_history(first.run_id, "train/loss")
    steps = sorted({m.step for m in losses})
    assert steps[0] <= 2 and steps[-1] == 10 and all(0 < m.value < 20 for m in losses)  # log V = 6.2 at init
    flops = {m.step: m.value for m in client.get_metric_history(first.run_id, "flops")}
    assert flops[10] > flops[steps[0]] > 0
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert "samples.json" in artifacts  # drawn with eval.sampler: llada

    start = time.monotonic()
    run_name = Path(first.run_dir).name
    assert main(["sample", run_name, "--storage-path", str(tmp_path / "runs"), "--steps", "4",
                 "--num-samples", "2", "--prefix", "def"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2 and "(4 steps)" in out
    times["sample"] = time.monotonic() - start

    start = time.monotonic()
    assert main(["eval-code", run_name, "--storage-path", str(tmp_path / "runs"), "--bench", "mbpp",
                 "--problems", str(DATA / "mbpp_tiny.jsonl"), "--steps", "4", "--gen-length", "16",
                 "--block-length", "8"]) == 0
    times["eval_code"] = time.monotonic() - start
    metrics = client.get_run(first.run_id).data.metrics
    assert sum(metrics[f"code/mbpp/{c}_4steps"] for c in CATEGORIES) == 4
    history = client.get_metric_history(first.run_id, "code/mbpp/pass_at_1_4steps")
    assert [m.step for m in history] == [10]  # the step of the checkpoint evaluated
    table = json.loads(Path(client.download_artifacts(first.run_id, "code/mbpp/outcomes_4steps.json")).read_text())
    assert len(table["data"]) == 4
    print("tiny_hf_xdlm timings (s):", {k: round(v, 1) for k, v in times.items()})
