"""``xdlm dashboard`` in a real browser: headless Chromium (Debian's) driven by Selenium through
Debian's chromedriver, over a store holding two real short runs of different k, their sweep and
a recorded trajectory (``conftest.review_store``).

Each page loads without console errors, shows those runs (asserted on the DOM), and is saved as
a screenshot that must not be blank. The MLflow UI's run page is checked for the system metrics,
the dataset and the samples table. Screenshots go to a temporary folder, or to
``$XDLM_SCREENSHOTS`` (``scripts/dashboard_screenshots.sh`` sets it to docs/img/dashboard).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.conftest import free_port
from tests.dashboard.browser import Browser, missing, pixel_spread

pytestmark = pytest.mark.slow

WHY_NOT = missing()
if WHY_NOT and os.environ.get("CI"):
    raise RuntimeError(f"browser tests cannot run in CI: {WHY_NOT}")  # CI installs them: never skip there
skip_without_browser = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

MIN_SPREAD = 8.0
"""Grey-level standard deviation below which a screenshot counts as blank (a white page is 0;
these pages measure 17-56)."""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def dashboard(review_store, tmp_path_factory):
    """``xdlm dashboard`` itself, as a user starts it, on free loopback ports."""
    port, mlflow_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "xdlm.cli", "dashboard", "--tracking-uri", review_store.tracking_uri,
                                 "--port", str(port), "--mlflow-port", str(mlflow_port), "--refresh", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    urls = {"app": f"http://127.0.0.1:{port}", "mlflow": f"http://127.0.0.1:{mlflow_port}", "log": log}
    deadline = time.monotonic() + 60
    while not _healthy(urls["app"] + "/health"):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    yield urls
    os.killpg(proc.pid, signal.SIGINT)  # its own group: the MLflow UI it started goes with it
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("XDLM_SCREENSHOTS")
    return Path(where).resolve() if where else tmp_path_factory.mktemp("screenshots")


def shoot(browser: Browser, shots: Path, name: str, full_page: bool = True, height: int | None = None) -> Path:
    path = browser.screenshot(shots / f"{name}.png", full_page=full_page, height=height)
    spread = pixel_spread(path)
    assert spread > MIN_SPREAD, f"{name}: screenshot looks blank (grey-level spread {spread:.1f})"
    return path


def clean_console(browser: Browser, page: str) -> None:
    errors = browser.errors()
    assert not errors, f"{page}: console errors: {errors}"


def plot_drawn(browser: Browser, plot_id: str):
    browser.wait_for(f"#{plot_id} .main-svg")
    return browser.driver.execute_script(
        f"var p = document.getElementById('{plot_id}'); return {{data: p.data.map(function (t) {{"
        "return {name: t.name, type: t.type, x: Array.from(t.x || []), y: Array.from(t.y || [])}; }), "
        "layout: {xtype: p._fullLayout.xaxis.type, ytype: p._fullLayout.yaxis.type}};")


@skip_without_browser
def test_every_page_shows_the_runs_without_console_errors(review_store, dashboard, browser, shots, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(review_store.tracking_uri)
    names = {k: client.get_run(run_id).info.run_name for k, run_id in review_store.runs.items()}
    app = dashboard["app"]
    started = time.monotonic()

    # runs: both runs with their k, each linked to its MLflow page in the training layout
    browser.open(app + "/")
    table = browser.wait_for("#runs-table")
    for k, run_id in review_store.runs.items():
        row = browser.find(f"tr[data-run='{run_id}']")
        assert row, f"run {names[k]} missing from the runs table"
        cells = row[0].text
        assert names[k] in cells and k in cells and "FINISHED" in cells, cells
        link = row[0].find_element("css selector", "a.run-name").get_attribute("href")
        assert link.endswith(f"/runs/{run_id}?workflowType=machine_learning") and link.startswith(dashboard["mlflow"])
    assert "review" in table.text  # the sweep's parent run
    clean_console(browser, "runs")
    shoot(browser, shots, "runs")

    # three clicks from the first page to the comparison of the two k: tick, tick, compare
    for run_id in review_store.runs.values():
        browser.find(f"tr[data-run='{run_id}'] input[type=checkbox]")[0].click()
    browser.find("#compare-button")[0].click()
    figure = plot_drawn(browser, "curves-plot")
    assert browser.driver.current_url.startswith(app + "/curves?")
    drawn = {t["name"]: t for t in figure["data"]}
    assert set(drawn) == {f"{names[k]} (k={k})" for k in names}
    for k, run_id in review_store.runs.items():  # val/ppl against tokens, as logged
        ppl = {m.step: m.value for m in client.get_metric_history(run_id, "val/ppl")}
        tokens = {m.step: m.value for m in client.get_metric_history(run_id, "tokens")}
        trace = drawn[f"{names[k]} (k={k})"]
        assert trace["y"] == pytest.approx([ppl[s] for s in sorted(ppl)])
        assert trace["x"] == pytest.approx([tokens[s] for s in sorted(ppl)])
    summary = browser.find("#curve-summary")[0].text
    assert all(k in summary for k in review_store.runs)
    clean_console(browser, "curves")
    shoot(browser, shots, "curves")

    # the same runs against FLOPs, smoothed, on log axes
    browser.open(browser.driver.current_url + "&x=flops&smooth=0.5&logx=1&logy=1&metric=train/loss")
    figure = plot_drawn(browser, "curves-plot")
    assert figure["layout"] == {"xtype": "log", "ytype": "log"}
    k, run_id = next(iter(review_store.runs.items()))
    flops = [m.value for m in sorted(client.get_metric_history(run_id, "flops"), key=lambda m: m.step)]
    raw = next(t for t in figure["data"] if t["name"] == f"{names[k]} (k={k}) (raw)")
    assert raw["x"] == pytest.approx(flops)
    clean_console(browser, "curves (flops)")

    # sweeps: the sweep's trial table and its frontier, trials linked to their runs
    browser.open(app + "/sweeps")
    figure = plot_drawn(browser, "pareto-plot")
    assert {t["name"] for t in figure["data"]} == {"configurations (mean, 95 % interval)", "Pareto frontier"}
    assert len(figure["data"][0]["x"]) == 2  # one point per k
    assert "Sweep review" in browser.find("#sweep-title")[0].text
    trial_rows = browser.find("#trial-table tbody tr")
    assert {r.get_attribute("data-run") for r in trial_rows} == set(review_store.runs.values())
    assert all("completed" in r.text for r in trial_rows)
    clean_console(browser, "sweeps")
    shoot(browser, shots, "sweeps")

    # trajectories: the recorded one, a slider over its 8 steps, tokens coloured by event
    browser.open(app + "/trajectory")
    plot_drawn(browser, "trajectory-plot")
    title = browser.find("#trajectory-title")[0].text
    assert "k = 1.0" in title and "8 sampler steps" in title
    payload = json.loads(Path(client.download_artifacts(review_store.trajectory_run_id,
                                                        review_store.trajectory_artifact)).read_text())
    slider = browser.find("#step-slider")[0]
    assert slider.get_attribute("max") == "8"
    tokens = browser.find("#tokens .tok")
    assert len(tokens) == len(payload["samples"][0]["tokens"][-1])
    shown = [t.get_attribute("class").split()[1].removeprefix("ev-") for t in tokens]
    assert shown == [payload["events"][e] for e in payload["samples"][0]["events"][-1]]  # what step 8 did
    browser.find("#step-prev")[0].click()
    assert browser.find("#step-label")[0].text.startswith("step 7 / 8")
    shown = [t.get_attribute("class").split()[1].removeprefix("ev-") for t in browser.find("#tokens .tok")]
    assert shown == [payload["events"][e] for e in payload["samples"][0]["events"][6]]
    browser.driver.execute_script("var s = document.getElementById('step-slider'); s.value = 8;"
                                  "s.dispatchEvent(new Event('input'));")
    clean_console(browser, "trajectory")
    shoot(browser, shots, "trajectory")

    # scaling: none yet, then an analysis run laid out generically with its figure
    browser.open(app + "/scaling")
    assert "No scaling analysis yet" in browser.wait_for("#no-scaling").text
    run_id = plant_scaling_analysis(client, review_store, tmp_path)
    browser.open(app + "/scaling")
    section = browser.wait_for(f"section[data-run='{run_id}']")
    assert "l_opt/exponent" in section.text and "-0.0512" in section.text and "3.200e+19" in section.text
    browser.wait_for(f"section[data-run='{run_id}'] img")
    width = browser.driver.execute_script(f"return document.querySelector(\"section[data-run='{run_id}'] img\").naturalWidth")
    assert width > 100  # the PNG came through the dashboard
    clean_console(browser, "scaling")
    shoot(browser, shots, "scaling")

    # a live run: the runs page reloads its table by itself (every 2 s here) as numbers arrive
    parent = client.get_run(review_store.parent_run_id)
    live = client.create_run(parent.info.experiment_id, run_name="live-run", tags={"xdlm.k": "0.5"})
    browser.open(app + "/?k=0.5")
    assert browser.wait_for("body").get_attribute("data-live") == "1"
    row = f"tr[data-run='{live.info.run_id}']"
    browser.wait_for(row)
    client.log_metric(live.info.run_id, "val/ppl", 321.5, step=2)
    browser.wait_for(row, timeout=20, text="321.5")  # no navigation: the page fetched it
    client.set_terminated(live.info.run_id)
    browser.wait_for(row, timeout=20, text="FINISHED")
    assert browser.wait_for("body").get_attribute("data-live") == "0"  # and stops refreshing
    clean_console(browser, "runs (live)")
    print(f"dashboard pages in the browser: {time.monotonic() - started:.1f} s "
          f"(store made in {review_store.seconds:.1f} s)")


def plant_scaling_analysis(client, review_store, tmp: Path) -> str:
    """An analysis run as ``xdlm scaling fit`` leaves one (tag, ``scaling/fit.json``, a PNG),
    written here with the MLflow client: two short runs cannot be fitted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parent = client.get_run(review_store.parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name="scaling-review",
                            tags={"xdlm.kind": "scaling_analysis"})
    fit = {"settings": {"metric": "val/nelbo", "bootstrap": 200},
           "fits": [{"k": 0.0, "numbers": {"l_opt/exponent": {"value": -0.0512, "lo": -0.061, "hi": -0.042},
                                           "surface/E": {"value": 1.91, "lo": 1.80, "hi": 2.02}}}],
           "crossovers": [{"axis": "compute", "k_a": 0.0, "k_b": 1.0, "at": 3.2e19, "inside": False}]}
    (tmp / "fit.json").write_text(json.dumps(fit))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.loglog([1e15, 1e16, 1e17], [3.0, 2.6, 2.3], "o-")
    fig.savefig(tmp / "isoflop.png")
    plt.close(fig)
    for name in ("fit.json", "isoflop.png"):
        client.log_artifact(run.info.run_id, str(tmp / name), "scaling")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@skip_without_browser
