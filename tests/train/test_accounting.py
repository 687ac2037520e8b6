"""Compute accounting and the MLflow run page without Ray: the FLOP formulas against a hand count
on built models, the params and tags a run opens with (real sqlite MLflow store), the training
layout of the experiment, the failure record of a run whose driver raised."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient

from xdlm.config import load_job
from xdlm.models import ModelConfig, build_model
from xdlm.models.accounting import flops_per_token, flops_with_embedding_per_token
from xdlm.train.state import Counters


def hand_count(model, seq_len: int) -> tuple[int, int]:
    """(flops/token without, with the head) counted on the built model, independently of
    ``models.accounting``: 6 per non-embedding parameter (every parameter outside the embedding
    and the head), attention's QK^T and AV as matmuls over the sequence, the head from its
    nn.Linear shape."""
    n = sum(p.numel() for name, p in model.named_parameters()
            if not name.startswith(("embedding.", "output_head.")))
    attention = 0
    for block in model.blocks:
        d = block.attn.qkv.in_features  # queries and keys of width D over all heads
        # per token: a dot product with each of the L keys (L * D multiply-adds), then a sum of
        # the L values weighted (L * D multiply-adds); 2 FLOPs each, forward + 2x backward
        attention += 3 * (2 * seq_len * d + 2 * seq_len * d)
    head = model.output_head
    assert isinstance(head, torch.nn.Linear)
    head_flops = 3 * 2 * head.in_features * head.out_features  # one D x V matmul per token
    return 6 * n + attention, 6 * n + attention + head_flops


@pytest.mark.parametrize("cfg, seq_len, vocab", [
    (ModelConfig(size="tiny"), 128, 4096),
    (ModelConfig(size="custom", n_layers=2, hidden=64, n_heads=2, cond_dim=32), 32, 512),
])
def test_flop_formulas_match_a_hand_count_of_the_built_model(cfg, seq_len, vocab):
    model = build_model(cfg, vocab)
    without, with_head = hand_count(model, seq_len)
    assert flops_per_token(cfg, seq_len) == without
    assert flops_with_embedding_per_token(cfg, seq_len, vocab) == with_head


def test_smoothed_loss_is_the_bias_corrected_ema():
    counters, beta, values = Counters(), 0.9, [4.0, 3.0, 2.5, 2.0]
    smoothed = [counters.smooth_loss(v, beta) for v in values]
    assert smoothed[0] == pytest.approx(4.0)  # bias-corrected: the first point is itself
    n = len(values)
    weights = [beta ** (n - 1 - i) * (1 - beta) for i in range(n)]
    assert smoothed[-1] == pytest.approx(sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights))
    assert Counters().smooth_loss(3.0, 0.0) == 3.0


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_a_run_opens_with_resolved_dims_user_source_description_and_training_layout(tmp_path, tracking_uri):
    from xdlm.train.launch import open_mlflow_run

    job = load_job(None, ["name=preset", "model.size=tiny", f"cluster.storage_path={tmp_path / 'runs'}",
                          "tracking.tags={study: iso1}"])
    run_id, experiment_id, logger = open_mlflow_run(job, tracking_uri, None, extra_tags={"xdlm.sweep": "sw"})
    assert logger.close("FINISHED")
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    params, tags = run.data.params, run.data.tags
    assert (params["model.n_layers"], params["model.hidden"], params["model.n_heads"]) == ("8", "256", "8")
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"]
    note = tags["mlflow.note.content"]
    assert "k = 0.1" in note and "`loglinear`" in note and "8 layers x 256" in note and "sweep `sw`" in note
    assert "`study` = `iso1`" in note
    assert not any(key.startswith("params/") or key == "step" for key in run.data.metrics)
    experiment = client.get_experiment(experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_run_page_url_opens_the_training_layout():
    from xdlm.tracking.runs import ui_url

    assert ui_url("sqlite:////x/mlflow.db", "3", "abc") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert ui_url("http://mlflow.lan:5000/", "3") == "http://mlflow.lan:5000/#/experiments/3/runs?workflowType=machine_learning"


def test_an_exception_in_the_driver_ends_the_run_failed_with_tag_traceback_and_log(tmp_path, tracking_uri):
    from xdlm.tracking.driver_log import DriverLog
    from xdlm.tracking.logger import RunLogger
    from xdlm.tracking.runs import start_run
    from xdlm.train.launch import end_after_error

    run_id = start_run(tracking_uri, "e", "r")
    logger = RunLogger(tracking_uri, run_id, spill_dir=tmp_path / "spill", install_handlers=False)
    driver_log = DriverLog(tmp_path / "logs" / "driver_x.log")
    with driver_log:
        print("the driver says hello")
        try:
            json.loads("{not json")
        except ValueError as err:
            caught = err
    end_after_error(logger, caught, None, driver_log)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["xdlm.failure"].startswith("JSONDecodeError: Expecting property name")
    with open(client.download_artifacts(run_id, "failure/traceback.txt", str(tmp_path))) as f:
        assert "json.loads" in f.read()
    with open(client.download_artifacts(run_id, "logs/driver_x.log", str(tmp_path))) as f:
        assert "the driver says hello" in f.read()


def test_description_at_the_end_has_tokens_and_perplexity_against_the_baseline(tmp_path):
    from xdlm.train.run_page import description

    job = load_job(None, ["model.size=tiny", f"cluster.storage_path={tmp_path}"])
    note = description(job, {"tokens": 1_024_000, "flops": 2.5e13, "flops_with_embedding": 4.1e13,
                             "val/ppl": 402.04, "val/unigram_ppl": 693.2}, "#/experiments/1/runs/p")
    assert "1.02 M tokens" in note and "**402.0**" in note and "unigram baseline 693.2" in note
    assert "[parent run](#/experiments/1/runs/p)" in note
