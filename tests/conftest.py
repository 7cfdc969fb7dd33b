"""Shared fixtures: the real data sets, the NAB sample kept in the repository, small synthetic series.

The real data sets live outside the repository (``../shared/data`` beside the checkout, or
the folder named by ``FORESIGHT_TEST_DATA``). A fresh clone without them still runs: tests
that ask for ``nab_data`` use the NAB sample under ``tests/data/nab_sample``, and tests that
ask for ``shared_data`` are skipped with a message saying how to get the data. CI sets
``FORESIGHT_REQUIRE_TEST_DATA=1``, which turns those skips (and the fallback) into failures.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from env_support import environ_restored

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEST_DATA = REPO_ROOT.parent / "shared" / "data"
NAB_SAMPLE = REPO_ROOT / "tests" / "data" / "nab_sample"
TEST_DATA_ENV = "FORESIGHT_TEST_DATA"
REQUIRE_TEST_DATA_ENV = "FORESIGHT_REQUIRE_TEST_DATA"


def real_data_folder() -> Path:
    """Where the full data sets are expected: ``$FORESIGHT_TEST_DATA``, else ``../shared/data``."""
    configured = os.environ.get(TEST_DATA_ENV, "").strip()
    return Path(configured).expanduser().resolve() if configured else DEFAULT_TEST_DATA


def real_data_required() -> bool:
    """CI must run every real-data test: a missing data set is then a failure, not a skip."""
    return os.environ.get(REQUIRE_TEST_DATA_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _missing_test_data(what: str) -> None:
    """Skip (or, where the data are required, fail) the test that needs ``what``."""
    message = (f"{what} not found at {real_data_folder()}: set {TEST_DATA_ENV} to the folder of the real data "
               f"sets, or put the shared data beside the checkout (../shared/data)")
    if real_data_required():
        pytest.fail(f"{message} ({REQUIRE_TEST_DATA_ENV} is set)", pytrace=False)
    pytest.skip(message)


def pytest_report_header(config) -> str:
    folder = real_data_folder()
    if folder.is_dir():
        return f"real data sets: {folder}"
    return f"real data sets: not at {folder}; NAB sample {NAB_SAMPLE} (the other real-data tests skip)"


MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True, scope="module")
def _mlflow_env_per_module():
    """Give each test module the MLflow environment it started with.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the process
    environment, which would point a later module's default store at an earlier one's.
    """
    with environ_restored(MLFLOW_ENV):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of every real data set (NAB, Bitbrains, Alibaba); the test skips (or fails) without it."""
    folder = real_data_folder()
    if not folder.is_dir():
        _missing_test_data("real data sets")
    return folder


@pytest.fixture(scope="session")
def nab_data() -> Path:
    """A folder with ``nab_aws/``: the full data sets when present, else the NAB sample in the repository.

    The sample holds a few whole AWS CloudWatch files and the first week of the
    ``realKnownCause`` CPU file (tests/data/nab_sample/PROVENANCE.md); a test that needs
    other NAB files, or all of them, asks for ``shared_data`` instead.
    """
    folder = real_data_folder()
    if (folder / "nab_aws").is_dir():
        return folder
    if real_data_required():
        _missing_test_data("the NAB data set (nab_aws)")
    return NAB_SAMPLE


def make_daily_series(days: int = 16, n_series: int = 3, freq: str = "5min", noise: float = 0.3,
                      seed: int = 0) -> pd.DataFrame:
    """Long frame of sinusoidal daily cycles plus noise, one series per container."""
    per_day = int(pd.Timedelta("1D") / pd.Timedelta(freq))
    n = days * per_day
    ds = pd.date_range("2024-03-01", periods=n, freq=freq, tz="UTC")
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_series):
        t = np.arange(n)
        y = 5 + i + 2 * np.sin(2 * np.pi * t / per_day + i) + rng.normal(0, noise, n)
        frames.append(pd.DataFrame({"unique_id": f"cpu_cores/c{i}", "ds": ds, "y": y}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def daily_series() -> pd.DataFrame:
    return make_daily_series()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for a test module (the browser tests)."""
    from browser_support import launched_chromium

    with launched_chromium() as instance:
        yield instance
