"""``xdlm dashboard`` in a real browser: headless Chromium (Debian's) driven by Selenium through
Debian's chromedriver, over a store holding two real short runs of different k, their sweep and
a recorded trajectory (``conftest.review_store``).

Each page loads without console errors, shows those runs (asserted on the DOM), and is saved as
a screenshot that must not be blank. The MLflow UI's run page is checked for the system metrics,
the dataset and the samples table, and its chart view for validation loss against the ``tokens``
and ``flops`` metrics (docs/tracking.md's clicks). Screenshots go to a temporary folder, or to
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


CHART_CARD = "//*[@data-testid='experiment-view-compare-runs-card'][.//*[normalize-space(text())='{}']]"
"""The chart view's card of one metric (its title is the metric's name)."""


def chart_drawn(browser: Browser, metric: str, x_title: str, timeout: float = 30.0) -> list[dict]:
    """The traces of ``metric``'s chart card once its x-axis title reads ``x_title``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    script = ("var p = arguments[0].querySelector('.js-plotly-plot'); var t = p && p.querySelector('.xtitle');"
              "return {xtitle: t ? t.textContent : null, traces: (p ? p.data : []).map(function (d) {"
              "return {name: d.name, x: Array.from(d.x || []), y: Array.from(d.y || [])}; })};")
    drawn = {}

    def ready(driver) -> bool:
        cards = driver.find_elements(By.XPATH, CHART_CARD.format(metric))
        drawn.update(driver.execute_script(script, cards[0]) if cards else {})
        return drawn.get("xtitle") == x_title and bool(drawn.get("traces"))

    try:
        WebDriverWait(browser.driver, timeout).until(ready)
    except TimeoutException:
        titles = [c.text.split("\n")[0] for c in browser.find("[data-testid='experiment-view-compare-runs-card']")]
        raise AssertionError(f"{metric}: no chart against {x_title!r}: {drawn}; charts shown: {titles}") from None
    return drawn["traces"]


