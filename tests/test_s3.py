"""S3 (moto's standalone server on loopback): the data root's lock, attempts, publish and exposition,
and the files source reading s3:// as it reads a local folder."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pandas as pd
import pytest
from conftest import make_daily_series
from prom_server import wait_for

from foresight_lib import pipeline
from foresight_lib.cli import main
from foresight_lib.errors import DataError, RunLocked, SourceError, ValidationFailed
from foresight_lib.orchestration.ports import free_port
from foresight_lib.runs.lock import RunLock
from foresight_lib.runs.storage import DataRoot, RunStore
from foresight_lib.serving import exposition
from foresight_lib.sources.loaders import FORMATS, load_series
from foresight_lib.sources.saving import save_frame, series_table_path

pytestmark = pytest.mark.slow

BUCKET = "foresight-test"
DATE, OLDER = "2024-03-15T02:00:00", "2024-03-14T02:00:00"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; the data root's S3 settings point at it."""
    pytest.importorskip("moto")
    import requests

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url, timeout=1).ok, what="moto S3 server")
        env = {"FORESIGHT_S3_ENDPOINT": url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1"}
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                              aws_secret_access_key="test")
        client.create_bucket(Bucket=BUCKET)
        yield {"env": env, "client": client}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_env(s3, monkeypatch):
    for name, value in s3["env"].items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.fixture
def on_s3(s3_env):
    """Copy a local file or folder to S3: ``on_s3(path, key)`` returns its ``s3://`` URI."""
    def upload(path: Path, key: str) -> str:
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
        for file in files:
            name = key if path.is_file() else f"{key}/{file.relative_to(path).as_posix()}"
            s3_env["client"].put_object(Bucket=BUCKET, Key=name, Body=file.read_bytes())
        return f"s3://{BUCKET}/{key}"

    return upload


def _keys(client, prefix: str) -> dict[str, bytes]:
    """The objects under ``prefix`` (folder markers left out)."""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed
            if not o["Key"].endswith("/")}


def test_the_lock_of_a_date_is_a_conditional_write(s3_env):
    store = RunStore(f"s3://{BUCKET}/locks-test", "2024-03-15T020000Z", attempt="a1")
    lock = RunLock(store, store.folder, store.safe_id, pd.Timedelta("1h"))
    lock.acquire("scheduled__1", "a1")
    with pytest.raises(RunLocked, match="scheduled__1"):
        lock.acquire("manual__2", "a2")
    assert lock.release("a1")
    lock.acquire("manual__2", "a2")
    assert lock.owner().run_id == "manual__2"


