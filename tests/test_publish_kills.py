"""A publish killed (SIGKILL) at every step: what each reader sees before any next run, then after the teardown.

One baseline run (two demo metrics, three days, the fastest models) is published, and the
next date's run is taken up to its publish once; each case restores that state at the same
paths, forks a process that publishes and kills itself with SIGKILL at one point (after
each journal write, each registration, each alias move, each rename of ``latest/``, the
manifest's among them), and checks, with nothing recovered yet:

- every reader of ``latest/`` (the files, the summary, the manifest, the dashboard's
  overview, the Prometheus exposition, the predict endpoint) sees the previous publish
  whole or the new one whole, the same one for all;
- then the DAG's ``release`` teardown finishes or undoes the publish, after which the
  champion aliases agree with ``latest/`` again and nothing half-done is left
  (``fault_support.assert_published_consistent``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_support import assert_published_consistent, latest_files, snapshot

from foresight_lib import pipeline
from foresight_lib.runs import storage, transaction
from foresight_lib.runs.storage import LATEST, MANIFEST, DataRoot
from foresight_lib.tracking.registry import registered_model_name

pytestmark = pytest.mark.slow

BASE_DATE = "2024-03-15T02:00:00"
DATE = "2024-03-16T02:00:00"
KEY = pipeline.run_key_for(DATE)
METRICS = ["container_cpu_usage_seconds_total", "container_memory_working_set_bytes"]
PUBLISHED = ["forecasts.parquet", "leaderboard.parquet", "recommendations.parquet", "actuals.parquet", "summary.json"]
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

POINTS = [
    # (what is counted, after which call the process is killed, does the publish stand after the teardown?)
    ("journal", 1, False),  # the journal begun: aliases snapshot, nothing registered
    ("register", 1, False),  # the first version registered, not yet journalled, alias not moved
    ("alias", 1, False),  # the first alias moved: the registry ahead of latest/
    ("journal", 2, False),  # the first version journalled
    ("register", 2, False),
    ("alias", 2, False),  # every alias moved
    ("journal", 3, False),
    ("journal", 4, False),  # the run folder's promotion recorded
    ("promote", 1, False),  # the attempt is the date's run folder
    ("journal", 5, True),  # phase switching: every file staged, no rename yet
    *[("rename", k, True) for k in range(1, len(PUBLISHED) + 1)],  # each rename; the last before the manifest
    ("rename", len(PUBLISHED) + 1, True),  # after the manifest, before the journal is deleted
]


def _settings(root: Path) -> dict:
    return {"data_root": str(root / "data"), "history_days": 3, "models": ["naive", "seasonal_naive"],
            "source": {"kind": "demo", "metrics": METRICS},
            "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
                       "artifact_location": str(root / "mlflow" / "artifacts")}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Iterator[dict]:
    """``<work>/ready``: the baseline published and the next date evaluated, not published; cases run in ``case``."""
    work = tmp_path_factory.mktemp("kills")
    case = work / "case"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        for name, value in THREADS.items():
            patch.setenv(name, value)
        settings = _settings(case)
        assert pipeline.run_nightly(BASE_DATE, settings)["published"]
        run = pipeline.extract(f"local__{KEY}", None, DATE, overrides=settings)
        run = pipeline.validate(run)
        run = pipeline.build_features(run)
        trained = [pipeline.train(run, **task, tasks_at_once=1) for task in pipeline.train_tasks(run)]
        for task in pipeline.rightsize_tasks(run):
            pipeline.rightsize(run, **task)
        run = pipeline.evaluate(run, trained)
        shutil.copytree(case, work / "ready", symlinks=True)
        yield {"work": work, "case": case, "settings": settings, "run": run}


def _restore(prepared: dict) -> Path:
    case = prepared["case"]
    if case.exists():
        shutil.rmtree(case)
    shutil.copytree(prepared["work"] / "ready", case, symlinks=True)
    return case


def _kill_at(what: str, nth: int) -> None:
    """In the forked child: SIGKILL this process right after the ``nth`` call of ``what``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    calls = {"n": 0}

    def count() -> None:
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    def after(owner, attribute: str):
        real = getattr(owner, attribute)

        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            count()
            return out
        setattr(owner, attribute, wrapped)

    if what == "journal":
        after(transaction.Journal, "save")
    elif what == "register":
        after(mlflow, "register_model")
    elif what == "alias":
        after(MlflowClient, "set_registered_model_alias")
    elif what == "promote":
        after(storage.RunStore, "promote")
    elif what == "rename":
        def switch_latest(self, staged):
            for _name, tmp, target in staged:
                if self._exists(tmp):
                    self.fs.move(tmp, target)
                    count()
        storage.DataRoot.switch_latest = switch_latest


