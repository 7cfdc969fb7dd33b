"""The dashboard's screens in a real headless Chromium, at 1280 and 1440 px and inside a frame like Airflow's.

One server (the plugin app under uvicorn, in this process) and one browser serve every
check; the data root is a small publish with realistic magnitudes (GiB of memory, MiB/s
of network), so the checks stay within seconds.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from env_support import environ_restored
from test_dashboard import _activate, _publish_small
from test_exposition import CUTOFF, SERIES

from foresight_lib.orchestration.ports import free_port
from foresight_lib.runs.storage import RunStore

pytestmark = pytest.mark.slow

WIDTHS = [1280, 1440]
AIRFLOW_NAV_PX = 146
"""Room Airflow 3's navigation bar and page padding take beside a plugin's page (an iframe 1134 px wide at 1280)."""
LONG_ENTITY = "shop/frontend-7c9d6f5b8-x2k4p/frontend"
"""An entity named as the demo names them (namespace/pod/container)."""
MEMORY_SCALE = 5e7
"""The small publish's memory values (about 20-30) times this: about 1-1.5 GiB."""


def _publish(root: Path) -> None:
    """The dashboard tests' small publish, memory in GiB and a network row sized in bytes/s."""
    import pandas as pd

    _publish_small(root)
    latest = root / "latest"
    forecasts = pd.read_parquet(latest / "forecasts.parquet")
    memory = forecasts["unique_id"] == SERIES[1]
    for column in [c for c in forecasts.columns if c.startswith("yhat")]:
        forecasts.loc[memory, column] *= MEMORY_SCALE
    actuals = pd.read_parquet(latest / "actuals.parquet")
    actuals.loc[actuals["unique_id"] == SERIES[1], "y"] *= MEMORY_SCALE
    recs = pd.read_parquet(latest / "recommendations.parquet")
    network = {"unique_id": f"container_network_receive_bytes_per_second/{LONG_ENTITY}", "entity": LONG_ENTITY,
               "metric": "container_network_receive_bytes_per_second", "resource": "other", "unit": "bytes/s",
               "kind": "daily", "lead": "0m", "period_start": CUTOFF, "request": 5.84e6,
               "request_display": "5.84e+06 bytes/s", "limit_display": "5.84e+06 bytes/s", "replicas": 2,
               "model": "seasonal_naive", "profile": "balanced",
               "reason": "the 95 % upper bound of the day's forecast times the balanced profile's factor"}
    cpu = {**network, "unique_id": f"container_cpu_usage_cores/{LONG_ENTITY}", "metric": "container_cpu_usage_cores",
           "resource": "cpu", "unit": "cores", "request": 0.25, "request_display": "250m", "limit_display": "500m",
           "replicas": 3, "kind": "window", "lead": "30m", "period_end": CUTOFF + pd.Timedelta("30min")}
    recs = pd.concat([recs.assign(unit=["cores", "bytes"], model="arima", profile="balanced",
                                  limit_display=["1", "3Gi"]), pd.DataFrame([network, cpu])], ignore_index=True)
    store = RunStore(str(root), "2024-03-01T020000Z")
    store.write_frame("forecasts", forecasts)
    store.write_frame("actuals", actuals)
    store.write_frame("recommendations", recs)
    store.publish_latest(["forecasts", "actuals", "recommendations", "leaderboard", "summary.json"],
                         extra={"data_interval_end": CUTOFF.isoformat()})


