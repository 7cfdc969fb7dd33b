from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from foresight_lib.cli import main
from foresight_lib.frames import FORECAST_COLUMNS

CPU_FILES = ["ec2_cpu_utilization_24ae8d.csv", "ec2_cpu_utilization_53ea38.csv", "ec2_cpu_utilization_5f5533.csv"]


@pytest.fixture
def nab_slice(tmp_path, nab_data):
    folder = tmp_path / "nab"
    folder.mkdir()
    for name in CPU_FILES:
        shutil.copy(nab_data / "nab_aws" / "realAWSCloudwatch" / name, folder / name)
    return folder


def run_backtest_cli(tmp_path, input_path, *extra):
    report = tmp_path / "out" / "report.json"
    forecasts = tmp_path / "out" / "forecasts.parquet"
    code = main(["backtest", "--input", str(input_path), "--format", "nab", "--models", "naive,seasonal_naive",
                 "--n-jobs", "1", "--output", str(report), "--forecasts-out", str(forecasts), *extra])
    return code, report, forecasts


def test_backtest_end_to_end_on_nab(tmp_path, nab_slice, capsys):
    (nab_slice / "ec2_cpu_utilization_000000.csv").write_text("timestamp,value\n2014-01-01 00:00:00,oops\n")
    code, report_path, forecasts_path = run_backtest_cli(tmp_path, nab_slice)
    assert code == 0
    report = json.loads(report_path.read_text())
    assert {"leaderboard", "champion", "series", "seconds", "fit_seconds", "skipped", "fallbacks"} <= set(report)
    assert report["series"] == 3
    assert report["champion"] in {"naive", "seasonal_naive"}
    rows = report["leaderboard"]
    assert {(r["model"], r["horizon"]) for r in rows} == {
        (m, h) for m in ("naive", "seasonal_naive") for h in ("5m", "15m", "30m")}
    for row in rows:
        assert set(row) == {"model", "horizon", "mae", "rmse", "smape", "mase", "wql", "coverage_80", "coverage_95",
                            "width_80", "width_95"}
        assert row["mae"] > 0 and 0 <= row["coverage_95"] <= 1 and row["wql"] > 0
    best = min({r["model"] for r in rows},
               key=lambda m: sum(r["mase"] for r in rows if r["model"] == m))
    assert report["champion"] == best
    assert set(report["fit_seconds"]) == {"naive", "seasonal_naive"}
    [skip] = report["skipped"]
    assert skip["stage"] == "load" and skip["file"].endswith("ec2_cpu_utilization_000000.csv")
    assert "non-numeric" in skip["reason"]

    forecasts = pd.read_parquet(forecasts_path)
    assert list(forecasts.columns) == [*FORECAST_COLUMNS, "y"]
    assert forecasts["unique_id"].nunique() == 3
    # one held-out day, a cutoff every 30 minutes, 6 steps: 48 x 6 forecasts per series and model
    assert len(forecasts) == 3 * 2 * 48 * 6
    assert not forecasts["y"].isna().any()

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "model", "horizon", "MAE", "RMSE", "sMAPE", "MASE", "wQL", "cov80", "cov95", "w80", "w95"]
    assert any(line.startswith(f"*{report['champion']}") for line in lines)
    assert f"champion: {report['champion']}" in out
    assert "skipped: 1 at load" in out
    assert not list(report_path.parent.glob("*.tmp"))  # atomic writes leave no temporary file


def test_last_days_trims_each_series(tmp_path, nab_slice):
    code, report_path, forecasts_path = run_backtest_cli(
        tmp_path, nab_slice, "--last-days", "5", "--history-days", "4", "--horizons", "15m")
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["input"]["last_days"] == 5
    assert report["protocol"]["horizons"] == ["15m"]
    assert {r["horizon"] for r in report["leaderboard"]} == {"15m"}
    forecasts = pd.read_parquet(forecasts_path)
    last = pd.Timestamp("2014-02-28 14:25", tz="UTC")  # 24ae8d and 53ea38 end here
    one = forecasts[forecasts["unique_id"] == "cpu_utilization/24ae8d"]
    assert one["cutoff"].min() == last - pd.Timedelta(days=1)


