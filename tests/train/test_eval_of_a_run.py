"""``xdlm eval`` and ``xdlm sample`` on a run trained here: the same quantity has the same name
as in training, and the evaluation lands on the run's own MLflow charts (issue 8: training
logged ``zeroshot/{set}/nelbo`` and ``val/unigram_ppl`` while ``xdlm eval`` printed
``{set}/nelbo`` and ``validation/unigram_ppl``)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from xdlm.cli import main
from xdlm.eval.offline import evaluate_run, sample_run
from xdlm.train.launch import run_training

pytestmark = pytest.mark.slow


def test_a_run_evaluated_again_lands_on_its_training_charts(ray_session, small_job, capsys):
    job = small_job("data.eval_sets=[stdlib-test]", "data.max_eval_bytes=20000", name="evaluated")
    outcome = run_training(job)
    trained = set(outcome.metrics)
    storage = job.cluster.storage_path

    metrics = evaluate_run("evaluated", max_batches=2, storage_path=storage)
    assert {"val/nelbo", "val/ppl", "val/unigram_ppl", "zeroshot/stdlib-test/nelbo", "gen/entropy_2steps"} <= set(metrics)
    assert set(metrics) <= trained  # nothing under a name training does not use

    assert main(["eval", "evaluated", "--max-batches", "2", "--storage-path", storage]) == 0
    assert "logged to MLflow run" in capsys.readouterr().out
    history = MlflowClient(outcome.tracking_uri).get_metric_history(outcome.run_id, "zeroshot/stdlib-test/nelbo")
    assert [m.step for m in history] == [6, 6]  # training's end-of-run value and the re-evaluation

    texts = sample_run("evaluated", num_samples=2, steps=2, prefix="def", storage_path=storage)
    assert len(texts) == 2 and all(t.startswith("[BOS]def") for t in texts)  # the prefix is held fixed
