"""Fault injection: every way a nightly run can break leaves what is published whole and says why.

One baseline run (demo memory series, three days of history, the fastest models, a local
SQLite MLflow store) is published once per module; each case starts from a copy of that
state at the same absolute paths (so the run folders the manifest names and the artifact
locations in the MLflow database stay valid), injects one fault, runs the date after the
baseline's, and checks

- the outcome: the run failed with an error naming the cause, or it succeeded with the bad
  series left out and its reason in the run folder (``validation/summary.json``, or for a
  series too short to backtest, ``backtest_report.json``);
- ``fault_support.assert_published_consistent``: ``latest/`` byte-identical or wholly the new
  run, the champion aliases equal to ``latest/summary.json``, no temporary file, journal or
  lock left, and the password planted in ``source.prometheus.url`` (or the tracking URI)
  stored nowhere and absent from the error and the logs.

Faults: SIGKILL mid-train and at two points of the publish (then a re-run of the date
must succeed), a read-only and a full data root (bind mount and tmpfs: needs root, as in
CI), Prometheus refusing, answering 500, malformed JSON or trickling bytes, an MLflow
server refusing or never answering, two concurrent runs of one date, and bad input files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fault_support import Published, assert_published_consistent, files_with, fill_disk, snapshot
from prom_server import ScriptedServer

from foresight_lib import pipeline
from foresight_lib.errors import DataError, ForesightError, SourceError, ValidationFailed
from foresight_lib.orchestration.ports import free_port
from foresight_lib.runs import transaction as publishing
from foresight_lib.runs.storage import DataRoot
from foresight_lib.sources.demo import BROKEN_ENTITY, generate_demo
from foresight_lib.tracking import model_registry

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_DATE = "2024-03-15T02:00:00"
DATE = "2024-03-16T02:00:00"
KEY = pipeline.run_key_for(DATE)
METRIC = "container_memory_working_set_bytes"
MODELS = ["naive", "seasonal_naive", "ensemble"]
SECRET = "PLANTED-SECRET-5c1e7b"
SECRET_URL = f"http://fault-user:{SECRET}@127.0.0.1:9/"
"""A Prometheus URL with a password, set in every run's settings even where the source is not Prometheus."""
FILE_SERIES = 5
"""Series in the bad-file cases: the victim and four healthy ones."""
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class World:
    """One case's copy of the baseline: data root, MLflow store and artifacts under ``root``."""

    root: Path
    before: Published | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow / 'mlflow.db'}"

    def settings(self, **extra) -> dict:
        """Deployment settings of a fast production run (not ad hoc: it may publish), plus ``extra``."""
        base = {
            "data_root": str(self.data), "history_days": 3, "models": MODELS,
            "source": {"kind": "demo", "metrics": [METRIC], "prometheus": {"url": SECRET_URL}},
            "mlflow": {"tracking_uri": self.tracking_uri, "artifact_location": str(self.mlflow / "artifacts"),
                       "check_timeout_s": 3},
        }
        return _merge(base, extra)

    def check(self, killed: bool = False) -> str:
        """``assert_published_consistent`` against the state before the fault; what is published now."""
        assert self.before is not None
        return assert_published_consistent(self.data, self.tracking_uri, self.before, SECRET, killed=killed,
                                           search=[self.mlflow, *self.logs])

    def validation(self) -> dict:
        """The date's run folder's validation summary (reasons per quarantined series)."""
        return json.loads((self.data / "runs" / KEY / "validation" / "summary.json").read_text())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Iterator[Path]:
    """A published run of the day before, kept as ``<work>/baseline``; cases run in ``<work>/case``."""
    work = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as patch:
        # A fresh SQLite connection per operation: each case replaces the database file.
        patch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        for name, value in THREADS.items():
            patch.setenv(name, value)
        case = World(work / "case")
        result = pipeline.run_nightly(BASE_DATE, case.settings())
        assert result["published"], result
        shutil.copytree(case.root, work / "baseline", symlinks=True)
        yield work


@pytest.fixture
def world(baseline: Path) -> World:
    """The baseline's state, copied to the same paths, and a snapshot of what it published."""
    case = World(baseline / "case")
    if case.root.exists():
        shutil.rmtree(case.root)
    shutil.copytree(baseline / "baseline", case.root, symlinks=True)
    case.before = snapshot(case.data, case.tracking_uri)
    assert case.before.latest and case.before.champions, "the baseline published nothing"
    return case


