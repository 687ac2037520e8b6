"""``xdlm eval-code`` on a randomly initialised tiny Hugging Face model (no download, no training):
pass@1 is 0, so the test checks that the pipeline ran end to end: every problem has an outcome,
the categories sum to the number of candidates, the metrics and the outcome table are in MLflow
(the run's own run at the checkpoint's step, or a new run for a bare checkpoint directory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from xdlm.checkpoint import RUN_RECORD, write_checkpoint
from xdlm.cli import main
from xdlm.cli_eval import EVAL_RUN_TAG
from xdlm.config import load_job, to_yaml
from xdlm.data.tokenizers import BPE_BOS, BPE_EOS, MASK_TOKEN, train_byte_level_bpe
from xdlm.eval.code.generate import cut_at_stop
from xdlm.eval.code.problems import load_problems
from xdlm.eval.code.sandbox import CATEGORIES
from xdlm.models import build_model
from xdlm.tracking.runs import make_client

DATA = Path(__file__).parent / "data"
TEXTS = ["def add(a, b):\n    return a + b\nassert add(1, 2) == 3\n", "You are an expert Python programmer\n"] * 40


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding one checkpoint (step 7) of a tiny random llama, and its tokenizer."""
    root = tmp_path_factory.mktemp("eval-code")
    PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(TEXTS, 320), bos_token=BPE_BOS,
                            eos_token=BPE_EOS, mask_token=MASK_TOKEN).save_pretrained(root / "tokenizer")
    job = load_job(None, [
        "name=codeeval", "data.tokenizer=hf", f"data.hf_tokenizer={root / 'tokenizer'}", "data.eval_sets=[]",
        "model.backbone=hf", "model.hf.config={model_type: llama, hidden_size: 16, intermediate_size: 32, "
        "num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 4096}",
        "diffusion.k=0.1", f"cluster.storage_path={root / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}", "tracking.experiment=codeeval"])
    torch.manual_seed(0)
    model = build_model(job.model, 320)
    run = root / "runs" / "codeeval"
    write_checkpoint(run / "checkpoint_000000", {"model": model.state_dict(), "ema": {"decay": 0.0},
                                                 "counters": {"step": 7}}, to_yaml(job))
    return run


def outcome_table(client, run_id: str, name: str) -> dict:
    path = client.download_artifacts(run_id, name)
    return json.loads(Path(path).read_text())


def test_eval_code_of_a_checkpoint_directory_logs_a_new_mlflow_run(run_dir, capsys):
    checkpoint = run_dir / "checkpoint_000000"
    assert main(["eval-code", str(checkpoint), "--bench", "mbpp", "--problems", str(DATA / "mbpp_tiny.jsonl"),
                 "--steps", "4", "--gen-length", "16", "--block-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "mbpp: pass@1 = 0.0000 over 4 candidate(s) at 4 steps" in out
    client = make_client(f"sqlite:///{run_dir.parent.parent / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("codeeval").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags[EVAL_RUN_TAG] == str(checkpoint.resolve())
    assert runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    counts = {c: metrics[f"code/mbpp/{c}_4steps"] for c in CATEGORIES}
    assert metrics["code/mbpp/pass_at_1_4steps"] == 0.0 and sum(counts.values()) == 4
    table = outcome_table(client, runs[0].info.run_id, "code/mbpp/outcomes_4steps.json")
    problems = load_problems("mbpp", str(DATA / "mbpp_tiny.jsonl"))
    rows = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))
    assert sorted(rows["task_id"]) == sorted(str(p.task_id) for p in problems)
    assert all(c in CATEGORIES and c != "passed" for c in rows["category"])


def test_eval_code_of_a_tracked_run_adds_to_its_own_mlflow_run_at_the_checkpoint_step(run_dir):
    uri = f"sqlite:///{run_dir.parent.parent / 'mlflow.db'}"
    client = make_client(uri)
    run_id = client.create_run(client.get_experiment_by_name("codeeval").experiment_id).info.run_id
    (run_dir / RUN_RECORD).write_text(json.dumps({"mlflow_run_id": run_id, "tracking_uri": uri}))
    try:
        assert main(["eval-code", "codeeval", "--storage-path", str(run_dir.parent), "--bench", "humaneval",
                     "--problems", str(DATA / "humaneval_tiny.jsonl"), "--steps", "2", "--samples", "2",
                     "--gen-length", "8"]) == 0
    finally:
        (run_dir / RUN_RECORD).unlink()
    history = client.get_metric_history(run_id, "code/humaneval/pass_at_1_2steps")
    assert [(m.step, m.value) for m in history] == [(7, 0.0)]
    total = sum(client.get_run(run_id).data.metrics[f"code/humaneval/{c}_2steps"] for c in CATEGORIES)
    assert total == 3 * 2  # 3 problems x 2 samples
    table = outcome_table(client, run_id, "code/humaneval/outcomes_2steps.json")
    assert len(table["data"]) == 6


@pytest.mark.parametrize("args,message", [
    (["--steps", "3", "--gen-length", "16", "--block-length", "8"], "--steps: must be a multiple of the number of blocks 2"),
    (["--block-length", "5", "--gen-length", "16"], "--block-length: must divide --gen-length 16"),
    (["--problems", "nope.jsonl"], "problems: nope.jsonl is not a file"),
])
def test_eval_code_options_are_checked_before_the_model_loads(run_dir, capsys, args, message):
    assert main(["eval-code", str(run_dir), "--bench", "mbpp", *args]) == 2
    assert message in capsys.readouterr().err


def test_completions_are_cut_after_the_first_stop_word():
    assert cut_at_stop(" 'x = 1' \n[DONE] \n\n more [DONE]", ("[DONE]",)) == " 'x = 1' \n[DONE]"
    assert cut_at_stop("no stop here", ("[DONE]",)) == "no stop here"