def test_a_nightly_run_on_s3_publishes_forward_only(s3_env, tmp_path):
    client = s3_env["client"]
    settings = {"history_days": 3, "data_root": f"s3://{BUCKET}/data",
                "models": ["naive", "seasonal_naive", "ensemble"],
                "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                           "artifact_location": str(tmp_path / "artifacts")}}
    out = pipeline.run_nightly(DATE, settings)
    assert out["published"] is True
    latest = _keys(client, "data/latest/")
    assert {"data/latest/forecasts.parquet", "data/latest/actuals.parquet", "data/latest/summary.json",
            "data/latest/_manifest.json"} <= set(latest)
    assert not any(".tmp-" in k for k in _keys(client, "data/"))
    assert DataRoot(settings["data_root"]).latest_manifest()["run_folder"] == \
        f"s3://{BUCKET}/data/runs/2024-03-15T020000Z"
    assert "data/runs/2024-03-15T020000Z/summary.json" in _keys(client, "data/runs/")
    assert not _keys(client, "data/locks/runs/"), "the date's lock is released"

    body, _ = exposition.metrics_response(settings["data_root"], horizons=["15m"])
    assert b"foresight_forecast{" in body and b"foresight_exposition_read_errors 0.0" in body

    older = pipeline.run_nightly(OLDER, settings)
    assert older["published"] is False
    assert _keys(client, "data/latest/") == latest

    impossible = {"min": 1e15, "max": 1e16, "mostly": 1.0}
    from foresight_lib.config import load_config

    failing = {**settings, "validation": {"max_failed_share": 0.3, "ranges": {
        k: impossible for k in [*load_config().validation.ranges, "*"]}}}
    with pytest.raises(ValidationFailed):
        pipeline.run_nightly("2024-03-16T02:00:00", failing)
    assert _keys(client, "data/latest/") == latest
    assert not _keys(client, "data/runs/2024-03-16T020000Z/"), "a failed run never becomes a date's run folder"


ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'


@pytest.fixture(scope="module")
def s3_with_auth():
    """A moto S3 server that checks signatures: one IAM user with a key, one bucket; then auth is on."""
    import requests

    port = free_port()
    # The first four requests (user, key, policy, bucket) are let through; every later one is checked.
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/moto-api/", timeout=1).ok, what="moto S3 server")
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="foresight")
        key = iam.create_access_key(UserName="foresight")["AccessKey"]
        iam.put_user_policy(UserName="foresight", PolicyName="all", PolicyDocument=ALLOW_ALL)
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket="foresight-auth")
        yield {"url": url, "key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_wrong_s3_credentials_fail_at_once_naming_the_bucket_and_never_the_secret(s3_with_auth, monkeypatch, caplog,
                                                                                   tmp_path):
    wrong_secret = "wrong-" + s3_with_auth["secret"][::-1]
    monkeypatch.setenv("FORESIGHT_S3_ENDPOINT", s3_with_auth["url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_with_auth["key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # boto3's default session keeps the credentials it first read: start from the environment above.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    settings = {"history_days": 3, "data_root": "s3://foresight-auth/data", "models": ["naive"],
                "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    from foresight_lib.errors import SourceError

    with caplog.at_level("DEBUG"), pytest.raises(SourceError) as failure:
        pipeline.run_nightly(DATE, settings)
    message = str(failure.value)
    assert "s3://foresight-auth/" in message and "credentials" in message, message
    assert wrong_secret not in message and wrong_secret not in caplog.text
    # With the right secret the same run goes through: the failure was the credentials.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_with_auth["secret"])
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    assert pipeline.run_nightly(DATE, settings)["published"] is True


def test_refused_s3_credentials_for_a_source_are_a_source_error_naming_the_uri(s3_with_auth, monkeypatch):
    wrong_secret = "wrong-" + s3_with_auth["secret"][::-1]
    monkeypatch.setenv("FORESIGHT_S3_ENDPOINT", s3_with_auth["url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_with_auth["key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(SourceError, match="^cannot read s3://foresight-auth/exports: .*credentials") as failure:
        load_series("s3://foresight-auth/exports", "long")
    assert wrong_secret not in str(failure.value)


def test_an_activation_on_s3_is_seen_at_the_next_scrape_and_dashboard_request(s3_env):
    """An activation rewrites latest/summary.json only: the cached reader must notice it without a manifest change."""
    from test_exposition import make_forecasts

    from foresight_lib.serving import dashboard

    root = f"s3://{BUCKET}/activation"
    forecasts = make_forecasts()
    forecasts["champion"] = forecasts["model"] == "naive"
    store = RunStore(root, "r1")
    store.write_frame("forecasts", forecasts)
    store.write_json("summary.json", {"run_key": "r1", "champion_versions": {"cpu_cores": 1}})
    store.publish_latest(["forecasts", "summary.json"])
    before = dashboard.overview(root)
    assert {c["metric"]: c["model"] for c in before["champions"]}["cpu_cores"] == "naive"
    summary = DataRoot(root).read_latest_json("summary.json")
    summary["activations"] = [{"metric": "cpu_cores", "version": 2, "model": "arima", "by": "bob",
                               "at": "2024-03-01T10:00:00+00:00"}]
    s3_env["client"].put_object(Bucket=BUCKET, Key="activation/latest/summary.json",
                                Body=json.dumps(summary).encode())
    after = dashboard.overview(root)
    assert {c["metric"]: c["model"] for c in after["champions"]}["cpu_cores"] == "arima"
    assert after["activations"][0]["by"] == "bob"
    body, _ = exposition.metrics_response(root)
    assert b'foresight_champion{metric="cpu_cores",model="arima"} 1.0' in body


# --- The files source on S3 ------------------------------------------------------------------


def _exports(folder: Path) -> Path:
    """Long-format exports as ``foresight extract`` writes them: a CSV, and a Parquet with its series table
    (whose unit the loader takes over the one it would guess) one folder down."""
    frame = make_daily_series(days=16, n_series=2)
    save_frame(frame, folder / "cpu.csv")
    memory = frame.assign(unique_id=frame["unique_id"].str.replace("cpu_cores", "memory_bytes"), y=frame["y"] * 1e9)
    save_frame(memory, folder / "nested" / "memory.parquet")
    table = pd.DataFrame({"unique_id": sorted(memory["unique_id"].unique()), "metric": "memory_bytes",
                          "entity": ["c0", "c1"], "unit": "bytes (working set)", "labels": "{}", "freq": "5min"})
    save_frame(table, series_table_path(folder / "nested" / "memory.parquet"))
    return folder


def test_a_nightly_extract_reads_a_folder_on_s3_as_its_local_copy(on_s3, tmp_path):
    local = _exports(tmp_path / "exports")
    remote = on_s3(local, "exports")
    runs = {}
    for name, path in {"local": str(local), "s3": remote}.items():
        settings = {"history_days": 3, "data_root": str(tmp_path / name),
                    "source": {"kind": "files", "path": path, "format": "long"},
                    "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
        run = pipeline.extract(None, None, DATE, overrides=settings)
        pipeline.release(run)
        store = RunStore(settings["data_root"], run["run_key"], attempt=run["attempt"])
        runs[name] = (run, store.read_frame(pipeline.RAW), store.read_frame(pipeline.SERIES))
    (run, raw, series), (s3_run, s3_raw, s3_series) = runs["local"], runs["s3"]
    assert s3_run["rows"] == run["rows"] > 0 and s3_run["series"] == run["series"] == 4
    assert s3_run["source"] == run["source"] == {"kind": "files", "skipped_files": 0}
    pd.testing.assert_frame_equal(s3_raw, raw)
    pd.testing.assert_frame_equal(s3_series, series)
    assert set(s3_series.loc[s3_series["metric"] == "memory_bytes", "unit"]) == {"bytes (working set)"}


def _format_sample(fmt: str, tmp_path: Path, request) -> Path:
    """A small local file or folder in format ``fmt`` (a trace's first rows where the trace is large)."""
    def head(source: Path, lines: int, name: str | None = None) -> Path:
        target = tmp_path / fmt / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open() as src:
            target.write_text("".join(itertools.islice(src, lines)))
        return target

    if fmt == "long":
        return _exports(tmp_path / fmt) / "nested" / "memory.parquet"  # one file, its series table beside it
    if fmt == "nab":
        return request.getfixturevalue("nab_data") / "nab_aws" / "realAWSCloudwatch"
    shared = request.getfixturevalue("shared_data")
    if fmt == "bitbrains":
        return shared / "bitbrains_rnd" / "2013-8" / "20.csv"
    if fmt == "alibaba2018":
        return head(shared / "alibaba2018_machines" / "machine_usage.csv", 5000).parent
    return head(shared / "alibaba_genai_pod_memory" / "pod_memory_util_anon.csv", 5000)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_a_file_or_folder_on_s3_as_from_disk(on_s3, tmp_path, request, fmt):
    local = _format_sample(fmt, tmp_path, request)
    remote = on_s3(local, f"formats/{fmt}/{local.name}")
    if series_table_path(local).is_file():  # a long file's series table goes with it
        on_s3(series_table_path(local), f"formats/{fmt}/{series_table_path(local).name}")
    expected, loaded = load_series(local, fmt), load_series(remote, fmt)
    pd.testing.assert_frame_equal(loaded.frame, expected.frame)
    pd.testing.assert_frame_equal(loaded.series, expected.series)
    assert loaded.available == expected.available
    assert [n["note"] for n in loaded.notes] == [n["note"] for n in expected.notes]


def test_a_glob_on_s3_matches_what_it_matches_on_disk(on_s3, nab_data):
    local = nab_data / "nab_aws"
    remote = on_s3(local, "glob/nab_aws")
    for pattern in ("**/ec2_cpu_*.csv", "real*/*_network_in_*.csv"):
        expected, loaded = load_series(local / pattern, "nab"), load_series(f"{remote}/{pattern}", "nab")
        pd.testing.assert_frame_equal(loaded.frame, expected.frame)
        assert len(loaded.series) == len(expected.series) > 0


def test_a_missing_key_or_bucket_is_a_data_error_naming_the_uri(s3_env, tmp_path):
    for uri in (f"s3://{BUCKET}/no/such/exports", "s3://no-such-bucket/exports"):
        with pytest.raises(DataError, match=f"^{uri}: no such file or folder"):
            load_series(uri, "long")
    settings = {"history_days": 3, "data_root": str(tmp_path / "data"),
                "source": {"kind": "files", "path": f"s3://{BUCKET}/no/such/file.csv", "format": "nab"},
                "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    with pytest.raises(DataError, match=f"^s3://{BUCKET}/no/such/file.csv: no such file or folder"):
        pipeline.extract(None, None, DATE, overrides=settings)
    assert not list((tmp_path / "data" / "locks").rglob("*.json")), "the failed extract released the date's lock"


def test_a_bad_file_on_s3_is_named_by_its_uri(on_s3, tmp_path, nab_data):
    folder = tmp_path / "in"
    folder.mkdir()
    good = nab_data / "nab_aws" / "realAWSCloudwatch" / "ec2_network_in_257a54.csv"
    (folder / good.name).write_bytes(good.read_bytes())
    (folder / "ec2_network_in_ffffff.csv").write_text("when,what\n1,2\n")
    (folder / "ec2_network_in_000000.csv").write_text("")
    remote = on_s3(folder, "bad")
    loaded = load_series(remote, "nab")
    assert loaded.frame["unique_id"].nunique() == 1
    assert {row["file"]: row["reason"].split(": ", 1)[0] for row in loaded.skipped} == {
        f"{remote}/ec2_network_in_000000.csv": f"{remote}/ec2_network_in_000000.csv",
        f"{remote}/ec2_network_in_ffffff.csv": f"{remote}/ec2_network_in_ffffff.csv"}
    with pytest.raises(DataError, match=f"^{remote}/ec2_network_in_ffffff.csv: missing column"):
        load_series(f"{remote}/ec2_network_in_ffffff.csv", "nab")
    garbled = tmp_path / "bad.parquet"
    garbled.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=f"^s3://{BUCKET}/bad/bad.parquet: cannot be read as Parquet"):
        load_series(on_s3(garbled, "bad/bad.parquet"), "long")


def test_foresight_extract_reads_s3_as_a_local_folder(on_s3, tmp_path, nab_data, capsys):
    local = nab_data / "nab_aws" / "realAWSCloudwatch"
    remote = on_s3(local, "cli/nab")
    outputs = {}
    for name, source in {"local": str(local), "s3": remote}.items():
        out = tmp_path / f"{name}.parquet"
        assert main(["extract", "--input", source, "--format", "nab", "--metrics", "cpu_utilization",
                     "--output", str(out)]) == 0
        outputs[name] = (pd.read_parquet(out), pd.read_parquet(series_table_path(out)))
    assert "0 skipped" in capsys.readouterr().out
    pd.testing.assert_frame_equal(outputs["s3"][0], outputs["local"][0])
    pd.testing.assert_frame_equal(outputs["s3"][1], outputs["local"][1])
