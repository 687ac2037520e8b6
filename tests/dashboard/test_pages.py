"""The dashboard without a browser: the trajectory recorder against the sampler's own states and
the kernel's known behaviour at k = 0 and k = 1, the data functions against planted MLflow
records (a real sqlite store), the figures as files and artifacts, the pages over HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from tests.conftest import free_port

from xdlm.dashboard import data, figures, links
from xdlm.dashboard.serve import check_port_free, exposure_warning
from xdlm.diffusion import XDLM, sampling
from xdlm.diffusion.schedules import get as get_schedule
from xdlm.errors import UserError
from xdlm.eval.generation import trajectory_payload

V, MASK, L = 12, 11, 10


def random_denoiser(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(V, V, generator=gen) * 2

    def denoise(z, t):
        return table[z]  # logits depend on each position's current token: a stand-in network

    return denoise


def record(k: float, steps: int = 6, rows: int = 3, seed: int = 1):
    sampler = sampling.get("ancestral", XDLM(V, MASK, k), get_schedule("loglinear"), steps=steps)
    recorder = sampling.TrajectoryRecorder(rows)
    states = list(sampler.iterate(random_denoiser(), (4, L), generator=torch.Generator().manual_seed(seed),
                                  recorder=recorder))
    return sampler, recorder, states


def test_transitions_name_each_change():
    before = torch.tensor([[MASK, MASK, 3, 3, 3, 4]])
    after = torch.tensor([[MASK, 5, 3, 7, MASK, 4]])
    names = [sampling.EVENTS[c] for c in sampling.transitions(before, after, MASK)[0]]
    assert names == ["kept", "unmasked", "kept", "changed", "renoised", "kept"]


@pytest.mark.parametrize("k", [0.0, 0.5, 1.0])
def test_recorder_keeps_every_state_and_does_not_change_the_draws(k):
    sampler, recorder, states = record(k)
    assert len(recorder.tokens) == 7 and len(recorder.events) == 6 and recorder.mask_id == MASK
    for j, state in enumerate(states, start=1):
        assert torch.equal(recorder.tokens[j], state.z[:3])  # the rows the recorder kept
        assert torch.equal(recorder.events[j - 1], sampling.transitions(recorder.tokens[j - 1], recorder.tokens[j], MASK))
    plain = sampler.sample(random_denoiser(), (4, L), generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, states[-1].z)
    assert recorder.times[0] == 1.0 and recorder.times[-1] == 0.0


def test_mdlm_only_unmasks_and_uniform_noise_corrects():
    """k = 0 (absorbing): the prior draw is all [MASK] and a token once unmasked is final, so no
    step changes or re-noises one; k = 1 (uniform; [MASK] is one of the N states): tokens change."""
    seen = {0.0: set(), 1.0: set()}
    for seed in range(5):
        for k in seen:
            _, recorder, _ = record(k, steps=8, seed=seed)
            seen[k] |= {sampling.EVENTS[int(c)] for e in recorder.events for c in e.flatten()}
            if k == 0.0:
                assert bool((recorder.tokens[0] == MASK).all()) and not bool((recorder.tokens[-1] == MASK).any())
    assert seen[0.0] == {"kept", "unmasked"}
    assert "changed" in seen[1.0]


def test_trajectory_payload_round_trip_and_frames(tmp_path):
    _, recorder, _ = record(0.5, steps=5, rows=2)
    payload = trajectory_payload(recorder, lambda i: f"<{i}>", run="r", k=0.5, steps=5)
    assert payload["format"] == "xdlm.trajectory/1" and payload["k"] == 0.5 and payload["mask_id"] == MASK
    assert [sum(c) for c in payload["counts"]] == [2 * L] * 5  # every position of both rows, each step
    assert payload["vocab"][str(MASK)] == "[MASK]"
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "art")))
    (tmp_path / "t.json").write_text(json.dumps(payload))
    client.log_artifact(run.info.run_id, str(tmp_path / "t.json"), "trajectories")
    loaded = data.load_trajectory(client, run.info.run_id, "trajectories/t.json")
    assert data.trajectory_files(client, run.info.run_id) == ["trajectories/t.json"]
    frames = data.trajectory_frames(loaded, sample=1)
    assert len(frames) == 6 and all(len(f) == L for f in frames)
    assert {t["event"] for t in frames[0]} == {"kept"}
    last = recorder.tokens[-1][1].tolist()
    assert [t["text"] for t in frames[-1]] == [("[MASK]" if i == MASK else f"<{i}>") for i in last]
    assert [t["event"] for t in frames[3]] == [sampling.EVENTS[int(c)] for c in recorder.events[2][1]]
    with pytest.raises(ValueError, match="not a trajectory"):
        data.load_trajectory(client, run.info.run_id, "../secrets.json")


def test_smoothing_is_a_debiased_moving_average():
    ys = [3.0, 1.0, 4.0, 1.0, 5.0]
    assert data.smooth(ys, 0.0) == ys
    assert data.smooth([2.5] * 4, 0.9) == pytest.approx([2.5] * 4)  # a constant stays put
    w = 0.6
    assert data.smooth(ys, w)[:2] == pytest.approx([3.0, (w * 3.0 + 1.0) / (1 + w)])
    with pytest.raises(ValueError):
        data.smooth(ys, 1.0)


def test_counters_are_read_at_the_metric_steps():
    assert data.interpolate([2, 3, 4, 9], [2, 4, 6], [20.0, 40.0, 60.0]) == [20.0, 30.0, 40.0, None]
    assert data.interpolate([1], [], []) == [None]


@pytest.fixture
def planted(tmp_path):
    """Three training runs and a sweep parent, written with the platform's tags and params."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("xdlm", artifact_location=str(tmp_path / "mlartifacts"))
    runs = {}
    for name, k, schedule, status in (("a", "0.0", "loglinear", "FINISHED"), ("b", "1.0", "loglinear", "FINISHED"),
                                      ("c", "0.5", "cosine", "RUNNING")):
        run = client.create_run(exp, run_name=name, tags={"xdlm.k": k, "xdlm.schedule": schedule,
                                                          "xdlm.model_size": "tiny"})
        rid = run.info.run_id
        client.log_param(rid, "params.total", "1234567")
        now = int(time.time() * 1000)
        metrics = [Metric("tokens", 100.0 * s, now, s) for s in range(1, 7)]
        metrics += [Metric("flops", 1e9 * s, now, s) for s in (2, 6)]
        metrics += [Metric("val/ppl", 500.0 - 10 * s - (k == "1.0"), now, s) for s in (2, 4, 6)]
        metrics += [Metric("val/unigram_ppl", 700.0, now, 6)]
        client.log_batch(rid, metrics=metrics)
        if status == "FINISHED":
            client.set_terminated(rid)
        runs[name] = rid
    parent = client.create_run(exp, run_name="sw", tags={"xdlm.kind": "sweep", "xdlm.sweep": "sw"})
    client.set_terminated(parent.info.run_id)
    return uri, client, runs