def _no_secret_in(text: str, where: str) -> None:
    assert SECRET not in text, f"the planted secret appears in {where}"


def _fails(world: World, caplog, settings: dict, error: type[BaseException], match: str,
           within_s: float | None = None) -> BaseException:
    """Run the date in this process; it must raise ``error`` whose message matches ``match``."""
    started = time.monotonic()
    with caplog.at_level("DEBUG"), pytest.raises(error, match=match) as caught:
        pipeline.run_nightly(DATE, settings)
    elapsed = time.monotonic() - started
    if within_s is not None:
        assert elapsed < within_s, f"the run took {elapsed:.1f} s to fail, more than {within_s} s"
    _no_secret_in(str(caught.value), "the error message")
    _no_secret_in(caplog.text, "the log")
    return caught.value


def _succeeds(world: World, caplog, settings: dict) -> dict:
    with caplog.at_level("INFO"):
        result = pipeline.run_nightly(DATE, settings)
    _no_secret_in(caplog.text, "the log")
    return result


# ---------------------------------------------------------------------------
# Processes killed with SIGKILL, and two runs of one date at once


def _start(world: World, name: str, settings: dict) -> subprocess.Popen:
    """``python -m foresight_lib.pipeline run DATE --set ...`` with its output in a log file of the case."""
    log = world.root / f"{name}.log"
    world.logs.append(log)
    env = {**os.environ, **THREADS, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "foresight_lib.pipeline", "run", DATE, "--set",
                                 json.dumps(settings)], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool], what: str, timeout_s: float = 240) -> None:
    """SIGKILL ``process`` as soon as ``ready()``; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def _attempts(world: World) -> list[Path]:
    folder = world.data / "staging" / "runs" / KEY
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []


def _journal(world: World) -> dict | None:
    try:
        return json.loads((world.data / "locks" / publishing.JOURNAL).read_text())
    except (OSError, ValueError):
        return None


def _rerun_publishes(world: World, caplog) -> None:
    """After a kill: the same date again succeeds, publishes, and leaves no trace of the killed attempt."""
    result = _succeeds(world, caplog, world.settings())
    assert result["published"], result
    assert world.check().startswith("new run"), "the re-run must publish"
    summary = json.loads((world.data / "latest" / "summary.json").read_text())
    assert summary["run_key"] == KEY
    assert _attempts(world) == [], "the killed attempt's folder is removed by the next success"
    _registered_only_by_published_runs(world)


def _registered_only_by_published_runs(world: World) -> None:
    """Each model's versions: the baseline's, plus at most the one the last publish registered (none orphaned)."""
    now = snapshot(world.data, world.tracking_uri)
    summary = now.summary()
    for name, versions in now.versions.items():
        kept = set(world.before.versions.get(name, ()))
        metric = name.removeprefix("foresight-")
        registration = (summary.get("registrations") or {}).get(metric) or {}
        if summary.get("run_key") == KEY and registration.get("version") is not None:
            kept.add(str(registration["version"]))
        assert set(versions) == kept, f"{name} holds versions {versions}; expected {sorted(kept)} (orphans left)"


def test_kill_mid_train_leaves_everything_and_the_rerun_publishes(world, caplog):
    process = _start(world, "killed", world.settings())
    _kill_when(process, lambda: any(a.joinpath("backtests").is_dir() and any(
        p.suffix == ".pkl" for p in a.joinpath("backtests").iterdir()) for a in _attempts(world)),
        "a backtest part was written")
    assert world.check(killed=True) == "unchanged"
    assert _journal(world) is None
    assert (world.data / "locks" / "runs" / f"{KEY}.json").exists(), "the killed run's lock stays until taken over"
    _rerun_publishes(world, caplog)


def _model_versions(world: World) -> int:
    """How many model versions the MLflow store holds (read straight from its SQLite file)."""
    try:
        with sqlite3.connect(world.mlflow / "mlflow.db", timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM model_versions").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("point", ["journal-written", "version-registered"])
def test_kill_mid_publish_is_undone_and_the_rerun_publishes(world, caplog, point):
    """Killed once the MLflow runs are logged and the journal written, or once a champion version exists.

    The journal is written right after the MLflow parent and child runs are logged, so the
    first point is also "killed after MLflow logging, before anything is registered". The
    second kills as soon as the registry holds the new version, which may be before the
    journal names it: the undo then finds it through the MLflow run it was logged from.
    """
    versions = _model_versions(world)
    ready = {
        "journal-written": lambda: _journal(world) is not None,
        "version-registered": lambda: _model_versions(world) > versions,
    }[point]
    process = _start(world, "killed", world.settings())
    _kill_when(process, ready, f"the publish reached {point}")
    recovered = publishing.recover(DataRoot(str(world.data)), registry=model_registry)  # as the next publish
    outcome = world.check(killed=True)
    if point == "journal-written":
        assert recovered == "rolled back"
        assert outcome == "unchanged"
        _registered_only_by_published_runs(world)
    else:  # killed before the switch began (rolled back), or during it (finished): never a mix
        assert (recovered, outcome == "unchanged") in {("rolled back", True), ("completed", False), (None, False)}
        if outcome == "unchanged":
            _registered_only_by_published_runs(world)
    _rerun_publishes(world, caplog)


def test_two_runs_of_one_date_at_once_one_wins_and_the_other_names_it(world):
    first = _start(world, "first", world.settings())
    second = _start(world, "second", world.settings())
    codes = {p.pid: p.wait(timeout=400) for p in (first, second)}
    logs = {p.pid: (world.root / f"{name}.log").read_text(errors="replace")
            for p, name in ((first, "first"), (second, "second"))}
    winners = [pid for pid, code in codes.items() if code == 0]
    losers = [pid for pid, code in codes.items() if code != 0]
    assert len(winners) == 1 and len(losers) == 1, {pid: (codes[pid], logs[pid][-1500:]) for pid in codes}
    loser_log = logs[losers[0]]
    assert codes[losers[0]] == 2, loser_log[-1500:]
    assert f"another run of {KEY} is in progress" in loser_log, loser_log[-1500:]
    assert f"pid {winners[0]})" in loser_log, "the loser's error names the winning process"
    for text in logs.values():
        _no_secret_in(text, "a run's output")
    assert world.check().startswith("new run")
    summary = json.loads((world.data / "latest" / "summary.json").read_text())
    assert f"attempt {summary['attempt']}," in loser_log, "what is published is the winner's attempt"


# ---------------------------------------------------------------------------
# The data root: read-only, full


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount here (needs root, as in CI): mount {' '.join(args)}: {done.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@pytest.fixture
def read_only_root(world: World) -> Iterator[World]:
    """The data root bind-mounted read-only onto itself (root ignores chmod, not a read-only mount)."""
    _mount("--bind", str(world.data), str(world.data))
    try:
        _mount("-o", "remount,bind,ro", str(world.data))
        yield world
    finally:
        _umount(world.data)


@pytest.fixture
def full_root(world: World, request) -> Iterator[World]:
    """The data root on a small tmpfs holding the baseline's files, filled up to ``request.param`` bytes free."""
    size = sum(p.stat().st_size for p in world.data.rglob("*") if p.is_file())
    _mount("-t", "tmpfs", "-o", f"size={size + 4 * 2 ** 20}", "tmpfs", str(world.data))
    try:
        shutil.copytree(world.root.parent / "baseline" / "data", world.data, dirs_exist_ok=True, symlinks=True)
        fill_disk(world.data, request.param)
        world.before = snapshot(world.data, world.tracking_uri)
        yield world
    finally:
        _umount(world.data)