def x_axis_for_every_chart(browser: Browser, metric: str) -> None:
    """Configure charts (the gear) > X-axis > Metric > ``metric``, docs/tracking.md's keyboard
    way: hover *Metric*, then →, the name, Enter (mouse clicks on that list have once closed
    the menu without applying the metric)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser.driver
    browser.wait_for("button[data-component-id='mlflow.charts.controls.global_chart_setup_dropdown']").click()
    browser.wait_for("[role=menu]")
    entry = driver.find_element(By.XPATH, "//*[@role='menu']//*[@role='menuitem'][normalize-space()='Metric']")
    ActionChains(driver).move_to_element(entry).pause(0.5).send_keys(Keys.ARROW_RIGHT).pause(0.5).perform()
    ActionChains(driver).send_keys(metric).pause(0.3).perform()  # the menu's type-ahead
    assert driver.switch_to.active_element.text.strip() == metric, driver.switch_to.active_element.text
    ActionChains(driver).send_keys(Keys.ENTER).perform()


def x_axis_for_one_chart(browser: Browser, chart: str, metric: str) -> None:
    """The chart's menu (its ⋮) > Configure > X-axis: Metric, then ``metric`` in the list below it
    (that order: choosing Metric clears the list's choice; typing filters the list), > Save
    changes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser.driver
    card = driver.find_element(By.XPATH, CHART_CARD.format(chart))
    card.find_element(By.CSS_SELECTOR, "button[data-component-id$='cards_chartcard.common.tsx_158']").click()
    browser.wait_for("[role=menu]")
    driver.find_element(By.XPATH, "//*[@role='menu']//*[@role='menuitem'][normalize-space()='Configure']").click()
    dialog = browser.wait_for("[role=dialog] input[name=runs-charts-field-group-x-axis][value=metric]")
    dialog.find_element(By.XPATH, "..").click()
    box = driver.find_element(By.CSS_SELECTOR, "[role=dialog] input[role=combobox]")  # the X-axis list comes first
    box.find_element(By.XPATH, "./ancestor::div[2]").click()
    box.send_keys(metric)  # the list is virtualised: filter it to bring the entry in
    option = (By.CSS_SELECTOR, f"[class*=select-item-option][title='{metric}']")
    WebDriverWait(driver, 10).until(ec.element_to_be_clickable(option), f"{metric} not offered").click()
    driver.find_element(By.XPATH, "//*[@role='dialog']//button[normalize-space()='Save changes']").click()


def chart_validation_against_tokens_and_flops(browser: Browser, mlflow_url: str, experiment_id: str,
                                              parent_run_id: str, run_ids: list[str], client,
                                              shots: Path, metric: str = "val/nelbo") -> None:
    """In the MLflow UI's chart view of an experiment, ``metric`` of the sweep's runs against the
    ``tokens`` metric (every chart), then against ``flops`` (that chart alone); each drawn point
    checked against the run's histories in the store."""
    from selenium.webdriver.support.ui import WebDriverWait

    from xdlm.dashboard.links import experiment_url

    browser.open(experiment_url(mlflow_url, experiment_id))
    browser.wait_for(f"[role=row][row-id='{parent_run_id}']", timeout=60)
    for close in browser.find("button[data-component-id='mlflow.assistant.chat_panel.close']"):
        close.click()
    browser.find("input[type=radio][value=CHART]")[0].find_element("xpath", "./ancestor::label[1]").click()  # Chart view
    browser.wait_for(f"[role=row][row-id='{parent_run_id}'] button[data-component-id$='runnamecellrenderer.tsx_46']").click()
    for run_id in run_ids:  # the sweep's runs, shown (and charted) once their parent is expanded
        browser.wait_for(f"[role=row][row-id='{run_id}']")
    browser.wait_for("input[placeholder='Search metric charts']").send_keys(metric)
    # its section (``val`` for ``val/nelbo``) can sit below the sweep's own summary charts, and
    # MLflow draws a chart only once it is scrolled into view
    section = metric.rsplit("/", 1)[0]
    scroll = ("var name = arguments[0], header = Array.from(document.querySelectorAll("
              "\"[data-testid='experiment-view-compare-runs-section-header']\")).find(function (h) {"
              "return h.textContent.replace(/\\(\\d+\\)$/, '').trim() === name; });"
              "if (header) header.scrollIntoView({block: 'start'}); return !!header;")
    WebDriverWait(browser.driver, 30).until(lambda driver: driver.execute_script(scroll, section),
                                            f"no chart section {section!r}")

    def expected(x_metric: str) -> dict[str, tuple[list[float], list[float]]]:
        out = {}
        for run_id in run_ids:
            ys = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
            xs = {m.step: m.value for m in client.get_metric_history(run_id, x_metric)}
            assert ys and set(ys) <= set(xs), f"{run_id}: {x_metric} is not logged at every {metric} step"
            out[client.get_run(run_id).info.run_name] = ([xs[s] for s in sorted(ys)], [ys[s] for s in sorted(ys)])
        return out

    for x_metric, choose in (("tokens", lambda: x_axis_for_every_chart(browser, "tokens")),
                             ("flops", lambda: x_axis_for_one_chart(browser, metric, "flops"))):
        choose()
        traces = chart_drawn(browser, metric, x_metric)
        for name, (xs, ys) in expected(x_metric).items():
            mine = [t for t in traces if t["name"] == name]
            assert mine, f"{name} is not in the {metric} chart: {[t['name'] for t in traces]}"
            for trace in mine:  # MLflow draws a run as a line and its markers
                assert trace["x"] == pytest.approx(xs) and trace["y"] == pytest.approx(ys), (name, x_metric, trace)
        shoot(browser, shots, f"mlflow_x_axis_{x_metric}", full_page=False)


@skip_without_browser
def test_mlflow_charts_validation_loss_against_tokens_and_flops(review_store, dashboard, browser, shots):
    """docs/tracking.md's clicks, in the MLflow UI started by ``xdlm dashboard``: the sweep's
    ``val/nelbo`` chart against the ``tokens`` metric, then against ``flops``."""
    from mlflow import MlflowClient

    client = MlflowClient(review_store.tracking_uri)
    deadline = time.monotonic() + 120
    while not _healthy(dashboard["mlflow"] + "/health"):
        assert time.monotonic() < deadline, dashboard["log"].read_text()
        time.sleep(0.5)
    started = time.monotonic()
    experiment_id = client.get_run(review_store.parent_run_id).info.experiment_id
    chart_validation_against_tokens_and_flops(browser, dashboard["mlflow"], experiment_id, review_store.parent_run_id,
                                              list(review_store.runs.values()), client, shots)
    print(f"MLflow chart x-axis clicks: {time.monotonic() - started:.1f} s")