def test_runs_table_filters_and_series(planted):
    uri, client, runs = planted
    rows = data.runs_table(client)
    by_name = {r.name: r for r in rows}
    assert set(by_name) == {"a", "b", "c", "sw"}
    a = by_name["a"]
    assert (a.k, a.schedule, a.size, a.params, a.tokens, a.val_ppl, a.unigram_ppl, a.kind) == (
        "0.0", "loglinear", "tiny", 1234567.0, 600.0, 440.0, 700.0, "train")
    assert by_name["sw"].kind == "sweep" and by_name["c"].live and not a.live
    assert [r.name for r in data.filter_rows(rows, schedule="loglinear", status="FINISHED")] == ["b", "a"]
    assert [r.name for r in data.filter_rows(rows, k="0.5")] == ["c"]
    options = data.filter_options(rows)
    assert options["k"] == ["0.0", "0.5", "1.0"] and options["status"] == ["FINISHED", "RUNNING"]
    with pytest.raises(ValueError, match="unknown filter"):
        data.filter_rows(rows, colour="red")

    by_tokens = data.metric_series(client, runs["a"], "val/ppl", "tokens")
    assert by_tokens.x == [200.0, 400.0, 600.0] and by_tokens.y == [480.0, 460.0, 440.0]
    by_flops = data.metric_series(client, runs["a"], "val/ppl", "flops")  # flops only at steps 2 and 6
    assert by_flops.x == pytest.approx([2e9, 4e9, 6e9])
    assert data.metric_series(client, runs["a"], "val/ppl", "step", weight=0.5).smoothed == pytest.approx(
        data.smooth([480.0, 460.0, 440.0], 0.5))
    assert data.metric_keys(rows)[:1] == ["val/ppl"] and "flops" in data.metric_keys(rows)


def test_json_documents_are_laid_out_as_tables():
    doc = {"settings": {"metric": "val/nelbo", "bootstrap": 200},
           "fits": [{"k": 0.1, "numbers": {"l_opt/exponent": {"value": -0.05, "lo": -0.07, "hi": -0.03},
                                           "surface/E": {"value": 1.2, "lo": 1.1, "hi": 1.3}}}],
           "crossovers": [{"axis": "compute", "at": 3e19}, {"axis": "tokens", "inside": True}]}
    top = data.layout_json(doc)
    settings, fits, crossovers = top.children
    assert settings.children[0].pairs == [("metric", "val/nelbo"), ("bootstrap", "200")]
    fit = fits.children[0]
    assert fit.title == "fits: k = 0.1"
    numbers = next(b for b in fit.children if b.title == "numbers")
    assert numbers.headers == ["", "value", "lo", "hi"]
    assert numbers.records == [["l_opt/exponent", "-0.05", "-0.07", "-0.03"], ["surface/E", "1.2", "1.1", "1.3"]]
    assert crossovers.headers == ["axis", "at", "inside"]
    assert crossovers.records == [["compute", "3.000e+19", "-"], ["tokens", "-", "true"]]


