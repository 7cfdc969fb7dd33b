from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib.errors import ConfigError
from foresight_lib.forecasting import models, tuning
from foresight_lib.forecasting.backtest import BacktestSpec
from foresight_lib.forecasting.models.base import Forecaster, gaussian_intervals
from foresight_lib.forecasting.tuning import ParamStore, TuningResult, params_for_run, tune, validation_frame
from foresight_lib.runs.storage import DataRoot

SENTINEL = 1e9
SEEN: list[np.ndarray] = []


class ScaledLast(Forecaster):
    """Forecasts the last value times ``factor``; records every value it is given."""

    alias = "scaled_last"

    def __init__(self, factor: float = 1.0, pause: float = 0.0):
        self.factor = float(factor)
        self.pause = float(pause)

    def fit(self, y, season_length, ds=None):
        SEEN.append(np.asarray(y, dtype="float64").copy())
        time.sleep(self.pause)
        self.last_ = float(y[-1])
        return self

    def predict(self, h, levels=(80, 95)):
        return gaussian_intervals(np.full(h, self.last_ * self.factor), np.ones(h), levels)

    def update(self, y_new):
        SEEN.append(np.asarray(y_new, dtype="float64").copy())
        self.last_ = float(y_new[-1])
        return self


def factor_space(trial) -> dict:
    return {"factor": trial.suggest_float("factor", 0.5, 1.5)}


@pytest.fixture(autouse=True)
def _fake_model(monkeypatch):
    monkeypatch.setitem(models.MODEL_PATHS, "scaled_last", "test_tuning:ScaledLast")
    monkeypatch.setattr(models, "ALL_MODELS", [*models.MODEL_PATHS, models.ENSEMBLE])
    monkeypatch.setitem(tuning.SEARCH_SPACES, "scaled_last", factor_space)
    SEEN.clear()


def hourly(days: int = 6, n_series: int = 2, seed: int = 0):
    df = make_daily_series(days=days, n_series=n_series, freq="1h", seed=seed)
    spec = BacktestSpec(models=["naive"], freq="1h", horizons=["1h", "3h", "6h"], stride="3h", n_jobs=1)
    return df, spec


def poison_test_day(df, value: float = SENTINEL):
    """The same frame with every series' last day (the held-out test day) replaced by ``value``."""
    out = df.copy()
    end = out.groupby("unique_id")["ds"].transform("max")
    out.loc[out["ds"] > end - np.timedelta64(1, "D"), "y"] = value
    return out


def test_the_held_out_test_day_is_never_read():
    df, spec = hourly()
    poisoned = poison_test_day(df)
    result = tune(poisoned, spec, "scaled_last", n_trials=3, timeout_s=60, search_space=factor_space)
    assert SEEN, "the model was never fitted"
    assert max(float(np.max(np.abs(a))) for a in SEEN if a.size) < SENTINEL / 10
    clean = tune(df, spec, "scaled_last", n_trials=3, timeout_s=60, search_space=factor_space)
    assert result.mase_before == clean.mase_before and result.mase_after == clean.mase_after
    assert result.best_params == clean.best_params
    # the validation frame is the input without its last day: its own last day is the validation day
    val = validation_frame(df, spec)
    assert (val.groupby("unique_id")["ds"].max() == df.groupby("unique_id")["ds"].max() - np.timedelta64(1, "D")).all()


def test_trial_budget_is_respected():
    df, spec = hourly()
    result = tune(df, spec, "scaled_last", n_trials=4, timeout_s=120, search_space=factor_space)
    assert result.n_trials == 4 and len(result.trials) == 4 and result.stopped_by == "trials"
    assert result.mase_after <= result.mase_before
    assert set(result.best_params) <= {"factor"}


def test_time_budget_is_respected():
    df, spec = hourly()
    pause = 0.2  # per series and fit: a trial takes at least 0.4 s
    started = time.perf_counter()
    result = tune(df, spec, "scaled_last", n_trials=1000, timeout_s=1.5, search_space=factor_space,
                  base_params={"pause": pause})
    took = time.perf_counter() - started
    longest = max([t["seconds"] for t in result.trials] + [2 * pause])
    assert result.stopped_by in ("timeout", "time spent on the base parameters")
    assert result.n_trials < 1000
    assert took <= 1.5 + longest + 1.0  # at most the trial running when the budget ran out
    assert result.best_params.get("pause") == pause  # base parameters stay under the suggestions