def test_mlflow_run_page_shows_system_metrics_dataset_and_samples(review_store, dashboard, browser, shots):
    """The MLflow UI started by ``xdlm dashboard``, on the k = 1 run: its overview lists the
    datasets and system metrics, the system-metrics tab draws them, the samples table previews."""
    from mlflow import MlflowClient

    from xdlm.dashboard.links import run_url

    client = MlflowClient(review_store.tracking_uri)
    run = client.get_run(review_store.trajectory_run_id)
    deadline = time.monotonic() + 120  # the UI starts beside the pages, slower on a busy machine
    while not _healthy(dashboard["mlflow"] + "/health"):
        assert time.monotonic() < deadline, dashboard["log"].read_text()
        time.sleep(0.5)
    page = run_url(dashboard["mlflow"], run.info.experiment_id, run.info.run_id)

    browser.open(page)
    browser.wait_for("body", text=run.info.run_name)
    # what helper C's run setup logs: datasets (log_input), MLflow's system metrics monitor, a table
    datasets = [d.dataset.name for d in run.inputs.dataset_inputs]
    assert datasets, "the run has no dataset inputs (log_input)"
    browser.wait_for("body", text="Datasets")
    browser.wait_for("body", text=datasets[0])
    system = sorted(k for k in run.data.metrics if k.startswith("system/"))
    assert system, "the run has no system metrics"
    browser.wait_for("body", text=system[0])
    for close in browser.find("button[data-component-id='mlflow.assistant.chat_panel.close']"):
        close.click()  # MLflow's assistant panel covers half the page (the choice is remembered)
    shoot(browser, shots, "mlflow_run", full_page=False, height=1900)

    browser.open(run_url(dashboard["mlflow"], run.info.experiment_id, run.info.run_id, "system-metrics"))
    browser.wait_for("body", text=system[0].removeprefix("system/"))
    shoot(browser, shots, "mlflow_system_metrics", full_page=False)

    tables = [a["path"] for a in json.loads(run.data.tags.get("mlflow.loggedArtifacts", "[]")) if a["type"] == "table"]
    assert tables, "the run logged no table (log_table)"
    table = json.loads(Path(client.download_artifacts(run.info.run_id, tables[0])).read_text())
    assert {"step", "sampler_steps", "k", "text"} <= set(table["columns"])
    browser.open(run_url(dashboard["mlflow"], run.info.experiment_id, run.info.run_id, f"artifacts/{tables[0]}"))
    browser.wait_for("body", text="sampler_steps")
    words = re.findall(r"[A-Za-z]{3,}", " ".join(str(row[table["columns"].index("text")]) for row in table["data"]))
    assert words, table
    browser.wait_for("body", text=max(words, key=len))  # a word of the samples, as the preview shows it
    shoot(browser, shots, "mlflow_samples_table", full_page=False)