def test_figures_as_files_and_artifacts(planted, tmp_path):
    uri, client, runs = planted
    series = [data.metric_series(client, r, "val/ppl", "tokens", 0.3, label=n) for n, r in runs.items()]
    curves = figures.curves_figure(series, "val/ppl", "tokens", log_y=True, smoothed=True)
    assert curves["layout"]["yaxis"]["type"] == "log" and len(curves["data"]) == 6
    assert isinstance(curves["layout"]["template"], dict)  # a named template resolved for plotly.js
    html = figures.write_html(curves, tmp_path / "c.html").read_text()
    assert "plotly.js v" in html and not re.search(r"<script[^>]*src=", html)  # the library inline: offline
    from PIL import Image

    png = figures.write_png(curves, tmp_path / "c.png")
    assert float(np.asarray(Image.open(png).convert("L"), dtype=float).std()) > 5.0
    points = [{"label": "k=0", "n": 3, "x": 6.5, "y": 0.7, "x_err": 0.1, "y_err": None, "on_frontier": True, "resolved": None},
              {"label": "k=1", "n": 3, "x": 6.3, "y": 0.8, "x_err": 0.2, "y_err": None, "on_frontier": True, "resolved": False},
              {"label": "k=.5", "n": 3, "x": 6.6, "y": 0.9, "x_err": 0.1, "y_err": None, "on_frontier": False, "resolved": True}]
    pareto = figures.pareto_figure(points, "x", "y", "t")
    assert pareto["data"][1]["x"] == [6.3, 6.5]  # the frontier through the non-dominated points, by x
    assert pareto["data"][0]["marker"]["symbol"] == ["circle", "circle-open", "circle"]
    logged = figures.log_figure(client, runs["a"], "pareto", pareto)
    assert logged == ["dashboard/pareto.html", "dashboard/pareto.png"]
    assert {a.path for a in client.list_artifacts(runs["a"], "dashboard")} == set(logged)


def test_run_links_open_the_training_layout():
    assert links.run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert links.run_url("http://h:5000", "3", "abc", "system-metrics").endswith("/runs/abc/system-metrics?workflowType=machine_learning")
    assert links.experiment_url("http://h:5000", "3") == "http://h:5000/#/experiments/3/runs?workflowType=machine_learning"


def test_a_bind_beyond_loopback_says_what_it_exposes():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host, 8090, 5000, "sqlite:///x") is None
    warning = exposure_warning("0.0.0.0", 8090, 5000, "sqlite:///runs/mlflow.db")
    assert "8090" in warning and "5000" in warning and "sqlite:///runs/mlflow.db" in warning
    assert "delete runs" in warning and "without authentication" in warning
    port = free_port()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(UserError, match=f"--port: cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port, "--port")


def test_dashboard_on_a_missing_store_is_a_user_error(tmp_path, capsys):
    from xdlm.cli import main

    assert main(["dashboard", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--port", str(free_port())]) == 2
    assert "no MLflow store at" in capsys.readouterr().err


def _get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


@pytest.fixture
def served(planted):
    import uvicorn

    from xdlm.dashboard.app import create_app

    uri, client, runs = planted
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(uri, mlflow_port=5999, refresh_s=5), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", client, runs
    server.should_exit = True
    thread.join(timeout=10)


def test_pages_over_http(served):
    base, client, runs = served
    status, page = _get(base + "/?schedule=loglinear")
    assert status == 200 and "run-name" in page
    assert f"http://127.0.0.1:5999/#/experiments/1/runs/{runs['a']}?workflowType=machine_learning" in page
    assert runs["c"] not in page  # filtered out (cosine)
    assert 'data-live="0"' in page
    status, page = _get(base + "/")
    assert 'data-live="1"' in page  # run c is RUNNING: the page refreshes itself
    status, page = _get(base + f"/curves?run={runs['a']}&run={runs['b']}&metric=val/ppl&x=tokens")
    figure = json.loads(page.split('data-plot="curves-plot">', 1)[1].split("</script>", 1)[0])
    assert [t["name"] for t in figure["data"]] == ["a (k=0.0)", "b (k=1.0)"]
    assert figure["data"][1]["y"] == [479.0, 459.0, 439.0]
    for path, text in (("/sweeps", "Sweep sw"), ("/scaling", "No scaling analysis yet"),
                       ("/trajectory", "No trajectory recorded yet")):
        status, page = _get(base + path)
        assert status == 200 and text in page, path
    status, js = _get(base + "/static/plotly.min.js")
    assert status == 200 and len(js) > 1_000_000
    assert _get(base + f"/artifact?run={runs['a']}&path=config/job.yaml")[0] == 404  # only figure folders
    form = f"kind=curves&metric=val/ppl&x=tokens&run={runs['a']}&back=/curves".encode()
    assert _get(base + "/log", form, {"Origin": "http://evil.example"})[0] == 403
    status, page = _get(base + "/log", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and "logged dashboard/curves_val_ppl_vs_tokens.html" in page
    assert {a.path for a in client.list_artifacts(runs["a"], "dashboard")} == {
        "dashboard/curves_val_ppl_vs_tokens.html", "dashboard/curves_val_ppl_vs_tokens.png"}
