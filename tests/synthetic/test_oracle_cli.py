"""``xdlm oracle`` end to end on a small source: table, JSON, PNG, HTML and one MLflow run."""

from __future__ import annotations

import json

from xdlm.cli import main
from xdlm.tracking.runs import make_client


def test_oracle_command(tmp_path, monkeypatch, capsys) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "oracle"
    code = main(["oracle", "data.seq_len=12", "data.markov.validation_sequences=64", "data.markov.order=1",
                 "--k", "0,1", "--steps", "1,4", "--num-samples", "32", "--repeats", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 0 |" in printed and "NLL S=4" in printed
    result = json.loads((out / "oracle.json").read_text())
    assert [row["k"] for row in result["rows"]] == [0.0, 1.0]
    for row in result["rows"]:
        assert abs(row["nelbo_gap"]) < 0.25  # tight up to Monte Carlo error at this small size
        assert row["true_nll"]["4"] < row["true_nll"]["1"]  # more steps, better samples
    assert (out / "oracle.png").stat().st_size > 1000 and (out / "oracle.html").is_file()
    runs = make_client(uri).search_runs([make_client(uri).get_experiment_by_name("xdlm").experiment_id])
    assert len(runs) == 1 and "val/nelbo_gap_oracle/k1" in runs[0].data.metrics


def test_oracle_command_refuses_a_text_source(capsys) -> None:
    assert main(["oracle", "data.source=stdlib", "--no-log"]) == 2
    assert "data" in capsys.readouterr().err