def test_read_only_data_root_fails_naming_it(read_only_root, caplog):
    world = read_only_root
    _fails(world, caplog, world.settings(), ForesightError, r"(?i)read-only file system")
    assert world.check() == "unchanged"


@pytest.mark.parametrize("full_root", [0, 512 * 1024], indirect=True, ids=["no-byte-free", "512KiB-free"])
def test_full_data_root_fails_naming_it(full_root, caplog):
    world = full_root
    _fails(world, caplog, world.settings(), ForesightError, r"(?i)no space left on device")
    world.data.joinpath("filler").unlink()
    assert world.check() == "unchanged"


# ---------------------------------------------------------------------------
# Prometheus away, failing, garbled, slow


class TrickleServer:
    """An HTTP server that sends its headers at once, then one byte of the body every ``interval_s``."""

    def __init__(self, interval_s: float = 0.3):
        self.interval_s = interval_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.connections = 0

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not self.stop.wait(self.interval_s):
                    conn.sendall(b" ")
            except OSError:
                return  # the client gave up: what the test waits for

    def __enter__(self) -> TrickleServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sock.close()


class SilentServer:
    """Accepts connections and never answers (a hung server)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def __enter__(self) -> SilentServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


def _secret_url(port: int) -> str:
    return f"http://fault-user:{SECRET}@127.0.0.1:{port}"


def _prometheus(world: World, port: int) -> dict:
    return world.settings(source={"kind": "prometheus", "prometheus": {
        "url": _secret_url(port), "retries": 1, "timeout_s": 2}})


def test_prometheus_down_fails_naming_the_url(world, caplog):
    port = free_port()
    exc = _fails(world, caplog, _prometheus(world, port), SourceError, r"(?i)refused|cannot connect|connection",
                 within_s=30)
    assert f"127.0.0.1:{port}" in str(exc)
    assert world.check() == "unchanged"


@pytest.mark.parametrize(("answer", "match"), [
    ((500, "internal server error"), r"500"),
    ((200, '{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": '), r"(?i)json"),
], ids=["500", "malformed-json"])
def test_prometheus_failing_answers_fail_naming_the_cause(world, caplog, answer, match):
    with ScriptedServer([answer]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        exc = _fails(world, caplog, _prometheus(world, port), SourceError, match, within_s=30)
        assert len(server.requests) == 2, "one try and one retry"
        assert all(SECRET not in fields["_body"] for _, fields in server.requests)
    assert f"127.0.0.1:{port}" in str(exc)
    assert world.check() == "unchanged"


def test_prometheus_trickling_bytes_fails_within_the_deadline(world, caplog):
    with TrickleServer() as server:
        # two tries of 2 s and a 1 s back-off: the deadline, not the per-read timeout, must end it
        _fails(world, caplog, _prometheus(world, server.port), SourceError, r"(?i)deadline", within_s=12)
        assert server.connections == 2
    assert world.check() == "unchanged"


# ---------------------------------------------------------------------------
# MLflow away or hung: found at extract, before any training


def test_mlflow_down_fails_at_extract_within_seconds(world, caplog):
    port = free_port()
    settings = world.settings(mlflow={"tracking_uri": _secret_url(port)})
    exc = _fails(world, caplog, settings, SourceError, r"MLflow tracking server .* cannot be reached", within_s=10)
    assert f"127.0.0.1:{port}" in str(exc)
    assert world.check() == "unchanged"
    assert not list((world.data / "staging").rglob("backtests")), "nothing was trained"


def test_mlflow_hung_fails_at_extract_within_seconds(world, caplog):
    with SilentServer() as server:
        settings = world.settings(mlflow={"tracking_uri": _secret_url(server.port)})
        _fails(world, caplog, settings, SourceError, r"MLflow tracking server .* did not answer within 3 s",
               within_s=10)
    assert world.check() == "unchanged"
    assert not list((world.data / "staging").rglob("backtests")), "nothing was trained"


# ---------------------------------------------------------------------------
# Bad input files (source.kind: files, format: long)


def _demo_memory() -> pd.DataFrame:
    """``FILE_SERIES`` healthy demo memory series over the run's window, sorted; the victim first."""
    frame, series = generate_demo(pd.Timestamp(DATE, tz="UTC"), days=5, seed=0)
    keep = series[(series["metric"] == METRIC) & ~series["entity"].str.contains(BROKEN_ENTITY, regex=False)]
    ids = sorted(keep["unique_id"])[:FILE_SERIES]
    frame = frame[frame["unique_id"].isin(ids) & (frame["ds"] < pd.Timestamp(DATE, tz="UTC"))]
    return frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)


