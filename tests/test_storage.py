"""Run folders: atomic writes, reset, publishing to latest, safe run ids, S3 path handling."""
from __future__ import annotations

import os

import pandas as pd
import pyarrow.fs as pafs
import pytest
from pyarrow._fs import _MockFileSystem

from foresight_lib.errors import DataError, SourceError
from foresight_lib.locations import safe_run_id, split_data_root, unsafe_run_id
from foresight_lib.runs.storage import DataRoot, RunStore

RUN_ID = "scheduled__2024-03-01T02:00:00+00:00"


def frame(n: int = 3, start: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({
        "unique_id": ["cpu/a"] * n,
        "ds": pd.date_range("2024-03-01", periods=n, freq="5min", tz="UTC"),
        "y": [start + i for i in range(n)],
    })


def all_files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class FailingFS:
    """A local filesystem whose output streams write a little and then break (a crash mid-write)."""

    def __init__(self):
        self.fs = pafs.LocalFileSystem()

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def open_output_stream(self, path):
        stream = self.fs.open_output_stream(path)

        class Broken:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                stream.close()
                return False

            def write(self, data):
                stream.write(data[: len(data) // 2])
                raise OSError("disk full")

        return Broken()


@pytest.mark.parametrize("run_id", [
    RUN_ID, "manual__2024-03-01T10:11:12.123456+00:00", "backfill__2024-02-01T00:00:00+00:00",
    "a/b\\c", "..", ".hidden", "tilde~7E", "émoji ✓",
])
def test_safe_run_id_is_a_plain_reversible_name(run_id):
    safe = safe_run_id(run_id)
    assert all(c.isalnum() or c in "_-.~" for c in safe)
    assert not safe.startswith(".")
    assert unsafe_run_id(safe) == run_id


def test_safe_run_id_examples_and_limits():
    assert safe_run_id(RUN_ID) == "scheduled__2024-03-01T02~3A00~3A00~2B00~3A00"
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(safe_run_id(long_a)) <= 180 and safe_run_id(long_a) != safe_run_id(long_b)
    with pytest.raises(DataError, match="empty run id"):
        safe_run_id(" ")


def test_frames_files_and_json_round_trip(tmp_path):
    store = RunStore(str(tmp_path), RUN_ID)
    df = frame()
    uri = store.write_frame("raw", df)
    assert uri == str(tmp_path / "runs" / safe_run_id(RUN_ID) / "raw.parquet")
    read = store.read_frame("raw")
    assert isinstance(read["unique_id"].dtype, pd.CategoricalDtype)  # 2 bytes a row instead of the id's text
    assert list(read["unique_id"].cat.categories) == sorted(df["unique_id"].unique())
    pd.testing.assert_frame_equal(read.astype({"unique_id": str}), df, check_dtype=False)
    assert str(read["ds"].dtype).endswith("UTC]")
    store.write_frame("backtests/arima", df)
    store.write_bytes("validation/report.html", b"<html></html>")
    store.write_json("validation/summary.json", {"when": pd.Timestamp("2024-03-01", tz="UTC"), "n": 2})
    assert store.read_bytes("validation/report.html") == b"<html></html>"
    assert store.read_json("validation/summary.json") == {"when": "2024-03-01 00:00:00+00:00", "n": 2}
    assert store.exists("backtests/arima") and not store.exists("features")
    assert store.list_files() == ["backtests/arima.parquet", "raw.parquet", "validation/report.html",
                                  "validation/summary.json"]
    assert store.uri("backtests/arima").endswith("/backtests/arima.parquet")


def test_missing_dataset_and_bad_names(tmp_path):
    store = RunStore(str(tmp_path), RUN_ID)
    with pytest.raises(DataError, match="dataset 'features' .* not found"):
        store.read_frame("features")
    for bad in ("../escape", "/abs", "a//b", "", ".tmp-x"):
        with pytest.raises(DataError, match="invalid dataset or file name"):
            store.write_bytes(bad, b"x")
    with pytest.raises(DataError, match="cannot be stored as Parquet"):
        store.write_frame("raw", pd.DataFrame({"mixed": [1, "a"]}))
    assert not (tmp_path / "runs").exists() or all_files(tmp_path) == []


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    RunStore(str(tmp_path), RUN_ID).write_frame("raw", frame(start=1.0))
    before = all_files(tmp_path)
    broken = RunStore(str(tmp_path), RUN_ID, filesystem=FailingFS())
    with pytest.raises(SourceError, match="disk full"):
        broken.write_frame("raw", frame(n=50, start=100.0))
    with pytest.raises(SourceError):
        broken.write_bytes("validation/report.html", b"<html>" * 100)
    assert all_files(tmp_path) == before  # no temp file, no half-written report
    assert RunStore(str(tmp_path), RUN_ID).read_frame("raw")["y"].tolist() == [1.0, 2.0, 3.0]


def test_overwrite_replaces_whole_file(tmp_path):
    store = RunStore(str(tmp_path), RUN_ID)
    store.write_frame("raw", frame(n=10))
    store.write_frame("raw", frame(n=2, start=7.0))
    assert store.read_frame("raw")["y"].tolist() == [7.0, 8.0]
    assert not any(".tmp-" in f for f in all_files(tmp_path))


def test_an_attempt_replaces_only_its_own_date_and_only_when_promoted(tmp_path):
    one = RunStore(str(tmp_path), RUN_ID)
    other = RunStore(str(tmp_path), "scheduled__2024-03-02T02:00:00+00:00")
    one.write_frame("raw", frame())
    one.write_frame("backtests/ets", frame())
    other.write_frame("raw", frame())

    attempt = RunStore(str(tmp_path), RUN_ID, attempt="20240301T030000Z-abc123")
    assert attempt.uri() == str(tmp_path / "staging" / "runs" / safe_run_id(RUN_ID) / "20240301T030000Z-abc123")
    attempt.write_frame("raw", frame(start=5.0))
    assert one.read_frame("raw")["y"].iloc[0] == 0.0  # the date's folder is untouched while the attempt runs
    assert one.attempts() == ["20240301T030000Z-abc123"]

    promotion = attempt.promote()
    assert one.list_files() == ["raw.parquet"] and one.read_frame("raw")["y"].iloc[0] == 5.0
    assert promotion.rollback()
    assert one.list_files() == ["backtests/ets.parquet", "raw.parquet"]
    assert attempt.read_frame("raw")["y"].iloc[0] == 5.0

    attempt.promote().commit()
    assert one.list_files() == ["raw.parquet"]
    assert other.list_files() == ["raw.parquet"]
    assert one.attempts() == []
    with pytest.raises(DataError, match="only an attempt is promoted"):
        one.promote()


def test_publish_latest_replaces_after_complete_copy(tmp_path):
    first = RunStore(str(tmp_path), "run-1")
    first.write_frame("forecasts", frame(start=1.0))
    first.write_frame("recommendations", frame(start=1.0))
    first.publish_latest(["forecasts", "recommendations"])
    root = DataRoot(str(tmp_path))
    assert root.read_latest("forecasts")["y"].iloc[0] == 1.0
    assert root.latest_manifest()["run_id"] == "run-1"

    second = RunStore(str(tmp_path), "run-2")
    second.write_frame("forecasts", frame(start=2.0))
    with pytest.raises(DataError, match="cannot publish \\['recommendations'\\]"):
        second.publish_latest(["forecasts", "recommendations"])
    assert root.read_latest("forecasts")["y"].iloc[0] == 1.0  # nothing published from a half-done run
    assert root.latest_manifest()["run_id"] == "run-1"

    second.write_frame("recommendations", frame(start=2.0))
    second.write_bytes("validation/report.html", b"<p>ok</p>")
    published = second.publish_latest(["forecasts", "recommendations", "validation/report.html"])
    assert published["forecasts"] == str(tmp_path / "latest" / "forecasts.parquet")
    assert second.read_latest("recommendations")["y"].iloc[0] == 2.0
    assert (tmp_path / "latest" / "validation" / "report.html").read_bytes() == b"<p>ok</p>"
    assert root.latest_manifest()["names"] == ["forecasts", "recommendations", "validation/report.html"]
    assert not any(".tmp-" in f for f in all_files(tmp_path))
    assert first.read_frame("forecasts")["y"].iloc[0] == 1.0  # the run folders stay as they were


def test_read_latest_before_any_publish(tmp_path):
    root = DataRoot(str(tmp_path))
    assert root.latest_manifest() is None
    with pytest.raises(DataError, match="published dataset 'forecasts' not found"):
        root.read_latest("forecasts")


def test_data_root_parsing(tmp_path):
    assert split_data_root("s3://bucket/some/prefix/") == ("s3", "bucket/some/prefix")
    assert split_data_root("s3://bucket") == ("s3", "bucket")
    assert split_data_root(f"file://{tmp_path}") == ("file", str(tmp_path))
    assert split_data_root("relative/dir") == ("file", os.path.abspath("relative/dir"))
    for bad in ("s3://", "gs://bucket/x", ""):
        with pytest.raises(DataError):
            split_data_root(bad)


def test_s3_root_uses_env_endpoint(monkeypatch):
    monkeypatch.setenv("FORESIGHT_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio-secret")
    store = RunStore("s3://foresight/data", RUN_ID)
    assert isinstance(store.fs, pafs.S3FileSystem)
    assert store.uri("raw") == f"s3://foresight/data/runs/{safe_run_id(RUN_ID)}/raw.parquet"
    assert store.latest_uri("forecasts") == "s3://foresight/data/latest/forecasts.parquet"


def test_s3_code_path_on_in_memory_filesystem():
    """The S3 branch (direct single-object writes, server-side copies) on pyarrow's mock filesystem."""
    fs = _MockFileSystem()
    store = RunStore("s3://bucket/prefix", RUN_ID, filesystem=fs)
    store.write_frame("raw", frame())
    store.write_json("validation/summary.json", {"ok": True})
    assert store.list_files() == ["raw.parquet", "validation/summary.json"]
    assert fs.get_file_info(f"bucket/prefix/runs/{safe_run_id(RUN_ID)}/raw.parquet").type == pafs.FileType.File
    assert store.publish_latest(["raw"]) == {"raw": "s3://bucket/prefix/latest/raw.parquet"}
    assert store.read_latest("raw")["y"].tolist() == [0.0, 1.0, 2.0]
    attempt = RunStore("s3://bucket/prefix", RUN_ID, filesystem=fs, attempt="a2")
    attempt.write_frame("features", frame(start=3.0))
    attempt.promote().commit()  # objects copied over the date's prefix, the stale ones deleted
    assert store.list_files() == ["features.parquet"]
    assert store.read_frame("features")["y"].iloc[0] == 3.0
    assert attempt.list_files() == []
    assert DataRoot("s3://bucket/prefix", filesystem=fs).read_latest("raw").shape == (3, 3)


def test_failed_attempts_are_pruned_once_old(tmp_path):
    old = RunStore(str(tmp_path), "2024-03-01T020000Z", attempt="20240301T020500Z-aaaaaa")
    recent = RunStore(str(tmp_path), "2024-03-09T020000Z", attempt="20240309T020500Z-bbbbbb")
    for store in (old, recent):
        store.write_frame("raw", frame())
    now = pd.Timestamp("2024-03-10T00:00:00Z")
    removed = recent.prune_failed_attempts(pd.Timedelta("7D"), now=now)
    assert removed == ["2024-03-01T020000Z/20240301T020500Z-aaaaaa"]
    assert not old.exists("raw") and recent.exists("raw")
