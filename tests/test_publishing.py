"""Publishing as one transaction: run folder, latest/ and journal move together or not at all."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from fault_support import fill_disk

from foresight_lib.errors import RunLocked, SourceError
from foresight_lib.runs import transaction as publishing
from foresight_lib.runs.storage import DataRoot, RunStore

KEY = "2024-03-15T020000Z"
NAMES = ["forecasts", "summary.json"]


def _attempt(root: Path, attempt: str, value: float, key: str = KEY) -> RunStore:
    store = RunStore(str(root), key, attempt=attempt)
    store.write_frame("forecasts", pd.DataFrame({"unique_id": ["cpu/a"], "yhat": [value]}))
    store.write_json("summary.json", {"attempt": attempt})
    return store


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _published(root: Path, attempt: str, value: float) -> None:
    store = _attempt(root, attempt, value)
    publishing.run_transaction(store, {}, lambda tx: None, NAMES, {"data_interval_end": "2024-03-15T02:00:00+00:00"})


def test_a_transaction_promotes_the_attempt_and_switches_latest(tmp_path):
    _published(tmp_path, "a1", 1.0)
    assert DataRoot(str(tmp_path)).read_latest("forecasts")["yhat"].tolist() == [1.0]
    assert RunStore(str(tmp_path), KEY).read_json("summary.json") == {"attempt": "a1"}
    assert not (tmp_path / "staging" / "runs" / KEY / "a1").exists()

    _published(tmp_path, "a2", 2.0)
    assert DataRoot(str(tmp_path)).read_latest("forecasts")["yhat"].tolist() == [2.0]
    manifest = DataRoot(str(tmp_path)).latest_manifest()
    assert manifest["run_folder"] == str(tmp_path / "runs" / KEY)
    assert manifest["data_interval_end"] == "2024-03-15T02:00:00+00:00"
    assert not list(tmp_path.rglob(".tmp-*"))
    assert not (tmp_path / "locks" / publishing.JOURNAL).exists()
    assert [p.name for p in (tmp_path / "staging" / "runs" / KEY).iterdir()] == []


def test_a_failure_before_the_switch_changes_nothing(tmp_path):
    _published(tmp_path, "a1", 1.0)
    before = {"latest": _files(tmp_path / "latest"), "run": _files(tmp_path / "runs" / KEY)}
    failed = _attempt(tmp_path, "a2", 2.0)

    def register(tx):
        raise RuntimeError("registry refused")

    with pytest.raises(RuntimeError, match="registry refused"):
        publishing.run_transaction(failed, {}, register, NAMES, None)
    assert _files(tmp_path / "latest") == before["latest"]
    assert _files(tmp_path / "runs" / KEY) == before["run"]
    assert failed.exists("forecasts")  # the failed attempt stays where it was, for a look
    assert not (tmp_path / "locks" / publishing.JOURNAL).exists()


def test_a_publish_overtaken_before_the_switch_rolls_back(tmp_path):
    _published(tmp_path, "a1", 1.0)
    before = {"latest": _files(tmp_path / "latest"), "run": _files(tmp_path / "runs" / KEY)}
    lock, token = publishing.publish_lock(DataRoot(str(tmp_path)), pd.Timedelta("1h"), pd.Timedelta(0), "r2")

    def register(tx):  # meanwhile the lock is deleted and taken by another publish
        lock._delete()
        publishing.publish_lock(DataRoot(str(tmp_path)), pd.Timedelta("1h"), pd.Timedelta(0), "r3")

    with pytest.raises(RunLocked, match="overtaken"):
        publishing.run_transaction(_attempt(tmp_path, "a2", 2.0), {}, register, NAMES, None,
                                   still_holding=lambda: lock.check(token))
    assert _files(tmp_path / "latest") == before["latest"]
    assert _files(tmp_path / "runs" / KEY) == before["run"]
    assert not (tmp_path / "locks" / publishing.JOURNAL).exists()


def test_the_publish_lock_names_its_process_and_a_retry_of_the_same_run_waits_for_it(tmp_path):
    root = DataRoot(str(tmp_path))
    lock, token = publishing.publish_lock(root, pd.Timedelta("1h"), pd.Timedelta(0), "scheduled__x")
    assert lock.owner().pid == os.getpid()
    # A second try of the same Airflow run does not take over a publish whose process lives.
    with pytest.raises(RunLocked, match="did not end within"):
        publishing.publish_lock(root, pd.Timedelta("1h"), pd.Timedelta(seconds=1), "scheduled__x")
    assert lock.owner().attempt == token


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root, as in CI); skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("leave_pages", [0, 1, 2, 3, 4])
def test_a_full_disk_during_publish_changes_nothing(small_disk, leave_pages):
    _published(small_disk, "a1", 1.0)
    before = {"latest": _files(small_disk / "latest"), "run": _files(small_disk / "runs" / KEY)}
    failed = _attempt(small_disk, "a2", 2.0)
    fill_disk(small_disk, leave_pages * 4096)
    try:
        publishing.run_transaction(failed, {}, lambda tx: None, NAMES, None)
    except SourceError as exc:
        assert "No space left on device" in str(exc) or "no space" in str(exc).lower()
        assert _files(small_disk / "latest") == before["latest"]
        assert _files(small_disk / "runs" / KEY) == before["run"]
        assert not (small_disk / "locks" / publishing.JOURNAL).exists()
    else:  # enough room after all: then it is the whole new run
        assert DataRoot(str(small_disk)).read_latest("forecasts")["yhat"].tolist() == [2.0]
    assert not list(small_disk.rglob(".tmp-*"))


def test_an_interrupted_publish_is_undone_before_the_switch(tmp_path):
    _published(tmp_path, "a1", 1.0)
    before = {"latest": _files(tmp_path / "latest"), "run": _files(tmp_path / "runs" / KEY)}
    attempt = _attempt(tmp_path, "a2", 2.0)
    tx = publishing.Transaction.begin(attempt, {})
    tx.promote()  # the process dies here: the new run folder is in place, latest/ is not switched
    assert RunStore(str(tmp_path), KEY).read_json("summary.json") == {"attempt": "a2"}

    assert publishing.recover(DataRoot(str(tmp_path))) == "rolled back"
    assert _files(tmp_path / "latest") == before["latest"]
    assert _files(tmp_path / "runs" / KEY) == before["run"]
    assert attempt.exists("forecasts")
    assert publishing.recover(DataRoot(str(tmp_path))) is None


def test_an_interrupted_switch_is_finished(tmp_path):
    _published(tmp_path, "a1", 1.0)
    attempt = _attempt(tmp_path, "a2", 2.0)
    tx = publishing.Transaction.begin(attempt, {})
    tx.promote()
    committed = attempt.committed()
    tx.journal.staged = [*committed.stage_latest(NAMES), committed.stage_manifest(committed.manifest_record(NAMES))]
    tx.journal.phase = "switching"
    tx.journal.save()
    _, tmp, target = tx.journal.staged[0]
    os.replace(tmp, target)  # one file switched, then the process dies

    assert publishing.recover(DataRoot(str(tmp_path))) == "completed"
    root = DataRoot(str(tmp_path))
    assert root.read_latest("forecasts")["yhat"].tolist() == [2.0]
    assert (tmp_path / "latest" / "summary.json").read_text().strip().endswith("}")
    assert '"a2"' in (tmp_path / "latest" / "summary.json").read_text()
    assert not list(tmp_path.rglob(".tmp-*"))
    assert not (tmp_path / "staging" / "runs" / KEY / ".previous-a2").exists()


def test_only_newer_complete_runs_reach_latest(tmp_path):
    root = DataRoot(str(tmp_path))
    assert publishing.decide("auto", "2024-03-14T02:00:00+00:00", [], root)[0]
    _published(tmp_path, "a1", 1.0)  # latest/ now holds data up to 2024-03-15 02:00
    go, why = publishing.decide("auto", "2024-03-14T02:00:00+00:00", [], root)
    assert not go and "holds a newer run" in why
    assert publishing.decide("auto", "2024-03-15T02:00:00+00:00", [], root)[0]  # a re-run of the same date
    go, why = publishing.decide("auto", "2024-03-16T02:00:00+00:00", ["models ['lstm'] instead of [...]"], root)
    assert not go and "ad-hoc" in why
    assert publishing.decide("always", "2024-03-14T02:00:00+00:00", ["x"], root)[0]
    assert not publishing.decide("never", "2024-03-16T02:00:00+00:00", [], root)[0]


def test_ad_hoc_differences_name_what_departs_from_the_configuration():
    from foresight_lib.config import load_config

    base = load_config(overrides={"models": ["naive", "ensemble"]})
    assert publishing.ad_hoc_differences({"models": ["ensemble", "naive"], "metrics": [], "overrides": {}}, base) == []
    found = publishing.ad_hoc_differences({"models": ["naive"], "overrides": {"history_days": 3}}, base)
    assert found == ["models ['naive'] instead of ['naive', 'ensemble']", "settings overridden: ['history_days']"]


class _DeleteIgnored:
    """A filesystem whose ``delete_file`` reports success and removes nothing (an eventually consistent store)."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def delete_file(self, path):
        return None


def test_a_journal_that_survives_its_deletion_fails_loudly_instead_of_being_undone_later(tmp_path, caplog):
    root = DataRoot(str(tmp_path))
    journal = publishing.Journal(root=root, run_key=KEY, attempt="a1", phase="switching")
    journal.save()
    root.fs = _DeleteIgnored(root.fs)
    with pytest.raises(SourceError, match="still there after its deletion.*phase switching"):
        journal.delete()
    root.fs = root.fs._fs
    journal.delete()
    assert publishing.Journal.load(root) is None
    journal.delete()  # already gone: nothing to do


def test_an_undo_names_the_process_and_what_it_discards(tmp_path, caplog):
    store = _attempt(tmp_path, "a1", 1.0)
    journal = publishing.Journal(root=store, run_key=KEY, attempt="a1")
    journal.save()
    with caplog.at_level("WARNING", logger="foresight_lib.runs.transaction"):
        assert publishing.recover(store) == "rolled back"
    undo = [r.getMessage() for r in caplog.records if r.getMessage().startswith("undoing the publish")]
    assert undo and f"pid {os.getpid()}" in undo[0] and KEY in undo[0], caplog.text