def test_lightgbm_validation_mase_improves_or_stays():
    df, spec = hourly(days=8, n_series=3)
    weak = {"n_estimators": 3, "learning_rate": 0.01, "horizon": 6, "min_data_in_leaf": 5, "n_threads": 1}
    result = tune(df, spec, "lightgbm", n_trials=3, timeout_s=120, base_params=weak, seed=0)
    assert math.isfinite(result.mase_before) and math.isfinite(result.mase_after)
    assert result.mase_after <= result.mase_before
    assert result.n_trials == 3
    assert result.best_params["n_estimators"] == 3  # not in the search space: kept from the base
    assert result.improved  # three rounds at a tiny learning rate are easy to beat


def test_params_round_trip_through_the_store(tmp_path):
    result = TuningResult(
        model="lightgbm", best_params={"num_leaves": np.int64(16), "learning_rate": 0.05}, base_params={},
        mase_before=0.7, mase_after=0.6, n_trials=3, seconds=1.0, stopped_by="trials", series=2,
        trials=[{"number": 0, "params": {"num_leaves": 16}, "mase": 0.6}],
        tuned_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
    )
    store = ParamStore(DataRoot(str(tmp_path)))
    assert store.load("lightgbm") is None and store.params("lightgbm") == {}
    assert store.due("lightgbm", every_days=7)
    path = Path(store.save(result))
    assert path == tmp_path / "tuning" / "lightgbm.json" and not list(path.parent.glob(".tmp-*"))
    loaded = store.load("lightgbm")
    assert loaded.best_params == {"num_leaves": 16, "learning_rate": 0.05}
    assert loaded.mase_after == 0.6 and loaded.trials == result.trials
    assert store.params("lightgbm") == {"num_leaves": 16, "learning_rate": 0.05}
    tuned = datetime(2026, 1, 1, tzinfo=UTC)
    assert not store.due("lightgbm", every_days=7, now=tuned + timedelta(days=6))
    assert store.due("lightgbm", every_days=7, now=tuned + timedelta(days=7))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="delete the file"):
        store.load("lightgbm")


def test_bad_requests_are_reported():
    df, spec = hourly()
    with pytest.raises(ConfigError, match="cannot tune"):
        tune(df, spec, "ensemble")
    with pytest.raises(ConfigError, match="no search space"):
        tune(df, spec, "naive")
    with pytest.raises(ConfigError, match="timeout_s"):
        tune(df, spec, "scaled_last", timeout_s=0, search_space=factor_space)


class Budget:
    """The ``tuning`` config section's budget, as ``params_for_run`` reads it."""

    trials, timeout_s, every_days, seed = 2, 60.0, 7.0, 0


def test_a_nightly_tunes_once_then_reuses_until_the_parameters_are_due(tmp_path):
    df, spec = hourly(days=7)
    store = ParamStore(DataRoot(str(tmp_path)))
    params, first = params_for_run(df, spec, "scaled_last", Budget, store, fixed_params={"pause": 0.0})
    assert first["action"] == "tuned" and first["why"] == "never tuned" and first["stored_at"]
    assert "pause" not in params, "fixed parameters are used, never stored"
    stored = Path(first["stored_at"]).read_bytes()

    again, second = params_for_run(df, spec, "scaled_last", Budget, store)
    assert second["action"] == "reused" and again == params
    later = datetime.now(UTC) + timedelta(days=8)
    _, due = params_for_run(df, spec, "scaled_last", Budget, store, now=later)
    assert due["action"] == "tuned" and "or more ago" in due["why"]
    _, rebased = params_for_run(df, spec, "scaled_last", Budget, store, base_params={"pause": 0.0})
    assert rebased["action"] == "tuned" and "configured parameters changed" in rebased["why"]
    assert rebased["stored_at"]
    assert ParamStore(DataRoot(str(tmp_path))).load("scaled_last").base_params == {"pause": 0.0}
    assert Path(first["stored_at"]).read_bytes() != stored


def test_a_backfill_never_reuses_parameters_tuned_on_later_data_nor_replaces_them(tmp_path):
    df, spec = hourly(days=7)
    store = ParamStore(DataRoot(str(tmp_path)))
    _, newest = params_for_run(df, spec, "scaled_last", Budget, store)
    stored = Path(newest["stored_at"]).read_bytes()
    end = df.groupby("unique_id")["ds"].transform("max")
    earlier = df[df["ds"] <= end - np.timedelta64(2, "D")].reset_index(drop=True)  # two days back
    _, backfill = params_for_run(earlier, spec, "scaled_last", Budget, store)
    assert backfill["action"] == "tuned" and "after this run's validation split" in backfill["why"]
    assert backfill["stored_at"] is None
    assert Path(newest["stored_at"]).read_bytes() == stored
    assert pd.Timestamp(backfill["data_end"]) < pd.Timestamp(newest["data_end"])
