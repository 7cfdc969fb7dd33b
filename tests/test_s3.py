"""The data root on S3 (moto's standalone server on loopback): lock, attempts, publish, exposition."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pandas as pd
import pytest
from prom_server import wait_for

from foresight_lib import pipeline
from foresight_lib.errors import RunLocked, ValidationFailed
from foresight_lib.orchestration.ports import free_port
from foresight_lib.runs.lock import RunLock
from foresight_lib.runs.storage import DataRoot, RunStore
from foresight_lib.serving import exposition

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