@pytest.mark.parametrize(("args", "words"), [
    (["--models", "naive,oracle"], "unknown model(s) ['oracle']"),
    (["--horizons", "5m,7m"], "horizon 7m is not a whole number of 5m steps"),
    (["--last-days", "0"], "--last-days must be positive"),
    (["--forecasts-out", "f.csv"], "end the name with .parquet"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, nab_slice, capsys, args, words):
    code, report_path, _ = run_backtest_cli(tmp_path, nab_slice, *args)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("foresight backtest: error:")
    assert words in err[0]
    assert not report_path.exists()


def test_missing_input_exits_2(tmp_path, capsys):
    code, _, _ = run_backtest_cli(tmp_path, tmp_path / "missing")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing: no such file or folder" in err[0]


def test_no_usable_series_exits_2(tmp_path, capsys):
    folder = tmp_path / "short"
    folder.mkdir()
    ds = pd.date_range("2024-01-01", periods=100, freq="5min")
    pd.DataFrame({"timestamp": ds.strftime("%Y-%m-%d %H:%M:%S"), "value": range(100)}).to_csv(
        folder / "ec2_cpu_utilization_aaaaaa.csv", index=False)
    code, _, _ = run_backtest_cli(tmp_path, folder)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("loaded 1 series (100 rows)")
    assert err[-1].startswith("foresight backtest: error: no series can be backtested")
    assert "too short" in err[-1]


def test_broken_series_are_validated_out_before_scoring(tmp_path, nab_slice, capsys):
    absurd, infinite, kept = (nab_slice / name for name in CPU_FILES)
    frame = pd.read_csv(absurd)
    frame.loc[len(frame) - 600, "value"] = 1e300
    frame.to_csv(absurd, index=False)
    frame = pd.read_csv(infinite)
    frame.loc[len(frame) - 600:len(frame) - 596, "value"] = float("inf")
    frame.to_csv(infinite, index=False)
    frame.assign(value=0.0).to_csv(nab_slice / "ec2_cpu_utilization_c0ffee.csv", index=False)

    code, report_path, forecasts_path = run_backtest_cli(tmp_path, nab_slice, "--models",
                                                         "naive,seasonal_naive,ensemble")
    assert code == 0
    report = json.loads(report_path.read_text())
    skipped = {row["unique_id"]: row for row in report["skipped"]}
    assert all(row["stage"] == "validate" for row in skipped.values())
    assert "absurd values: 1 of" in skipped["cpu_utilization/24ae8d"]["reason"]
    assert "infinite values (+inf/-inf): 5 of" in skipped["cpu_utilization/53ea38"]["reason"]
    assert "constant series" in skipped["cpu_utilization/c0ffee"]["reason"]
    assert report["series_ids"] == [f"cpu_utilization/{kept.stem.rsplit('_', 1)[1]}"]
    assert report["validation"]["series_failed"] == 3 and report["validation"]["series_constant_only"] == 1
    assert any("completeness" in text for text in report["validation"]["not_checked"])
    assert {r["model"] for r in report["leaderboard"]} == {"naive", "seasonal_naive", "ensemble"}
    assert all(r["mase"] is not None and r["mase"] > 0 for r in report["leaderboard"])
    forecasts = pd.read_parquet(forecasts_path)
    values = forecasts[[c for c in forecasts.columns if c.startswith("yhat")]].to_numpy()
    assert np.isfinite(values).all() and set(forecasts["unique_id"]) == {"cpu_utilization/5f5533"}
    assert "skipped: 3 at validate" in capsys.readouterr().out
    # when nothing is left, the command says why in one line
    for path in list(nab_slice.glob("*.csv")):
        if path.name != absurd.name:
            path.unlink()
    code, _, _ = run_backtest_cli(tmp_path, nab_slice)
    assert code == 2
    assert "no series passed validation (1 quarantined): cpu_utilization/24ae8d: absurd values" in \
        capsys.readouterr().err


def test_fallback_counts_are_exact_with_the_ensemble(tmp_path, nab_slice, capsys, monkeypatch):
    from foresight_lib.forecasting import models

    monkeypatch.setitem(models.MODEL_PATHS, "failing", "fake_models:FailingForecaster")
    monkeypatch.setattr(models, "ALL_MODELS", [*models.MODEL_PATHS, models.ENSEMBLE])
    code, report_path, _ = run_backtest_cli(tmp_path, nab_slice, "--models", "failing,seasonal_naive,ensemble")
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["fallback_counts"] == {"failing": 3}
    assert report["validation_fallback_counts"] == {"failing": 3}
    assert len(report["fallbacks"]) == 3 and {f["unique_id"] for f in report["fallbacks"]} == set(report["series_ids"])
    assert {r["model"] for r in report["leaderboard"]} == {"failing", "seasonal_naive", "ensemble"}
    out = capsys.readouterr().out
    assert "fallbacks (seasonal naive used instead): failing on 3 series" in out
    assert "fallbacks on the ensemble's validation day: failing on 3 series" in out