def _victim(frame: pd.DataFrame) -> str:
    return str(frame["unique_id"].iloc[0])


def _spoil(frame: pd.DataFrame, how: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """The frame with the victim's rows replaced by ``how(its rows)``."""
    victim = frame["unique_id"] == _victim(frame)
    return pd.concat([how(frame[victim].copy()), frame[~victim]], ignore_index=True)


def _set_y(values: Callable[[pd.DataFrame], np.ndarray | float]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def how(rows: pd.DataFrame) -> pd.DataFrame:
        rows["y"] = values(rows)
        return rows
    return how


def _every(k: int, value: float) -> Callable[[pd.DataFrame], np.ndarray]:
    def values(rows: pd.DataFrame) -> np.ndarray:
        y = rows["y"].to_numpy("float64").copy()
        y[::k] = value
        return y
    return values


def _duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    twice = rows.iloc[::10].copy()
    twice["y"] = twice["y"] * 1.5
    return pd.concat([rows, twice], ignore_index=True).sort_values("ds", kind="stable")


def _random_nan(share: float) -> Callable[[pd.DataFrame], np.ndarray]:
    def values(rows: pd.DataFrame) -> np.ndarray:
        y = rows["y"].to_numpy("float64").copy()
        y[np.random.default_rng(0).random(len(y)) < share] = np.nan
        return y
    return values


QUARANTINED = {
    # case: (how the victim is spoiled, what its reason says, where the reason is kept)
    "nan-30%": (_set_y(_random_nan(0.3)), r"NaN|missing|too few points on the frequency grid", "validation"),
    "nan-all": (_set_y(lambda rows: np.nan), r"NaN|missing|no values", "validation"),
    "plus-inf": (_set_y(_every(50, np.inf)), r"infinite values \(\+inf/-inf\)", "validation"),
    "minus-inf": (_set_y(_every(50, -np.inf)), r"infinite values \(\+inf/-inf\)", "validation"),
    "1e300": (_set_y(_every(50, 1e300)), r"absurd values: .* e\.g\. 1e\+300", "validation"),
    "negative": (_set_y(lambda rows: -rows["y"].to_numpy()), r"values below 0", "validation"),
    "duplicates": (_duplicates, r"duplicate timestamps", "validation"),
    "constant-zero": (_set_y(lambda rows: 0.0), r"constant series.* finite values are 0", "validation"),
    # its exporter died six hours before the others' (completeness 0.94): not published as current
    "six-hours-behind": (lambda rows: rows[rows["ds"] < pd.Timestamp(DATE, tz="UTC") - pd.Timedelta("6h")],
                         r"stale: no recent data: last point .*, 6h 5m before the data interval end", "validation"),
    # a series may start late (a new pod): completeness counts from its first point, so ten
    # points pass validation and the backtest leaves the series out for too short a history
    "ten-points": (lambda rows: rows.tail(10), r"too short: 10 values", "backtest"),
}


def _reasons(world: World, where: str) -> dict[str, list[str]]:
    """Series left out of the date's run, with their reasons: validation's quarantine, or the backtest's skips."""
    if where == "validation":
        return world.validation()["reasons"]
    report = json.loads((world.data / "runs" / KEY / "backtest_report.json").read_text())
    out: dict[str, list[str]] = {}
    for skipped in report.get("skipped") or []:
        out.setdefault(skipped["unique_id"], []).append(skipped["reason"])
    return out


@pytest.mark.parametrize("case", list(QUARANTINED))
def test_a_bad_series_is_quarantined_with_its_reason(world, caplog, case):
    how, reason, where = QUARANTINED[case]
    frame = _demo_memory()
    victim = _victim(frame)
    path = world.root / "input" / "series.csv"
    path.parent.mkdir()
    _spoil(frame, how).to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    settings = world.settings(source={"kind": "files", "format": "long", "path": str(path)})
    result = _succeeds(world, caplog, settings)
    assert result["published"], result
    reasons = _reasons(world, where)
    assert victim in reasons, f"{victim} is left out without a reason in the {where} report: {reasons}"
    assert any(_matches(reason, text) for text in reasons[victim]), reasons[victim]
    assert set(reasons) == {victim}, f"only the spoiled series is left out: {reasons}"
    assert world.check().startswith("new run")
    forecasts = pd.read_parquet(world.data / "latest" / "forecasts.parquet")
    assert set(forecasts["unique_id"]) == set(frame["unique_id"]) - {victim}
    values = forecasts.filter(regex=r"^yhat").to_numpy("float64")
    assert np.isfinite(values).all() and (values >= 0).all(), "published values are finite and never negative"


def _matches(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def _write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ")


def _text_in_y(frame: pd.DataFrame) -> str:
    frame = frame.astype({"y": object})
    frame.loc[frame.index[::100], "y"] = "about 1.2 GB"
    return _csv(frame)


def _epoch_ms(frame: pd.DataFrame) -> str:
    return frame.assign(ds=frame["ds"].astype("int64") // 10**6).to_csv(index=False)


def _infinity_row(frame: pd.DataFrame) -> str:
    frame = frame.astype({"ds": object})
    frame.loc[frame.index[7], "ds"] = "9999-12-31T00:00:00Z"
    return frame.to_csv(index=False)


UNREADABLE = {
    "empty": (lambda frame: "", r"is empty"),
    "epoch-ms": (_epoch_ms, r"outside the range a timestamp can hold .* row\(s\) \[1, 2, 3\].*Unix milliseconds"),
    "infinity-date": (_infinity_row, r"9999-12-31T00:00:00Z'\] at row\(s\) \[8\]"),
    "header-only": (lambda frame: "unique_id,ds,y\n", r"header but no rows"),
    "wrong-columns": (lambda frame: _csv(frame.rename(columns={"ds": "timestamp", "y": "value"})),
                      r"missing column\(s\) \['ds', 'y'\]"),
    "text-in-y": (_text_in_y, r"non-numeric value\(s\) in column 'y', e\.g\. \['about 1\.2 GB'"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_file_fails_naming_the_file_and_the_cause(world, caplog, case):
    write, match = UNREADABLE[case]
    path = _write_text(world.root / "input" / "series.csv", write(_demo_memory()))
    settings = world.settings(source={"kind": "files", "format": "long", "path": str(path)})
    exc = _fails(world, caplog, settings, DataError, match)
    assert str(path) in str(exc)
    assert world.check() == "unchanged"


def test_a_bom_and_semicolon_file_is_read_as_it_is(world, caplog):
    """A spreadsheet export (UTF-8 BOM, ``;`` between fields) is read like any long-format CSV."""
    frame = _demo_memory()
    path = _write_text(world.root / "input" / "series.csv", b"\xef\xbb\xbf" + frame.to_csv(
        index=False, sep=";", date_format="%Y-%m-%dT%H:%M:%SZ").encode("utf-8"))
    settings = world.settings(source={"kind": "files", "format": "long", "path": str(path)})
    with caplog.at_level("INFO"):
        result = pipeline.run_nightly(DATE, settings)
    assert result["published"], result
    raw = pd.read_parquet(world.data / "runs" / KEY / "raw.parquet")
    assert sorted(raw["unique_id"].unique()) == sorted(frame["unique_id"].unique())
    assert world.validation()["reasons"] == {}
    assert world.check().startswith("new run")


def test_the_consistency_check_catches_a_mix_a_leftover_and_a_leak(world):
    """``assert_published_consistent`` fails on what the faults could leave, so its passing means something."""
    assert world.check() == "unchanged"
    latest = world.data / "latest"
    original = (latest / "actuals.parquet").read_bytes()
    (latest / "actuals.parquet").write_bytes((latest / "forecasts.parquet").read_bytes())
    with pytest.raises(AssertionError, match=r"latest/actuals.parquet differs from .*a mix of two runs"):
        world.check()
    (latest / "actuals.parquet").write_bytes(original)
    (latest / ".tmp-0a1b-forecasts.parquet").write_bytes(b"half")
    with pytest.raises(AssertionError, match=r"temporary files left: \['latest/.tmp-0a1b-forecasts.parquet'\]"):
        world.check()
    (latest / ".tmp-0a1b-forecasts.parquet").unlink()
    (world.mlflow / "artifacts" / "leak.bin").write_bytes(b"\x00" + SECRET.encode() + b"\x00")
    with pytest.raises(AssertionError, match=r"planted secret is stored in: .*leak\.bin"):
        world.check()


def test_the_planted_secret_is_searched_for(tmp_path):
    """The secret search finds the password inside binary files in subfolders, so a clean result means something."""
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "a.bin").write_bytes(b"\x00\x01" + SECRET.encode() + b"\xff")
    (tmp_path / "b.txt").write_text("http://fault-user:***@127.0.0.1:9/")
    assert files_with([tmp_path], SECRET) == [tmp_path / "deep" / "er" / "a.bin"]


# ---------------------------------------------------------------------------
# Stale sources, timestamps off the grid, folders with a bad file, overlapping exports


@pytest.mark.parametrize("behind", ["6h", "2D"])
def test_a_dead_exporter_fails_before_training_and_publishes_nothing(world, caplog, behind):
    """Every series stopped together: the run fails at validate naming the source, its last time and the setting."""
    frame = _demo_memory()
    frame = frame[frame["ds"] < pd.Timestamp(DATE, tz="UTC") - pd.Timedelta(behind)]
    path = _write_text(world.root / "input" / "series.csv", _csv(frame))
    settings = world.settings(source={"kind": "files", "format": "long", "path": str(path)})
    exc = _fails(world, caplog, settings, ValidationFailed, r"is stale")
    text = str(exc)
    assert f"the source files {path} (format long) is stale" in text
    assert f"its last timestamp is {frame['ds'].max().isoformat()}" in text
    assert "validation.max_staleness" in text and "validation.max_stale_share" in text
    assert world.check() == "unchanged"
    assert not list((world.data / "staging").rglob("backtests")), "nothing was trained"


def test_timestamps_jittered_by_100_ms_keep_every_series(world, caplog):
    frame = _demo_memory()
    jitter = np.random.default_rng(0).uniform(-0.1, 0.1, len(frame))
    frame = frame.assign(ds=frame["ds"] + pd.to_timedelta(jitter, unit="s"))
    path = _write_text(world.root / "input" / "series.csv",
                       frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ"))
    result = _succeeds(world, caplog, world.settings(source={"kind": "files", "format": "long", "path": str(path)}))
    assert result["published"], result
    assert world.validation()["reasons"] == {}
    forecasts = pd.read_parquet(world.data / "latest" / "forecasts.parquet")
    assert set(forecasts["unique_id"]) == set(frame["unique_id"])
    assert world.check().startswith("new run")


def test_a_folder_with_one_bad_file_publishes_the_good_ones(world, caplog):
    frame = _demo_memory()
    folder = world.root / "input"
    ids = sorted(frame["unique_id"].unique())
    for i, uid in enumerate(ids):
        _write_text(folder / f"part-{i}.csv", _csv(frame[frame["unique_id"] == uid]))
    bad = _write_text(folder / "part-0.csv", _infinity_row(frame[frame["unique_id"] == ids[0]]))
    result = _succeeds(world, caplog, world.settings(source={"kind": "files", "format": "long", "path": str(folder)}))
    assert result["published"], result
    forecasts = pd.read_parquet(world.data / "latest" / "forecasts.parquet")
    assert set(forecasts["unique_id"]) == set(ids[1:])
    run = json.loads((world.data / "runs" / KEY / "run.json").read_text())
    (skipped,) = run["source"]["skipped"]
    assert skipped["file"] == str(bad) and "9999-12-31" in skipped["reason"]
    assert world.check().startswith("new run")


def test_overlapping_identical_exports_publish(world, caplog):
    frame = _demo_memory()
    cut = pd.Timestamp(DATE, tz="UTC") - pd.Timedelta("1D")
    folder = world.root / "input"
    _write_text(folder / "export-1.csv", _csv(frame[frame["ds"] < cut + pd.Timedelta("1h")]))
    _write_text(folder / "export-2.csv", _csv(frame[frame["ds"] >= cut]))
    result = _succeeds(world, caplog, world.settings(source={"kind": "files", "format": "long", "path": str(folder)}))
    assert result["published"], result
    summary = world.validation()["summary"]
    assert world.validation()["reasons"] == {}
    assert summary["duplicates_dropped"] == 12 * FILE_SERIES
    assert "export-1.csv and export-2.csv overlap from" in caplog.text
    assert world.check().startswith("new run")
    freshness = json.loads((world.data / "latest" / "summary.json").read_text())["data_freshness"]
    assert freshness["data_age_s"] == 300 and freshness["series_stale"] == 0
    assert freshness["duplicates_dropped"] == 12 * FILE_SERIES


def test_overlapping_exports_that_disagree_fail_naming_the_files_and_the_overlap(world, caplog):
    frame = _demo_memory()
    cut = pd.Timestamp(DATE, tz="UTC") - pd.Timedelta("1D")
    folder = world.root / "input"
    _write_text(folder / "export-1.csv", _csv(frame[frame["ds"] < cut + pd.Timedelta("1h")]))
    later = frame[frame["ds"] >= cut]
    _write_text(folder / "export-2.csv", _csv(later.assign(y=later["y"] * 1.01)))
    settings = world.settings(source={"kind": "files", "format": "long", "path": str(folder)})
    exc = _fails(world, caplog, settings, ValidationFailed, r"duplicate timestamps")
    assert "export-1.csv and export-2.csv overlap from" in str(exc) and "with other values" in str(exc)
    assert world.check() == "unchanged"
