"""Shared fixtures: the real data sets under ../shared/data and small synthetic series."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True, scope="module")
def _mlflow_env_per_module():
    """Give each test module the MLflow environment it started with.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the process
    environment, which would point a later module's default store at an earlier one's.
    """
    saved = {name: os.environ.get(name) for name in MLFLOW_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets that sits beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data sets not found at {SHARED_DATA}; ../shared must sit beside the checkout")
    return SHARED_DATA


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
