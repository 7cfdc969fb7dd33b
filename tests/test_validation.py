"""Great Expectations validation: quarantine exactly the broken series, fail over the threshold."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib.config import ValidationConfig, load_config
from foresight_lib.errors import ConfigError, DataError, ValidationFailed
from foresight_lib.quality.validation import match_range_rule, validate_frame
from foresight_lib.sources.demo import BROKEN_ENTITY, MEMORY, generate_demo

END = pd.Timestamp("2024-03-15T02:00:00Z")


def clean_frame(n_series: int = 8, days: int = 2) -> pd.DataFrame:
    """Small clean frame: cpu_cores/c0..c{n-1} at 5 minutes, all positive."""
    return make_daily_series(days=days, n_series=n_series, noise=0.1)


def reasons_of(outcome) -> dict[str, str]:
    return {uid: " | ".join(texts) for uid, texts in outcome.reasons.items()}


@pytest.fixture(scope="module")
def demo():
    return generate_demo(END)


def test_clean_frame_passes_everything():
    frame = clean_frame()
    outcome = validate_frame(frame, cfg=ValidationConfig())
    assert outcome.reasons == {}
    assert outcome.summary["passed"] and outcome.summary["expectations_failed"] == 0
    assert outcome.summary["series_total"] == 8 and outcome.summary["failed_share"] == 0
    assert len(outcome.valid) == len(frame) and outcome.quarantine.empty
    assert list(outcome.valid.columns) == ["unique_id", "ds", "y"]
    assert all(r["success"] for r in outcome.results)


def test_demo_quarantines_only_the_broken_series(demo):
    frame, series = demo
    outcome = validate_frame(frame, series, load_config())
    broken = f"{MEMORY}/{BROKEN_ENTITY}"
    assert list(outcome.reasons) == [broken]
    assert "values below 0" in outcome.reasons[broken][0] and "4608 of 4608 rows" in outcome.reasons[broken][0]
    assert set(outcome.quarantine["unique_id"]) == {broken}
    assert outcome.quarantine["reason"].str.contains("below 0").all()
    assert broken not in set(outcome.valid["unique_id"]) and len(outcome.valid) + len(outcome.quarantine) == len(frame)
    assert broken not in set(outcome.series["unique_id"]) and len(outcome.series) == len(series) - 1
    assert outcome.summary["series_failed"] == 1 and outcome.summary["passed"]
    assert outcome.summary["seconds"] < 10


def broken_frame() -> pd.DataFrame:
    """Ten series, six of them broken in six ways (see below), rows not in order."""
    frame = clean_frame(n_series=10)
    ids = sorted(frame["unique_id"].unique())
    dup, neg, nan_heavy, backwards, short, gappy = ids[:6]
    parts = [frame]
    # conflicting duplicates: 5 rows of one series repeated with other values
    parts.append(frame[frame["unique_id"] == dup].iloc[10:15].assign(y=lambda d: d["y"] + 1.0))
    out = pd.concat(parts, ignore_index=True)
    # out of range: negative values in one series
    out.loc[out.index[(out["unique_id"] == neg)][:20], "y"] = -1.0
    # NaN-heavy: 60 % of the values missing
    rows = out.index[out["unique_id"] == nan_heavy]
    out.loc[rows[-int(0.6 * len(rows)):], "y"] = float("nan")
    # backwards timestamps: swap two rows' timestamps
    rows = out.index[out["unique_id"] == backwards]
    a, b = rows[100], rows[101]
    out.loc[[a, b], "ds"] = out.loc[[b, a], "ds"].to_numpy()
    # a single point
    out = out.drop(out.index[out["unique_id"] == short][1:])
    # stopped reporting half-way: completeness 0.5
    rows = out.index[out["unique_id"] == gappy]
    return out.drop(rows[len(rows) // 2:])


def test_broken_inputs_quarantine_exactly_the_broken_series():
    out = broken_frame()
    ids = sorted(out["unique_id"].unique())
    dup, neg, nan_heavy, backwards, short, gappy = ids[:6]
    outcome = validate_frame(out, cfg=ValidationConfig(max_failed_share=0.9))
    got = reasons_of(outcome)
    assert set(got) == {dup, neg, nan_heavy, backwards, short, gappy}
    assert "duplicate timestamps: 10 row(s)" in got[dup]
    assert "values below 0" in got[neg] and "20 of 576 rows" in got[neg]
    assert "NaN share 0.60 > 0.20" in got[nan_heavy] and "completeness 0.40 < 0.80" in got[nan_heavy]
    assert "timestamps out of order" in got[backwards]
    assert "fewer than 2 rows" in got[short]
    assert "completeness 0.50 < 0.80" in got[gappy] and "288 of 576 points at 5min" in got[gappy]
    for uid in (dup, neg, backwards, short, gappy):
        assert "NaN share" not in got[uid]
    assert set(outcome.valid["unique_id"]) == set(ids) - set(got)
    assert set(outcome.quarantine["unique_id"]) == set(got)
    summary = outcome.summary
    assert summary["series_failed"] == 6 and summary["failed_share"] == 0.6
    assert summary["series_failed_by_check"]["duplicates"] == 1
    checks = {f["check"] for f in summary["failed_expectations"]}
    assert {"duplicates", "order", "range", "too_short", "completeness", "nulls"} <= checks


def _comparable(outcome) -> dict:
    summary = {k: v for k, v in outcome.summary.items() if k != "seconds"}
    results = []
    for r in outcome.results:
        result = r["result"] or {}
        results.append((r["suite"], r["expectation_config"]["type"], r["success"], result.get("element_count"),
                        result.get("unexpected_count"), round(result.get("unexpected_percent") or 0, 9)))
    return {"summary": summary, "reasons": outcome.reasons, "results": results}


@pytest.mark.parametrize("case", ["broken", "demo"])
def test_validation_in_chunks_of_series_finds_what_one_pass_finds(case, demo):
    """Chunks of whole series (validation.chunk_rows) give the outcome of one pass over every row."""
    if case == "broken":  # rows out of order, so chunks are picked by series, not sliced
        frame, series, settings = broken_frame(), None, {"max_failed_share": 0.9}
    else:  # a series table, a tolerated infinity nulled, a series quarantined by its range
        frame, series = demo
        frame = frame.copy()
        frame.loc[frame.index[frame["unique_id"] == frame["unique_id"].iloc[0]][5], "y"] = np.inf
        settings = {**load_config().validation.model_dump(), "max_non_finite_share": 0.01}
    whole = validate_frame(frame, series, ValidationConfig(**{**settings, "chunk_rows": len(frame)}))
    chunked = validate_frame(frame, series, ValidationConfig(**{**settings, "chunk_rows": 600}))
    assert whole.summary["rows_total"] == len(frame)
    assert _comparable(chunked) == _comparable(whole)
    pd.testing.assert_frame_equal(chunked.valid, whole.valid)
    pd.testing.assert_frame_equal(chunked.quarantine, whole.quarantine)
    assert chunked.valid["unique_id"].is_monotonic_increasing
    if series is not None:
        pd.testing.assert_frame_equal(chunked.series, whole.series)
        assert whole.summary["values_nulled"] >= 1


def test_a_range_rule_follows_the_series_tables_metric_in_chunks_too():
    """The table's metric, not the id's prefix, picks the rule: the rule's expectation is in every chunk's suite."""
    frame = clean_frame(n_series=3)
    ids = sorted(frame["unique_id"].unique())
    frame = frame.assign(unique_id=frame["unique_id"].str.replace("cpu_cores/", "host/"))
    ids = [uid.replace("cpu_cores/", "host/") for uid in ids]
    frame.loc[frame["unique_id"] == ids[0], "y"] = 150.0  # above the cpu_utilization rule's 100
    table = pd.DataFrame({"unique_id": ids, "metric": "cpu_utilization"})
    for chunk_rows in (len(frame), 600):
        outcome = validate_frame(frame, table, ValidationConfig(**{**load_config().validation.model_dump(),
                                                                   "chunk_rows": chunk_rows, "max_failed_share": 0.9}))
        assert list(outcome.reasons) == [ids[0]]
        assert "range rule '*cpu_utilization*'" in outcome.reasons[ids[0]][0]


def test_over_threshold_raises_with_outcome_attached():
    frame = clean_frame(n_series=4)
    ids = sorted(frame["unique_id"].unique())
    frame.loc[frame["unique_id"].isin(ids[:2]), "y"] = -5.0
    with pytest.raises(ValidationFailed) as err:
        validate_frame(frame, cfg=ValidationConfig(max_failed_share=0.3))
    text = str(err.value)
    assert "2 of 4 series failed validation (50% > allowed 30%)" in text
    assert "expect_column_values_to_be_between(y, *_cores)" in text
    assert ids[0] in text and "values below 0" in text
    outcome = err.value.outcome
    assert not outcome.passed and set(outcome.reasons) == set(ids[:2])
    assert "<html>" in outcome.html and ids[0] in outcome.html
    # the same data under a looser threshold passes, quarantining the two
    outcome = validate_frame(frame, cfg=ValidationConfig(max_failed_share=0.5))
    assert outcome.passed and outcome.summary["series_failed"] == 2


def test_range_rules_per_metric_with_tolerance():
    frame = clean_frame(n_series=3, days=1)
    frame["unique_id"] = frame["unique_id"].str.replace("cpu_cores/", "cpu_utilization/")
    ids = sorted(frame["unique_id"].unique())
    rows0 = frame.index[frame["unique_id"] == ids[0]]
    frame.loc[rows0[:2], "y"] = 101.0  # 2 of 288 rows (0.7 %): tolerated, set to NaN
    rows1 = frame.index[frame["unique_id"] == ids[1]]
    frame.loc[rows1[:10], "y"] = 250.0  # 10 of 288 rows (3.5 %): quarantined
    rows2 = frame.index[frame["unique_id"] == ids[2]]
    frame.loc[rows2[:4], "y"] = 250.0  # above and below: 8 of 288 rows
    frame.loc[rows2[4:8], "y"] = -1.0
    outcome = validate_frame(frame, cfg=ValidationConfig(max_failed_share=1.0))
    assert list(outcome.reasons) == [ids[1], ids[2]]
    assert "values above 100 (range rule '*cpu_utilization*'): 10 of 288 rows" in outcome.reasons[ids[1]][0]
    assert "values outside [0, 100] (range rule '*cpu_utilization*'): 8 of 288 rows" in outcome.reasons[ids[2]][0]
    assert outcome.summary["values_nulled"] == 2
    valid0 = outcome.valid[outcome.valid["unique_id"] == ids[0]]
    assert valid0["y"].isna().sum() == 2 and len(valid0) == 288


def test_match_range_rule_prefers_exact_then_first_pattern():
    ranges = {"*_percent": {"max": 100}, "disk_io_percent": {"max": 101}, "*": {"min": 0}}
    rules = ValidationConfig(ranges=ranges).ranges
    assert match_range_rule("disk_io_percent", rules) == "disk_io_percent"
    assert match_range_rule("cpu_percent", rules) == "*_percent"
    assert match_range_rule("memory_bytes", rules) == "*"
    assert match_range_rule("x", {}) is None


def test_series_table_cross_checks(demo):
    frame, series = demo
    keep = series["unique_id"].iloc[:3].tolist()
    small = frame[frame["unique_id"].isin(keep[:2])]
    extra = small[small["unique_id"] == keep[0]].assign(unique_id="container_cpu_usage_seconds_total/ghost")
    outcome = validate_frame(pd.concat([small, extra], ignore_index=True), series[series["unique_id"].isin(keep)],
                             cfg=ValidationConfig(max_failed_share=1.0))
    got = reasons_of(outcome)
    assert set(got) == {keep[2], "container_cpu_usage_seconds_total/ghost"}
    assert "no rows in the window" in got[keep[2]]
    assert "not in the series table" in got["container_cpu_usage_seconds_total/ghost"]


def test_schema_failure_fails_every_series():
    frame = clean_frame(n_series=2, days=1)
    naive = frame.assign(ds=frame["ds"].dt.tz_localize(None))
    with pytest.raises(ValidationFailed, match="schema is wrong") as err:
        validate_frame(naive)
    assert "UTC timestamps" in err.value.outcome.quarantine["reason"].iloc[0]
    assert err.value.outcome.summary["series_failed"] == 2
    with pytest.raises(ValidationFailed) as err:
        validate_frame(frame.rename(columns={"y": "value"}))
    assert "unique_id, ds, y" in str(err.value.outcome.reasons)
    assert "expect_table_columns_to_match_set" in err.value.outcome.html


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="no rows to validate"):
        validate_frame(clean_frame().iloc[0:0])
    with pytest.raises(ConfigError, match="foresight_schema.json"):
        validate_frame(clean_frame(n_series=1, days=1), cfg=ValidationConfig(suite_dir=str(tmp_path)))


def test_html_report_lists_expectations_and_quarantine(demo):
    frame, series = demo
    broken = f"{MEMORY}/{BROKEN_ENTITY}"
    frame = frame[frame["unique_id"].isin([broken, *series["unique_id"].iloc[:3]])]
    outcome = validate_frame(frame, series[series["unique_id"].isin(frame["unique_id"])],
                             cfg=ValidationConfig(max_failed_share=0.5))
    page = outcome.html
    for name in ("expect_table_columns_to_match_set", "expect_compound_columns_to_be_unique",
                 "expect_column_values_to_be_between", "expect_column_values_to_not_be_null",
                 "foresight.schema", "foresight.rows", "foresight.series"):
        assert name in page
    assert f"{MEMORY}/{BROKEN_ENTITY}" in page and "values below 0" in page
    assert "Quarantined series (1)" in page and page.count("<tr>") >= len(outcome.results) + 2


def test_bitbrains_vm20_is_quarantined(shared_data):
    """Real trace: VM 20 repeats thousands of rows; VMs 40/60/80 are fine (CPU % may exceed 100).

    VM 20's repeated CPU rows are identical (dropped and counted); three of its memory rows
    repeat a timestamp with another value (conflicting: quarantined).
    """
    frames = []
    for vm in (20, 40, 60, 80):
        raw = pd.read_csv(shared_data / "bitbrains_rnd" / "2013-8" / f"{vm}.csv", sep=";", skipinitialspace=True)
        raw.columns = [c.strip() for c in raw.columns]
        ds = pd.to_datetime(raw["Timestamp [ms]"], unit="s", utc=True)  # values are seconds despite the header
        for column, metric in (("CPU usage [%]", "cpu_usage_percent"), ("Memory usage [KB]", "memory_usage_kb")):
            frames.append(pd.DataFrame({"unique_id": f"{metric}/vm{vm}", "ds": ds, "y": raw[column].astype(float)}))
    frame = pd.concat(frames, ignore_index=True)
    outcome = validate_frame(frame, cfg=load_config())
    assert set(outcome.reasons) == {"memory_usage_kb/vm20"}
    assert all("duplicate timestamps" in r for texts in outcome.reasons.values() for r in texts)
    assert outcome.summary["duplicates_dropped_by_series"]["cpu_usage_percent/vm20"] == 8600
    assert (outcome.valid["y"] > 100).any()  # the 8-core VMs' >100 % CPU is kept


def test_bitbrains_through_the_loader(shared_data):
    """The same check on the files as the pipeline reads them (loader and its series table)."""
    from foresight_lib.sources.loaders import load_series

    frame, series = load_series(shared_data / "bitbrains_rnd" / "2013-8" / "[2468]0.csv", "bitbrains",
                                ["cpu_usage_percent", "memory_usage_kb"])
    assert set(series["entity"]) == {"vm20", "vm40", "vm60", "vm80"}
    outcome = validate_frame(frame, series, cfg=load_config())
    assert set(outcome.reasons) == {"memory_usage_kb/vm20"}
    assert all("duplicate timestamps" in texts[0] for texts in outcome.reasons.values())
    assert outcome.summary["series_total"] == 8 and outcome.passed
    assert set(outcome.series["entity"]) == {"vm20", "vm40", "vm60", "vm80"}
    assert set(outcome.series.loc[outcome.series["entity"] == "vm20", "metric"]) == {"cpu_usage_percent"}


def test_infinite_values_quarantine_the_series_or_become_nan_within_tolerance():
    frame = clean_frame(n_series=4)
    ids = sorted(frame["unique_id"].unique())
    rows = frame.index[frame["unique_id"] == ids[0]]
    frame.loc[rows[100:105], "y"] = np.inf
    rows = frame.index[frame["unique_id"] == ids[1]]
    frame.loc[rows[7], "y"] = -np.inf  # below the rule's min too, but reported once, as infinite
    outcome = validate_frame(frame, cfg=ValidationConfig(max_failed_share=1.0))
    got = reasons_of(outcome)
    assert set(got) == {ids[0], ids[1]}
    assert "infinite values (+inf/-inf): 5 of 576 rows (0.9%) > allowed 0.0%" in got[ids[0]]
    assert "1 of 576 rows" in got[ids[1]] and "below 0" not in got[ids[1]]
    assert outcome.summary["series_failed_by_check"] == {"non_finite": 2}
    assert np.isinf(outcome.quarantine["y"]).sum() == 6 and not np.isinf(outcome.valid["y"]).any()
    # within validation.max_non_finite_share the infinities become NaN, like tolerated out-of-range values
    outcome = validate_frame(frame, cfg=ValidationConfig(max_non_finite_share=0.005))
    assert list(outcome.reasons) == [ids[0]]  # 5 of 576 (0.87 %) is still too many
    kept = outcome.valid[outcome.valid["unique_id"] == ids[1]]
    assert len(kept) == 576 and kept["y"].isna().sum() == 1 and outcome.summary["values_nulled"] == 1


def test_absurd_values_quarantine_even_where_the_range_rule_tolerates():
    frame = clean_frame(n_series=3)
    frame["unique_id"] = frame["unique_id"].str.replace("cpu_cores/", "cpu_utilization/")
    ids = sorted(frame["unique_id"].unique())
    frame.loc[frame.index[frame["unique_id"] == ids[0]][50], "y"] = 1e300  # the rule tolerates 1 % above 100
    frame.loc[frame.index[frame["unique_id"] == ids[1]][50], "y"] = 150.0
    outcome = validate_frame(frame, cfg=ValidationConfig(max_failed_share=1.0))
    got = reasons_of(outcome)
    assert list(got) == [ids[0]]
    assert "absurd values: 1 of 576 rows beyond ±1e+15 (validation.max_abs_value; never tolerated), e.g. 1e+300" \
        in got[ids[0]]
    assert "range rule" not in got[ids[0]]  # the same value is not reported twice
    assert outcome.summary["values_nulled"] == 1  # the tolerated 150


def test_max_abs_value_applies_without_any_rule_and_rules_may_allow_more():
    frame = clean_frame(n_series=3)
    ids = sorted(frame["unique_id"].unique())
    frame.loc[frame.index[frame["unique_id"] == ids[0]][9], "y"] = -1e300
    frame.loc[frame.index[frame["unique_id"] == ids[1]][9], "y"] = 5e16
    no_rules = ValidationConfig(ranges={}, max_failed_share=1.0)
    got = reasons_of(validate_frame(frame, cfg=no_rules))
    assert set(got) == {ids[0], ids[1]} and "e.g. -1e+300" in got[ids[0]] and "e.g. 5e+16" in got[ids[1]]
    wide = ValidationConfig(ranges={"cpu_*": {"min": 0, "max": 1e17}}, max_failed_share=1.0)
    got = reasons_of(validate_frame(frame, cfg=wide))
    assert set(got) == {ids[0]} and "beyond ±1e+17" in got[ids[0]]


def test_constant_series_are_quarantined_and_not_counted_as_failures():
    frame = clean_frame(n_series=5)
    ids = sorted(frame["unique_id"].unique())
    zero, flat, near, lively = ids[:4]
    frame.loc[frame["unique_id"] == zero, "y"] = 0.0
    frame.loc[frame["unique_id"] == flat, "y"] = 4.0
    rows = frame.index[frame["unique_id"] == near]
    frame.loc[rows, "y"] = 2e5 + np.arange(len(rows)) % 2 * 0.1  # relative std 2.5e-7: flat up to rounding
    rows = frame.index[frame["unique_id"] == lively]
    frame.loc[rows, "y"] = 1.0 + np.arange(len(rows)) % 2 * 1e-4  # like the flattest real pod memory
    outcome = validate_frame(frame, cfg=ValidationConfig(max_failed_share=0.0))
    got = reasons_of(outcome)
    assert set(got) == {zero, flat, near}
    assert "constant series" in got[zero] and "all 576 finite values are 0" in got[zero]
    assert "all 576 finite values are 4" in got[flat]
    assert "standard deviation 0.05 is 2.5e-07 of the mean absolute value 200000" in got[near]
    summary = outcome.summary
    assert summary["series_failed"] == 3 and summary["series_constant_only"] == 3
    assert summary["failed_share"] == 0 and outcome.passed  # constant is not broken data
    # with a threshold of 0 only exactly constant series go
    got = reasons_of(validate_frame(frame, cfg=ValidationConfig(min_relative_std=0.0)))
    assert set(got) == {zero, flat}
    # a series that is also broken counts; a run where nothing passes fails
    only_constant = frame[frame["unique_id"].isin([zero, flat])]
    with pytest.raises(ValidationFailed, match="no series passed validation") as err:
        validate_frame(only_constant, cfg=ValidationConfig())
    assert "2 constant series also quarantined (not counted)" in str(err.value)


def test_real_bitbrains_vms_lose_only_their_constant_series(shared_data):
    """Only genuinely constant series are newly quarantined in the real data sets."""
    from foresight_lib.sources.loaders import load_series

    loaded = load_series(shared_data / "bitbrains_rnd" / "2013-8" / "[468]0.csv", "bitbrains")
    outcome = validate_frame(loaded.frame, loaded.series, load_config())
    values = loaded.frame.groupby("unique_id")["y"]
    spread = values.std(ddof=0) / values.apply(lambda y: y.abs().mean())
    flat = set(spread.index[spread.fillna(0) <= 1e-6])
    assert flat and {uid.split("/")[0] for uid in flat} <= {"cpu_capacity_mhz", "cpu_cores", "memory_provisioned_kb",
                                                             "disk_read_kbps", "net_rx_kbps", "net_tx_kbps"}
    assert set(outcome.reasons) == flat
    assert all(texts[0].startswith("constant series") for texts in outcome.reasons.values())
    assert outcome.passed and outcome.summary["failed_share"] == 0
    usage = outcome.valid[outcome.valid["unique_id"].str.startswith(("cpu_usage", "memory_usage"))]
    assert usage["unique_id"].nunique() == 9  # every usage series (CPU MHz and %, memory) of the three VMs


def test_clip_to_physical_range_bounds_every_forecast_value():
    from foresight_lib.quality.validation import clip_to_physical_range, physical_bounds

    cfg = load_config()
    forecasts = pd.DataFrame({
        "unique_id": ["mem/a", "mem/a", "container_cpu_usage_cores/b", "custom_thing/c"],
        "model": "ets", "step": [1, 2, 1, 1],
        "yhat": [-5.0, 3e16, 2.0, -7.0],
        "yhat_lo_80": [-9.0, 2e16, -1.0, -8.0], "yhat_hi_80": [1.0, 4e16, 2e6, -6.0],
        "yhat_lo_95": [-12.0, 1e16, -2.0, -9.0], "yhat_hi_95": [4.0, 5e16, 3e6, -5.0],
    })
    series = pd.DataFrame({"unique_id": ["mem/a", "container_cpu_usage_cores/b"],
                           "metric": ["container_memory_working_set_bytes", "container_cpu_usage_cores"]})
    out = clip_to_physical_range(forecasts, series, cfg)
    assert physical_bounds("container_memory_working_set_bytes", cfg) == (0.0, 1e16)
    values = ["yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    mem = out[out["unique_id"] == "mem/a"][values].to_numpy()
    assert mem.min() == 0.0 and mem.max() == 1e16  # never negative usage, never beyond the rule's max
    cpu = out[out["unique_id"] == "container_cpu_usage_cores/b"].iloc[0]
    assert (cpu["yhat_lo_80"], cpu["yhat"], cpu["yhat_hi_80"], cpu["yhat_hi_95"]) == (0.0, 2.0, 1e6, 1e6)
    assert (out.loc[3, values] == 0.0).all()  # the catch-all rule "*" has min 0, even without a series row
    assert (out["yhat_lo_95"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_hi_95"]).all()
    assert list(out.columns) == list(forecasts.columns) and forecasts.loc[0, "yhat"] == -5.0  # a copy
    # a metric whose rule has no min keeps negative values, down to -max_abs_value
    signed = ValidationConfig(ranges={"temperature_*": {"max": 200}}, max_abs_value=1e3)
    one = forecasts.iloc[[0]].assign(unique_id="temperature_c/x", yhat=-5e3)
    assert clip_to_physical_range(one, None, signed)["yhat"].iloc[0] == -1e3
    broken = forecasts.copy()
    broken.loc[2, "yhat_hi_95"] = np.inf
    with pytest.raises(DataError, match=r"1 forecast value\(s\) are NaN or infinite .*yhat_hi_95.*container_cpu"):
        clip_to_physical_range(broken, series, cfg)


def test_a_validation_logs_no_great_expectations_noise(caplog):
    import logging

    frame, series = generate_demo(pd.Timestamp("2024-03-15T02:00Z"), days=2, seed=0, freq="5min")
    with caplog.at_level(logging.INFO):
        validate_frame(frame, series, load_config())
    noisy = [r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING]
    assert noisy == [], noisy[:3]
    assert any(r.name.startswith("foresight_lib") for r in caplog.records), "Foresight's own summary line stays"


# ---------------------------------------------------------------------------
# Timestamps on the grid as sources stamp them, overlapping exports, freshness


def _jittered(frame: pd.DataFrame, seconds: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return frame.assign(ds=frame["ds"] + pd.to_timedelta(rng.uniform(-seconds, seconds, len(frame)), unit="s"))


def test_jittered_timestamps_keep_every_series():
    """±100 ms around the marks (…00:04:59.9, …00:05:00.06): every point counts for its mark."""
    from foresight_lib.quality.features import prepare_series

    frame = _jittered(clean_frame(), 0.1)
    outcome = validate_frame(frame, cfg=ValidationConfig())
    assert outcome.reasons == {} and outcome.passed
    result = prepare_series(outcome.valid)
    assert result.dropped == [] and result.report["series_out"] == 8
    assert result.report["totals"]["interpolated"] == 0 and result.report["totals"]["duplicates"] == 0


def test_stamps_up_to_the_tolerance_early_count_for_the_mark_not_the_slot_before():
    from foresight_lib.quality.features import prepare_series

    clean = clean_frame(n_series=2)
    early = clean.assign(ds=clean["ds"] - pd.Timedelta("2s"))
    outcome = validate_frame(early, cfg=ValidationConfig())
    assert outcome.reasons == {}
    stats = outcome.summary
    assert stats["grid_tolerance"] == 0.1
    result = prepare_series(outcome.valid)
    assert len(result.frame) == len(clean) and result.report["totals"]["interpolated"] == 0
    assert set(result.frame["ds"]) == set(clean["ds"])  # filed at the marks, not 5 minutes early


def test_completeness_is_judged_on_the_features_slots():
    """A quarter of the points 0.1 s early: with no tolerance they share a slot with the point before."""
    frame = clean_frame(n_series=1)
    early = frame.index[::4]
    frame.loc[early, "ds"] = frame.loc[early, "ds"] - pd.Timedelta("0.1s")
    # without tolerance those points fall in the slot before, which has its own point
    strict = validate_frame(frame, cfg=ValidationConfig(min_completeness=0.8), grid_tolerance=0.0,
                            raise_on_failure=False)
    assert "completeness 0.75" in reasons_of(strict)["cpu_cores/c0"]
    tolerant = validate_frame(frame, cfg=ValidationConfig(min_completeness=0.8), raise_on_failure=False)
    assert "completeness" not in reasons_of(tolerant).get("cpu_cores/c0", "")


def test_identical_duplicate_rows_are_dropped_and_counted():
    """Two exports overlapping by an hour with identical rows pass; the overlap is counted."""
    frame = clean_frame(n_series=4)
    overlap = frame[(frame["ds"] >= frame["ds"].max() - pd.Timedelta("1h"))]
    outcome = validate_frame(pd.concat([frame, overlap], ignore_index=True), cfg=ValidationConfig())
    assert outcome.reasons == {} and outcome.passed
    assert outcome.summary["duplicates_dropped"] == len(overlap)
    assert len(outcome.valid) == len(frame)


def test_conflicting_duplicates_still_quarantine():
    frame = clean_frame(n_series=4)
    conflicting = frame[frame["unique_id"] == "cpu_cores/c1"].iloc[:3].assign(y=lambda d: d["y"] + 5)
    outcome = validate_frame(pd.concat([frame, conflicting], ignore_index=True), cfg=ValidationConfig())
    assert list(outcome.reasons) == ["cpu_cores/c1"]
    assert "duplicate timestamps: 6 row(s)" in reasons_of(outcome)["cpu_cores/c1"]
    assert outcome.summary["duplicates_dropped"] == 0


def _end_of(frame: pd.DataFrame) -> pd.Timestamp:
    return frame["ds"].max() + pd.Timedelta("5min")


def test_a_series_six_hours_behind_is_quarantined_as_stale():
    frame = clean_frame(n_series=8)
    end = _end_of(frame)
    behind = (frame["unique_id"] == "cpu_cores/c3") & (frame["ds"] >= end - pd.Timedelta("6h"))
    outcome = validate_frame(frame[~behind], cfg=ValidationConfig(), data_end=end)
    assert list(outcome.reasons) == ["cpu_cores/c3"]
    text = reasons_of(outcome)["cpu_cores/c3"]
    assert "stale" in text and "6h 5m before the data interval end" in text and "validation.max_staleness" in text
    s = outcome.summary
    assert s["series_stale"] == 1 and s["data_age_s"] == 300 and s["passed"]
    assert s["last_timestamp"] == frame["ds"].max().isoformat()


def test_fresh_data_and_the_staleness_limit():
    frame = clean_frame(n_series=2)
    end = _end_of(frame)
    # 14 minutes since the last point: within the default (15 minutes at 5-minute data)
    assert validate_frame(frame, cfg=ValidationConfig(), data_end=end + pd.Timedelta("9min")).reasons == {}
    late = validate_frame(frame, cfg=ValidationConfig(), data_end=end + pd.Timedelta("11min"), raise_on_failure=False)
    assert set(late.reasons) == {"cpu_cores/c0", "cpu_cores/c1"} and not late.passed
    relaxed = ValidationConfig(max_staleness="1h")
    assert validate_frame(frame, cfg=relaxed, data_end=end + pd.Timedelta("50min")).reasons == {}
    # no data interval end known: no freshness verdict
    assert validate_frame(frame, cfg=ValidationConfig()).summary.get("series_stale") is None


@pytest.mark.parametrize("behind", ["6h", "2D"])
def test_a_source_where_every_series_stopped_fails_naming_source_time_and_setting(behind):
    frame = clean_frame(n_series=4)
    end = _end_of(frame) + pd.Timedelta(behind)
    with pytest.raises(ValidationFailed) as info:
        validate_frame(frame, cfg=ValidationConfig(), data_end=end, source="files /data/x (format long)")
    text = str(info.value)
    assert "the source files /data/x (format long) is stale" in text
    assert frame["ds"].max().isoformat() in text
    assert "validation.max_staleness" in text and "validation.max_stale_share" in text
    outcome = info.value.outcome
    assert outcome.summary["source_stale"] and outcome.summary["series_stale"] == 4
    assert outcome.summary["data_age_s"] == pd.Timedelta(behind).total_seconds() + 300


def test_staleness_setting_is_checked():
    with pytest.raises(Exception, match="max_staleness"):
        load_config(overrides={"validation": {"max_staleness": "soon"}})