def _publish_killed(run: dict, what: str, nth: int) -> None:
    pid = os.fork()
    if pid == 0:  # the child publishes until it kills itself
        code = 3
        try:
            _kill_at(what, nth)
            pipeline.publish(run)
        except BaseException:  # noqa: BLE001 - reported by the exit code
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"the publish was not killed after {what} #{nth} (exit status {status})"


def _new_file(case: Path, attempt: str, name: str) -> bytes | None:
    for folder in (case / "data" / "runs" / KEY, case / "data" / "staging" / "runs" / KEY / attempt):
        if (folder / name).is_file() and json.loads((folder / "run.json").read_text()).get("attempt") == attempt:
            return (folder / name).read_bytes()
    return None


def _what_readers_see(case: Path, settings: dict, before: dict[str, bytes], attempt: str) -> str:
    """``old`` or ``new``: what every reader sees, the same for all of them, each file whole."""
    from foresight_lib.serving import dashboard, exposition
    from foresight_lib.serving.operations.predict import ModelCache

    root = DataRoot(settings["data_root"])
    seen = {name: root._read_published(root._join(LATEST, name), name) for name in [*PUBLISHED, MANIFEST]}
    if seen == {name: before[name] for name in seen}:
        state = "old"
    else:
        state = "new"
        for name, data in seen.items():
            if name != MANIFEST:
                assert data == _new_file(case, attempt, name), f"latest/{name} is neither the old nor the new one"
        assert json.loads(seen[MANIFEST])["run_id"] == KEY
    summary = json.loads(seen["summary.json"])
    assert root.read_latest_json("summary.json") == summary
    assert pipeline.latest_summary(settings) == summary  # what `foresight summary` prints
    assert root.latest_manifest() == json.loads(seen[MANIFEST])
    # the dashboard's overview and the Prometheus exposition
    overview = dashboard.overview(settings["data_root"])
    assert overview["run"]["run_key"] == json.loads(seen[MANIFEST])["run_id"]
    assert overview["run"]["mlflow_parent_run"] == summary["mlflow_parent_run"]
    assert not overview["errors"], overview["errors"]
    snap = exposition.LatestFiles(settings["data_root"]).snapshot()
    assert snap.run_id == json.loads(seen[MANIFEST])["run_id"]
    assert not snap.errors, snap.errors
    forecasts = root.read_latest("forecasts")
    assert snap.forecasts["yhat"].to_numpy().tolist() == forecasts["yhat"].to_numpy().tolist()
    # the predict endpoint serves the champion versions the summary names, and they exist
    cache = ModelCache()
    assert cache.published(settings["data_root"]) == summary["champion_versions"]
    for metric, version in summary["champion_versions"].items():
        assert cache.resolve(registered_model_name(metric), None, version) == (version, None)
    return state


@pytest.mark.parametrize(("what", "nth", "stands"), POINTS, ids=[f"{w}-{n}" for w, n, _ in POINTS])
def test_a_publish_killed_at_each_step_is_consistent_at_once_and_after_the_teardown(prepared, what, nth, stands):
    case = _restore(prepared)
    settings, run = prepared["settings"], prepared["run"]
    uri = settings["mlflow"]["tracking_uri"]
    before = snapshot(case / "data", uri)
    before_files = latest_files(case / "data")
    _publish_killed(run, what, nth)

    seen = _what_readers_see(case, settings, before_files, run["attempt"])
    assert seen == ("new" if stands else "old")

    pipeline.release(run)  # the DAG's teardown, in another process than the killed one
    outcome = assert_published_consistent(case / "data", uri, before)
    assert outcome.startswith("new run") == stands, outcome
    assert not (case / "data" / "locks" / transaction.JOURNAL).exists()
    assert [p.name for p in (case / "data" / LATEST).iterdir() if p.name.startswith(".tmp-")] == []
    assert _what_readers_see(case, settings, before_files, run["attempt"]) == seen
    if not stands:  # no version of the undone publish is left
        assert snapshot(case / "data", uri).versions == before.versions