@pytest.fixture(scope="module")
def server(tmp_path_factory, plugin):
    """The plugin mounted at /foresight (as Airflow mounts it), plus /frame: the page in an iframe."""

    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    root = tmp_path_factory.mktemp("dashboard-browser") / "data"
    _publish(root)
    with environ_restored((), FORESIGHT_DATA_ROOT=str(root), FORESIGHT_MLFLOW_UI_URL="http://mlflow.example:5000"):
        app = FastAPI()

        @app.get("/frame", response_class=HTMLResponse)
        def frame() -> str:
            return ('<!doctype html><link rel="icon" href="data:,"><body style="margin:0;display:flex">'
                    f'<nav style="width:{AIRFLOW_NAV_PX}px;flex:none"></nav>'
                    '<iframe id="plugin" src="/foresight/?refresh=1" style="border:0;flex:1;height:100vh"></iframe>'
                    '</body>')

        app.mount("/foresight", plugin.app)
        plugin._nightly_state = lambda: {"paused": True, "queued": 1}  # what Airflow's database would say
        port = free_port()
        instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=instance.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not instance.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            yield {"base": f"http://127.0.0.1:{port}", "root": root}
        finally:
            instance.should_exit = True
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def plugin():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "plugins" / "foresight_plugin.py"
    spec = importlib.util.spec_from_file_location("foresight_plugin_browser_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.app.dependency_overrides[module.read_access] = lambda: "tester"  # Airflow's JWT: test_api_auth
    yield module
    sys.modules.pop(spec.name, None)


def _open(browser, url: str, width: int):
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(url)
    return context, page


def _assert_table_fits(table) -> None:
    """No column is cut: the table fits its card, no cell's text is wider than its cell, no name breaks mid-word."""
    fits = table.evaluate("""t => ({table: t.scrollWidth, box: t.parentElement.clientWidth,
        cut: Array.from(t.querySelectorAll('td')).filter(td => td.scrollWidth > td.clientWidth + 1)
            .map(td => td.textContent)})""")
    assert fits["table"] <= fits["box"] and fits["cut"] == [], fits
    # a wrapped name breaks only after a separator: each line of an entity cell ends with / _ - or the name
    lines = table.locator("td.name").evaluate_all("""tds => tds.map(td => {
        const range = document.createRange(); const out = []; let top = null; let line = '';
        for (const node of td.childNodes) {
            if (node.nodeType !== 3) continue;
            range.selectNodeContents(node);
            const y = Math.round(range.getBoundingClientRect().top);
            if (top !== null && y !== top) { out.push(line); line = ''; }
            top = y; line += node.textContent;
        }
        out.push(line); return out; })""")
    for cell in lines:
        assert all(part[-1] in "/_-" for part in cell[:-1]), cell


def _ready(target) -> None:
    target.wait_for_selector("#forecast-chart[data-ready='true']")
    target.wait_for_selector("#recommendations tbody tr")


@pytest.mark.parametrize("width", WIDTHS)
def test_memory_reads_in_gib_and_recommendations_in_human_units_without_overflow(server, browser, width):
    context, page = _open(browser, f"{server['base']}/foresight/?refresh=0", width)
    try:
        _ready(page)
        page.select_option("#metric", "memory_bytes")
        page.wait_for_function("uid => document.querySelector('#forecast-chart').dataset.series === uid",
                               arg=SERIES[1])
        page.wait_for_selector("#forecast-chart[data-unit='GiB']")
        ticks = page.locator("#forecast-chart .ytick text").all_text_contents()
        assert ticks and all(t.replace(".", "", 1).replace("−", "").isdigit() for t in ticks), ticks  # 1.15, not 1.15B
        assert page.locator("#forecast-chart .g-ytitle").text_content() == "GiB"

        page.check("#recommendations-all")
        cells = page.locator("#recommendations tbody tr").evaluate_all(
            "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")
        header = page.locator("#recommendations thead th").all_text_contents()
        network = next(dict(zip(header, row, strict=True)) for row in cells if row[0] == LONG_ENTITY
                       and "network" in row[1])
        assert network["Request"] == "5.57 MiB/s"
        assert network["Limit"] == "–" and network["Replicas"] == "–", network
        memory = next(dict(zip(header, row, strict=True)) for row in cells if row[1] == "memory_bytes")
        assert memory["Request"] == "2Gi" and memory["Limit"] == "3Gi"
        _assert_table_fits(page.locator("#recommendations"))
        note = page.locator("#sizing-note").text_content()
        assert "arima" in note and "seasonal_naive" in note and "balanced profile" in note, note
        assert not page.errors, page.errors
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_inside_airflows_frame_the_header_does_not_wrap_mid_word(server, browser, width):
    context, page = _open(browser, f"{server['base']}/frame", width)
    try:
        frame = page.frame_locator("#plugin")
        frame.locator("#forecast-chart[data-ready='true']").wait_for()
        facts = frame.locator(".facts dd").evaluate_all("""dds => dds.map(dd => ({
            text: dd.textContent, lines: Math.round(dd.getBoundingClientRect().height /
                                                   parseFloat(getComputedStyle(dd).lineHeight)),
            title: dd.title}))""")
        assert all(f["lines"] == 1 for f in facts), facts
        assert all(f["title"] == f["text"] for f in facts), "a shortened value is readable in full on hover"
        frame.locator("#recommendations-all").check()
        _assert_table_fits(frame.locator("#recommendations"))
        banner = frame.locator("#dag-state")
        assert banner.is_visible() and "1 run(s) of foresight_nightly wait in Queued" in banner.text_content()
        # The series is chosen by metric and entity: no select repeats them in a truncated id.
        options = frame.locator("#model option").all_text_contents()
        assert "arima (champion)" in options and not any("/" in o for o in options), options
        # Another model chosen stays chosen through the page's refreshes (every second here)
        frame.locator("#model").select_option("naive")
        frame.locator("#forecast-chart[data-model='naive']").wait_for()
        time.sleep(2.5)
        assert frame.locator("#forecast-chart").get_attribute("data-model") == "naive"
        assert not page.errors, page.errors
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_leaderboard_shows_wql_and_coverage_beside_mase_within_airflows_frame(server, browser, width):
    context, page = _open(browser, f"{server['base']}/frame", width)
    try:
        frame = page.frame_locator("#plugin")
        frame.locator("#leaderboard tbody tr.champion").first.wait_for()
        head = frame.locator("#leaderboard thead tr")
        assert head.nth(0).locator("th").all_text_contents() == [
            "Model", "MASE", "wQL", "Coverage 80 %", "Coverage 95 %"]
        horizons = ["5m", "15m", "30m"]
        assert head.nth(1).locator("th").all_text_contents() == [*horizons, "Mean", *horizons * 3]
        rows = frame.locator("#leaderboard tbody tr:not(.group)").evaluate_all(
            "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")
        naive = next(r for r in rows if r[0].strip() == "naive")  # cpu_cores comes first; naive is not its champion
        assert naive[1:5] == ["1.100", "1.200", "1.300", "1.200"]
        assert naive[5:8] == ["0.070", "0.080", "0.090"]
        assert naive[8:11] == ["80.0 %", "78.0 %", "76.0 %"] and naive[11:14] == ["95.0 %", "94.0 %", "93.0 %"]
        _assert_table_fits(frame.locator("#leaderboard"))
        assert not page.errors, page.errors
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_an_activation_shows_within_one_refresh(server, browser, width):
    context, page = _open(browser, f"{server['base']}/frame", width)
    root = server["root"]
    summary = root / "latest" / "summary.json"
    before = summary.read_text()
    try:
        frame = page.frame_locator("#plugin")
        frame.locator("#forecast-chart[data-ready='true']").wait_for()
        assert frame.locator("#champions tr[data-metric='cpu_cores'] .badge.champion").text_content() == "arima"
        assert frame.locator("#activations").is_hidden()
        record = _activate(root, "cpu_cores", 5, "naive", by=f"alice-{width}")
        # The page asks again every second here (?refresh=1); one refresh later the activation is shown.
        started = time.monotonic()
        frame.locator("#champions tr[data-metric='cpu_cores'] .badge.activated").wait_for(timeout=5_000)
        assert time.monotonic() - started < 3
        assert frame.locator("#champions tr[data-metric='cpu_cores'] .badge.champion").text_content() == "naive"
        assert frame.locator("#champions tr[data-metric='cpu_cores'] td").nth(2).text_content() == "v5"
        shown = frame.locator("#activations li").all_text_contents()
        assert shown == [f"cpu_cores: v5 (naive) activated by {record['by']} at 2024-03-01 09:30 UTC, replacing v3"]
        # The chart of the metric follows: the activated model's forecast is drawn.
        frame.locator("#forecast-chart[data-model='naive']").wait_for()
        assert not page.errors, page.errors
    finally:
        summary.write_text(before)
        context.close()


def test_the_overview_the_browser_reads_is_valid_json(server):
    import requests

    data = requests.get(f"{server['base']}/foresight/overview", timeout=10).json()
    assert data["units"] == {"cpu_cores": "cores", "memory_bytes": "bytes"}
    assert json.dumps(data)
