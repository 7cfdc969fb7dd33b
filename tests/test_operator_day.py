"""An operator's day, as a person lives it: ``make ui`` on other ports, a run, a backfill, the UI.

``make ui AIRFLOW_PORT=… MLFLOW_PORT=…`` is started as a user starts it (a throw-away
``AIRFLOW_HOME``, a fast config), a run is triggered through the REST API with the admin
password ``make ui`` generated, and then:

- the run succeeds with no task retried (the workers reach the execution API on the
  custom port, and the scheduler started only once the api-server answered);
- a real headless Chromium (Debian's ``chromium``, driven by Playwright) walks the DAG
  list, the DAG's docs, the Trigger form, the finished run, the Foresight dashboard
  (chart drawn with data, the series filter redraws it, no console errors), its API
  docs (offline) and the MLflow link of the run;
- a backfill of a past date (``airflow backfill create``) succeeds and leaves ``latest/``
  and the champion aliases exactly as they were.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from airflow_support import REPO_ROOT, VENV_BIN, fast_config

from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.orchestration.ports import free_port
from foresight_lib.orchestration.rest import AirflowClient, admin_password, wait_for

TRIGGERED_DATE = "2024-03-20T02:00:00Z"
# One daily run, two days before the triggered one: an older data interval.
BACKFILL_FROM, BACKFILL_TO = "2024-03-18", "2024-03-19"
RUN_TIMEOUT_S = 900

pytestmark = pytest.mark.slow


class MakeUi:
    """``make ui`` with other ports and its own AIRFLOW_HOME, stopped with SIGTERM like Ctrl-C."""

    def __init__(self, home: Path, root: Path):
        self.home = home
        self.airflow_port, self.mlflow_port = free_port(), free_port()
        self.base = f"http://localhost:{self.airflow_port}"
        self.mlflow_base = f"http://localhost:{self.mlflow_port}"
        self.config = fast_config(root)
        self.data_root = root / "data"
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AIRFLOW_", "FORESIGHT_", "MLFLOW_")) or k.startswith("FORESIGHT_TEST")}
        self.env.update(FORESIGHT_CONFIG=str(self.config), AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
                        AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
                        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", AIRFLOW__CORE__PARALLELISM="4",
                        AIRFLOW__API__WORKERS="1")
        self.make_args = [f"AIRFLOW_PORT={self.airflow_port}", f"MLFLOW_PORT={self.mlflow_port}",
                          f"AIRFLOW_HOME={home}"]
        self.log_path = home.parent / "make-ui.log"
        self.proc: subprocess.Popen | None = None
        self.client = AirflowClient(self.base)
        self.password: str | None = None

    def start(self) -> None:
        out = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "ui", *self.make_args],
            cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self, tail: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-tail:])

    def airflow_cli(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        """An ``airflow`` command with the environment ``make ui`` gives its processes."""
        probe = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "probe-env: ; @env", "probe-env",
                                *self.make_args], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True,
                               timeout=60, stdin=subprocess.DEVNULL, check=True)
        env = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
        return subprocess.run([str(VENV_BIN / "airflow"), *args], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    # -- REST API, as a user with the generated admin password ----------------------------
    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"make ui exited with {self.proc.returncode}:\n{self.log()}")

    def wait_ready(self, timeout: float = 300) -> None:
        """The admin password is written, a token is issued, the DAG is parsed and MLflow answers."""
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        try:
            self.client.wait_ready(timeout, passwords=passwords, check=self.check_alive)
            wait_for(lambda: httpx.get(self.mlflow_base, timeout=10).is_success or None, "MLflow not up", 120,
                     check=self.check_alive)
        except TimeoutError as exc:
            raise AssertionError(f"make ui not ready: {exc}\n{self.log()}") from exc
        self.password = admin_password(passwords)

    def wait_run(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        try:
            return self.client.wait_run(run_id, timeout, check=self.check_alive)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from exc


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    server = MakeUi(tmp_path_factory.mktemp("airflow-home"), tmp_path_factory.mktemp("foresight"))
    try:
        server.start()
        server.wait_ready()
        server.client.unpause()
        server.run_id = server.client.trigger(TRIGGERED_DATE)["dag_run_id"]
        server.run = server.wait_run(server.run_id)
        # Unpausing made the scheduler create the last night's run too (catchup is off): let it finish.
        server.finished = [server.wait_run(r["dag_run_id"]) for r in server.client.runs()]
        yield server
    finally:
        server.stop()


def test_on_other_ports_a_triggered_run_succeeds_without_a_retry(ui):
    """The REST-triggered run and the scheduled one that unpausing created both succeed at the first try."""
    assert {r["run_type"] for r in ui.finished} == {"manual", "scheduled"}, ui.finished
    for run in ui.finished:
        tasks = ui.client.task_instances(run["dag_run_id"])
        assert run["state"] == "success", [(t["task_id"], t["state"]) for t in tasks]
        assert {t["task_id"] for t in tasks} >= {"extract", "validate", "train", "evaluate", "publish", "release"}
        retried = [(t["task_id"], t["map_index"], t["try_number"]) for t in tasks if t["try_number"] > 1]
        assert not retried, f"tasks of {run['dag_run_id']} needed a retry: {retried}\n{ui.log()}"
    assert "Connection refused" not in ui.log_path.read_text(errors="replace")
    # Published: the newer data interval of the two, whichever finished last.
    newest = max(run["data_interval_end"] for run in ui.finished)
    manifest = json.loads((ui.data_root / "latest" / "_manifest.json").read_text())
    assert manifest["data_interval_end"][:19] == newest[:19]


def _aliases(tracking_uri: str) -> dict[str, dict[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # not the session's registry
    return {model.name: {alias: str(version) for alias, version in model.aliases.items()}
            for model in client.search_registered_models()}


def test_a_backfill_of_a_past_date_leaves_latest_and_the_champions_untouched(ui):
    latest = ui.data_root / "latest"
    before = {path.name: path.read_bytes() for path in sorted(latest.iterdir()) if path.is_file()}
    aliases_before = _aliases(ui.tracking_uri)
    assert aliases_before and all("champion" in aliases for aliases in aliases_before.values()), aliases_before

    proc = ui.airflow_cli("backfill", "create", "--dag-id", NIGHTLY_DAG, "--from-date", BACKFILL_FROM,
                          "--to-date", BACKFILL_TO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    backfill_runs = wait_for(lambda: [r for r in ui.client.runs(run_type="backfill") if r["run_type"] == "backfill"]
                             or None, "no backfill run", 120)
    assert [r["logical_date"][:10] for r in backfill_runs] == [BACKFILL_FROM], backfill_runs
    run = ui.wait_run(backfill_runs[0]["dag_run_id"])
    assert run["state"] == "success", [(t["task_id"], t["state"]) for t in ui.client.task_instances(run["dag_run_id"])]

    after = {path.name: path.read_bytes() for path in sorted(latest.iterdir()) if path.is_file()}
    assert after == before, "the backfill changed latest/"
    assert _aliases(ui.tracking_uri) == aliases_before
    # What it made is kept where it belongs: its own run folder.
    assert any(path.name.startswith(BACKFILL_FROM) for path in (ui.data_root / "runs").iterdir())


@pytest.fixture
def page(browser, ui):
    """A logged-in page; the console errors and uncaught exceptions it sees are in ``page.errors``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(f"{page.url}: {message.text}"))
    page.on("pageerror", lambda exc: page.errors.append(f"{page.url}: {exc}"))
    page.goto(f"{ui.base}/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ui.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.errors.clear()  # the login page's own 401 before signing in is expected
    try:
        yield page
    finally:
        context.close()


def test_the_operator_walks_from_the_dag_list_to_the_mlflow_run(ui, page):
    # The DAG list, then the DAG and its docs.
    page.goto(f"{ui.base}/dags")
    page.get_by_role("link", name=NIGHTLY_DAG).first.click()
    page.wait_for_url(f"**/dags/{NIGHTLY_DAG}**")
    page.get_by_role("button", name="Dag Docs").click()
    page.get_by_text("Foresight nightly forecasting").first.wait_for()
    page.keyboard.press("Escape")

    # The Trigger form: every parameter, the source's metrics offered; closed without triggering.
    page.get_by_role("button", name="Trigger Dag").click()
    page.get_by_text("Run Parameters").wait_for()
    for title in ("Metrics", "Models", "Horizons", "Other settings", "Publish"):
        page.get_by_text(title).first.wait_for()
    # A react-select: its input lies over the placeholder text.
    page.get_by_text("Select one or multiple values").first.click(force=True)
    page.get_by_text("container_memory_working_set_bytes", exact=True).first.wait_for()
    # a counter is offered with the name its forecasts go by on the dashboard, in MLflow and the API
    page.get_by_text("container_cpu_usage_cores ← container_cpu_usage_seconds_total", exact=True).first.wait_for()
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")

    # The finished run.
    page.goto(f"{ui.base}/dags/{NIGHTLY_DAG}/runs/{ui.run_id}")
    page.get_by_text(ui.run_id).first.wait_for()
    page.get_by_text("success", exact=False).first.wait_for()

    # The Foresight dashboard: the chart is drawn with data and the series filter redraws it.
    page.goto(f"{ui.base}/foresight/")
    chart = page.locator("#forecast-chart")
    page.wait_for_selector("#forecast-chart[data-ready='true']")
    assert int(chart.get_attribute("data-points")) > 0
    assert page.locator("#forecast-chart .main-svg").count() > 0, "Plotly drew no chart"
    first_series = chart.get_attribute("data-series")
    entities = page.locator("select#entity option").evaluate_all("options => options.map(o => o.value)")
    current = page.locator("select#entity").input_value()
    other = next(value for value in entities if value and value != current)
    page.select_option("select#entity", other)
    page.wait_for_function("([id, first]) => { const c = document.querySelector(id); "
                           "return c.dataset.series && c.dataset.series !== first; }",
                           arg=["#forecast-chart", first_series])
    assert other in chart.get_attribute("data-series"), (other, chart.get_attribute("data-series"))
    assert int(chart.get_attribute("data-points")) > 0
    for table in ("#champions", "#leaderboard"):
        assert page.locator(f"table{table} tbody tr").count() > 0, f"{table} is empty"
    assert not page.errors, page.errors
    mlflow_href = page.locator("a#mlflow-run").get_attribute("href")

    # The plugin's API docs render from the plugin's own files (no CDN).
    page.goto(f"{ui.base}/foresight/docs")
    page.get_by_text("/overview", exact=True).first.wait_for()
    assert not page.errors, page.errors

    # The MLflow link opens the run.
    assert mlflow_href.startswith(ui.mlflow_base), mlflow_href
    page.goto(mlflow_href)
    newest = max(run["data_interval_end"] for run in ui.finished)
    # named by its time and kind, and marked as the published one
    page.get_by_text(re.compile(rf"{newest[:10]} \d\d:\d\d (nightly|ad hoc), published")).first.wait_for(
        timeout=60_000)
    assert "runs/" in page.url, page.url


def test_the_dashboard_fits_airflows_frame_at_1280_and_1440_px(ui, page):
    """The plugin's page as Airflow shows it (Plugins → Foresight → Forecasts: in an iframe beside its menu)."""
    for width in (1280, 1440):
        page.set_viewport_size({"width": width, "height": 1000})
        page.goto(f"{ui.base}/plugin/foresight")
        frame = page.frame_locator("iframe").first
        frame.locator("#forecast-chart[data-ready='true']").wait_for(timeout=60_000)
        facts = frame.locator(".facts dd").evaluate_all("""dds => dds.map(dd => ({text: dd.textContent,
            lines: Math.round(dd.getBoundingClientRect().height / parseFloat(getComputedStyle(dd).lineHeight))}))""")
        assert all(f["lines"] == 1 for f in facts), (width, facts)  # no value wrapped mid-word
        assert frame.locator("#forecast-chart").get_attribute("data-unit") in ("cores", "B", "KiB", "MiB", "GiB",
                                                                              "B/s", "KiB/s", "MiB/s", "GiB/s")
        frame.locator("#recommendations-all").check()
        frame.locator("#recommendations tbody tr").first.wait_for()
        table = frame.locator("#recommendations").evaluate("""t => ({width: t.scrollWidth,
            box: t.parentElement.clientWidth,
            cut: Array.from(t.querySelectorAll('td')).filter(td => td.scrollWidth > td.clientWidth + 1)
                .map(td => td.textContent),
            numbers: Array.from(t.querySelectorAll('td')).map(td => td.textContent)
                .filter(x => /e[+-]\\d/.test(x))})""")
        assert table["width"] <= table["box"] and not table["cut"] and not table["numbers"], (width, table)
    assert not page.errors, page.errors
