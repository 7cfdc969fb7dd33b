from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.frames import SERIES_TABLE_COLUMNS
from foresight_lib.sources.loaders import (
    BITBRAINS_METRICS,
    LoadResult,
    infer_freq,
    load_series,
    parse_nab_name,
)
from foresight_lib.sources.saving import save_frame, series_table_path

UTC = "UTC"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def check_contract(result: LoadResult) -> None:
    frame, series = result
    assert list(frame.columns) == ["unique_id", "ds", "y"]
    assert str(frame["ds"].dtype) == "datetime64[ns, UTC]"
    assert frame["y"].dtype == np.float64
    assert not frame["y"].isna().any()
    assert frame.equals(frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True))
    assert list(series.columns) == SERIES_TABLE_COLUMNS
    assert set(series["unique_id"]) == set(frame["unique_id"])
    for labels in series["labels"]:
        assert isinstance(json.loads(labels), dict)


# ---------------------------------------------------------------------------
# NAB


def test_nab_folder_with_metric_filter(shared_data):
    result = load_series(shared_data / "nab_aws", "nab", metrics=["cpu_utilization"])
    check_contract(result)
    frame, series = result
    assert len(series) == 11  # 8 ec2 + 2 rds + the realKnownCause ASG file
    assert set(series["metric"]) == {"cpu_utilization"}
    assert set(series["unit"]) == {"percent"}
    one = frame[frame["unique_id"] == "cpu_utilization/24ae8d"]
    assert len(one) == 4032
    assert one["ds"].iloc[0] == ts("2014-02-14 14:30")
    assert one["ds"].iloc[-1] == ts("2014-02-28 14:25")
    assert one["y"].iloc[0] == pytest.approx(0.132)
    row = series.set_index("unique_id").loc["cpu_utilization/24ae8d"]
    assert row["entity"] == "24ae8d"
    assert row["freq"] == "5min"
    assert json.loads(row["labels"])["service"] == "ec2"
    assert result.skipped == []


def test_nab_dst_file_keeps_repeated_stamps_as_duplicates(nab_data):
    path = nab_data / "nab_aws" / "realAWSCloudwatch" / "ec2_disk_write_bytes_1ef3de.csv"
    frame, series = load_series(path, "nab")
    assert len(frame) == 4730
    assert series["unique_id"].tolist() == ["disk_write_bytes/1ef3de"]
    assert series["unit"].tolist() == ["bytes"]
    assert frame["ds"].iloc[0] == ts("2014-03-01 17:34")
    assert frame["ds"].iloc[-1] == ts("2014-03-18 03:39")
    # the US daylight-saving jump: 02:00-02:59 missing, then 03:00 twelve times
    assert (frame["ds"] == ts("2014-03-09 03:00")).sum() == 12
    assert int(frame["ds"].duplicated().sum()) == 11


@pytest.mark.parametrize(("stem", "expected"), [
    ("ec2_cpu_utilization_24ae8d", ("cpu_utilization", "24ae8d", "percent")),
    ("ec2_network_in_257a54", ("network_in", "257a54", "bytes")),
    ("ec2_disk_write_bytes_c0d644", ("disk_write_bytes", "c0d644", "bytes")),
    ("elb_request_count_8c0756", ("request_count", "8c0756", "count")),
    ("rds_cpu_utilization_e47b3b", ("cpu_utilization", "e47b3b", "percent")),
    ("iio_us-east-1_i-a2eb1cd9_NetworkIn", ("network_in", "i-a2eb1cd9", "bytes")),
    ("cpu_utilization_asg_misconfiguration", ("cpu_utilization", "asg_misconfiguration", "percent")),
    ("grok_asg_anomaly", ("grok_asg_anomaly", "nab", "unknown")),
])
def test_nab_names(stem, expected):
    metric, entity, unit, labels = parse_nab_name(stem)
    assert (metric, entity, unit) == expected
    assert labels["source_file"] == stem


def test_glob_pattern(shared_data):
    frame, series = load_series(shared_data / "nab_aws" / "*" / "ec2_network_in_*.csv", "nab")
    assert series["unique_id"].tolist() == ["network_in/257a54", "network_in/5abac7"]
    assert len(frame) == 4032 + 4730


def test_nab_whole_folder(shared_data):
    frame, series = load_series(shared_data / "nab_aws", "nab")
    assert len(series) == 18
    assert len(frame) == 85790  # the row counts of PROVENANCE.md's table, summed
    assert series["unique_id"].is_unique


# ---------------------------------------------------------------------------
# Bitbrains


def test_bitbrains_single_vm(shared_data):
    result = load_series(shared_data / "bitbrains_rnd" / "2013-8" / "100.csv", "bitbrains",
                         metrics=["cpu_usage_mhz", "memory_usage_kb"])
    check_contract(result)
    frame, series = result
    assert series["unique_id"].tolist() == ["cpu_usage_mhz/vm100", "memory_usage_kb/vm100"]
    assert series["unit"].tolist() == ["MHz", "KB"]
    assert series["entity"].tolist() == ["vm100", "vm100"]
    cpu = frame[frame["unique_id"] == "cpu_usage_mhz/vm100"]
    assert len(cpu) == 8618
    # the header says ms, the values are seconds: 1375308176 s = 2013-07-31 22:02:56 UTC
    assert cpu["ds"].iloc[0] == ts("2013-07-31 22:02:56")
    assert cpu["ds"].iloc[-1] == ts("2013-08-30 21:58:21")
    assert cpu["y"].iloc[0] == pytest.approx(95.33331958333333)
    mem = frame[frame["unique_id"] == "memory_usage_kb/vm100"]
    assert mem["y"].iloc[0] == pytest.approx(285211.73333333334)


def test_bitbrains_scientific_notation_and_cpu_over_100(shared_data):
    folder = shared_data / "bitbrains_rnd" / "2013-8"
    frame, _ = load_series(folder / "120.csv", "bitbrains", metrics=["memory_provisioned_kb"])
    assert frame["y"].iloc[0] == 16703488.0  # written 1.6703488E7
    frame, _ = load_series(folder / "60.csv", "bitbrains", metrics=["cpu_usage_percent"])
    assert frame["y"].max() > 100
    assert frame.loc[frame["ds"] == ts("2013-08-01 08:57:59"), "y"].iloc[0] == pytest.approx(105.01666666666667)


def test_bitbrains_vm20_duplicates_are_kept_for_the_features_step(shared_data):
    frame, _ = load_series(shared_data / "bitbrains_rnd" / "2013-8" / "20.csv", "bitbrains",
                           metrics=["cpu_usage_mhz"])
    assert len(frame) == 25673
    assert int(frame["ds"].duplicated().sum()) == 8600


def test_bitbrains_whole_folder_is_fast(shared_data):
    started = time.perf_counter()
    result = load_series(shared_data / "bitbrains_rnd" / "2013-8", "bitbrains")
    elapsed = time.perf_counter() - started
    assert len(result.series) == 25 * len(BITBRAINS_METRICS)
    assert len(result.frame) == 232608 * 10
    assert elapsed < 10, f"loading 25 Bitbrains files took {elapsed:.1f} s"
    assert set(result.series["metric"]) == set(BITBRAINS_METRICS)


def test_bitbrains_unknown_metric_is_a_config_error(shared_data):
    with pytest.raises(ConfigError, match="cpu_usage_mhz"):
        load_series(shared_data / "bitbrains_rnd" / "2013-8", "bitbrains", metrics=["cpu_mhz"])


def test_bitbrains_one_bad_file_is_skipped(tmp_path, shared_data):
    src = shared_data / "bitbrains_rnd" / "2013-8" / "100.csv"
    lines = src.read_text().splitlines()[:50]
    (tmp_path / "100.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "200.csv").write_text(lines[0] + "\n" + "1375308176;\t2;\tabc;\t1;\t1;\t1;\t1;\t1;\t1;\t1;\t1\n")
    result = load_series(tmp_path, "bitbrains", metrics=["cpu_capacity_mhz"])
    assert result.series["unique_id"].tolist() == ["cpu_capacity_mhz/vm100"]
    assert len(result.frame) == 49
    assert len(result.skipped) == 1
    assert result.skipped[0]["file"].endswith("200.csv")
    assert "non-numeric" in result.skipped[0]["reason"]


# ---------------------------------------------------------------------------
# Alibaba


def test_alibaba2018(shared_data):
    result = load_series(shared_data / "alibaba2018_machines", "alibaba2018",
                         metrics=["cpu_util_percent", "net_in", "disk_io_percent"])
    check_contract(result)
    frame, series = result
    assert len(series) == 3 * 16
    cpu = frame[frame["unique_id"] == "cpu_util_percent/m_1932"]
    assert len(cpu) == 3325
    # relative seconds anchored at 2018-01-01 00:00 UTC: 386640 s = 4 d 11 h 24 min
    assert cpu["ds"].iloc[0] == ts("2018-01-05 11:24:00")
    assert cpu["y"].iloc[0] == 41.0
    net = series.set_index("unique_id").loc["net_in/m_1932"]
    assert json.loads(net["labels"])["metric_type"] == "counter"
    disk = frame[frame["unique_id"].str.startswith("disk_io_percent/")]
    assert disk["y"].between(0, 100).all()
    assert sum(int(n["note"].split()[0]) for n in result.notes) == 16  # 6 rows at -1, 10 at 101


def test_alibaba_genai(shared_data):
    result = load_series(shared_data / "alibaba_genai_pod_memory", "alibaba_genai")
    check_contract(result)
    frame, series = result
    assert set(series["unit"]) == {"fraction"}
    assert len(frame) == 214890 - 49  # rows without container_ip are dropped, with a note
    assert any("49 row(s)" in n["note"] for n in result.notes)
    assert frame["ds"].min() == ts("2022-09-11 01:12")
    assert frame["ds"].max() == ts("2022-09-12 00:00")
    one = series.set_index("unique_id").loc["memory_utilization/25da09a77268ccc99a7968b3e453b8f0"]
    assert one["freq"] == "57s"


# ---------------------------------------------------------------------------
# long format, writing and reading back


def test_long_roundtrip_with_series_table(tmp_path):
    ds = pd.date_range("2024-01-01", periods=4, freq="5min", tz=UTC).as_unit("ns")
    frame = pd.DataFrame({"unique_id": ["container_memory_usage_bytes/pod-a"] * 4, "ds": ds,
                          "y": [1.0, 2.0, 3.0, 4.0]})
    table = pd.DataFrame([{"unique_id": "container_memory_usage_bytes/pod-a", "metric": "container_memory_usage_bytes",
                           "entity": "pod-a", "unit": "bytes", "labels": json.dumps({"namespace": "x"}),
                           "freq": "5min"}])
    out = tmp_path / "raw.parquet"
    save_frame(frame, out)
    save_frame(table, series_table_path(out))
    assert series_table_path(out).name == "raw.series.parquet"
    loaded, series = load_series(out, "long")
    assert isinstance(loaded["unique_id"].dtype, pd.CategoricalDtype)  # a long file's ids are read as categories
    pd.testing.assert_frame_equal(loaded.astype({"unique_id": str}), frame)
    assert json.loads(series["labels"].iloc[0]) == {"namespace": "x"}
    # a folder: the series table beside the file is not read as data
    loaded, series = load_series(tmp_path, "long")
    assert len(loaded) == 4 and series["unit"].tolist() == ["bytes"]


def test_long_csv_guesses_units_and_parses_offsets(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("unique_id,ds,y\ncpu_usage_percent/a,2024-01-01T01:00:00+01:00,5\n"
                    "cpu_usage_percent/a,2024-01-01T00:05:00Z,6\nfoo/b,2024-01-01 00:00:00,1\n")
    frame, series = load_series(path, "long")
    assert frame["ds"].tolist()[:2] == [ts("2024-01-01 00:00"), ts("2024-01-01 00:05")]
    assert series.set_index("unique_id")["unit"].to_dict() == {"cpu_usage_percent/a": "percent", "foo/b": "unknown"}
    frame, _ = load_series(path, "long", metrics=["foo"])
    assert frame["unique_id"].unique().tolist() == ["foo/b"]


def test_save_frame_is_atomic_and_checks_the_extension(tmp_path):
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(ConfigError, match=r"\.parquet or \.csv"):
        save_frame(frame, tmp_path / "x.txt")
    target = tmp_path / "x.parquet"
    target.write_text("old")

    class Boom(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_frame(Boom({"a": [1]}), target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_infer_freq():
    assert infer_freq(pd.date_range("2024-01-01", periods=5, freq="5min")) == "5min"
    assert infer_freq(pd.date_range("2024-01-01", periods=5, freq="57s")) == "57s"
    assert infer_freq(pd.date_range("2024-01-01", periods=5, freq="h")) == "1h"
    assert infer_freq(pd.DatetimeIndex(["2024-01-01"])) is None


# ---------------------------------------------------------------------------
# bad input: a DataError naming the file


BAD_FILES = {
    "empty": ("", "empty"),
    "header only": ("timestamp,value\n", "no rows"),
    "garbage": ("\x00\x01\x02garbage;;\n\x7f,,,\n", "missing column"),
    "missing column": ("timestamp,val\n2014-01-01 00:00:00,1\n", "missing column"),
    "text in value": ("timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,high\n", "non-numeric"),
    "bad timestamp": ("timestamp,value\nyesterday,1\n2014-01-01 00:05:00,2\n", "timestamp"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_nab_file_raises_data_error_naming_it(tmp_path, case):
    text, words = BAD_FILES[case]
    path = tmp_path / "ec2_cpu_utilization_abc123.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=words) as info:
        load_series(path, "nab")
    assert str(path) in str(info.value)


def test_bad_long_files(tmp_path):
    garbled = tmp_path / "bad.parquet"
    garbled.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="cannot be read as Parquet") as info:
        load_series(garbled, "long")
    assert str(garbled) in str(info.value)
    text = tmp_path / "text.csv"
    text.write_text("unique_id,ds,y\na/b,2024-01-01,1\na/b,2024-01-01 00:05,n/a?\n")
    with pytest.raises(DataError, match=r"non-numeric.*'y'"):
        load_series(text, "long")
    invalid_bytes = tmp_path / "binary.csv"
    invalid_bytes.write_bytes(b"unique_id,ds,y\n\xff\xfe\xfa,\x80\x81,1\n")
    with pytest.raises(DataError, match="binary.csv"):
        load_series(invalid_bytes, "long")


def test_folder_skips_bad_files_and_fails_only_when_all_are_bad(tmp_path, nab_data):
    good = nab_data / "nab_aws" / "realAWSCloudwatch" / "ec2_cpu_utilization_24ae8d.csv"
    (tmp_path / good.name).write_text(good.read_text())
    (tmp_path / "ec2_cpu_utilization_000000.csv").write_text("")
    result = load_series(tmp_path, "nab")
    assert result.series["unique_id"].tolist() == ["cpu_utilization/24ae8d"]
    assert [s["file"].rsplit("/", 1)[-1] for s in result.skipped] == ["ec2_cpu_utilization_000000.csv"]
    (tmp_path / good.name).write_text("timestamp,value\n")
    with pytest.raises(DataError, match="none of 2 file"):
        load_series(tmp_path, "nab")


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="no such file or folder") as info:
        load_series(tmp_path / "nope", "nab")
    assert "nope" in str(info.value)
    with pytest.raises(DataError, match="no .*csv file found"):
        load_series(tmp_path, "nab")
    with pytest.raises(ConfigError, match="unknown format"):
        load_series(tmp_path, "excel")


def test_long_csv_with_a_bom_and_semicolons_reads_like_the_plain_one(tmp_path):
    rows = "unique_id;ds;y\ncpu/a;2024-03-01T00:00:00Z;1.5\ncpu/a;2024-03-01T00:05:00Z;2.5\n"
    path = tmp_path / "series.csv"
    path.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    frame = load_series(path, "long").frame
    assert frame["unique_id"].tolist() == ["cpu/a", "cpu/a"]
    assert frame["y"].tolist() == [1.5, 2.5]


def test_long_format_keeps_missing_values_for_validation_to_count(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text("unique_id,ds,y\ncpu/a,2024-03-01T00:00:00Z,\ncpu/a,2024-03-01T00:05:00Z,\n"
                    "cpu/b,2024-03-01T00:00:00Z,1.0\n")
    loaded = load_series(path, "long")
    assert sorted(loaded.series["unique_id"]) == ["cpu/a", "cpu/b"], "an all-missing series is not dropped silently"
    assert loaded.frame.loc[loaded.frame["unique_id"] == "cpu/a", "y"].isna().all()


OUT_OF_RANGE = {
    # case: (ds cells, what the error says)
    "epoch-ms": (["1710460800000", "1710461100000"], r"look like Unix milliseconds"),
    "infinity-date": (["2024-03-15T00:00:00Z", "9999-12-31T00:00:00Z"], r"9999-12-31.*row\(s\) \[2\]"),
    "year-1677": (["2024-03-15T00:00:00Z", "1677-01-01T00:00:00Z"], r"1677-01-01.*row\(s\) \[2\]"),
    "unparsable": (["2024-03-15T00:00:00Z", "not a time"], r"could not be parsed.*row\(s\) \[2\]"),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE))
def test_out_of_range_timestamps_are_a_data_error_naming_file_and_row(tmp_path, case):
    cells, match = OUT_OF_RANGE[case]
    path = tmp_path / "series.csv"
    path.write_text("unique_id,ds,y\n" + "".join(f"cpu_cores/a,{c},1.0\n" for c in cells))
    with pytest.raises(DataError, match=match) as info:
        load_series(path, "long")
    assert str(path) in str(info.value)


def test_out_of_range_timestamps_in_parquet(tmp_path):
    path = tmp_path / "series.parquet"
    ds = np.array(["2024-03-15", "9999-12-31"], dtype="datetime64[us]")
    pd.DataFrame({"unique_id": "cpu_cores/a", "ds": ds, "y": [1.0, 2.0]}).to_parquet(path)
    with pytest.raises(DataError, match=r"series.parquet: 1 timestamp\(s\) outside .*row\(s\) \[2\]"):
        load_series(path, "long")


def test_a_folder_skips_the_file_with_an_out_of_range_timestamp(tmp_path):
    good = pd.DataFrame({"unique_id": "cpu_cores/a", "ds": pd.date_range("2024-03-15", periods=4, freq="5min", tz=UTC),
                         "y": [1.0, 2.0, 3.0, 4.0]})
    good.to_csv(tmp_path / "good.csv", index=False)
    (tmp_path / "bad.csv").write_text("unique_id,ds,y\ncpu_cores/b,2024-03-15T00:00:00Z,1\ncpu_cores/b,9999-12-31,2\n")
    (tmp_path / "ms.csv").write_text("unique_id,ds,y\ncpu_cores/c,1710460800000,1\n")
    result = load_series(tmp_path, "long")
    assert result.series["unique_id"].tolist() == ["cpu_cores/a"]
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in result.skipped}
    assert set(reasons) == {"bad.csv", "ms.csv"}
    assert "9999-12-31" in reasons["bad.csv"] and "milliseconds" in reasons["ms.csv"]


def test_epoch_formats_name_the_file_and_row_of_an_out_of_range_time(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text("value,timestamp_anon,container_ip\n0.5,100,p1\n0.6,1e13,p1\n")
    with pytest.raises(DataError, match=r"pods.csv: column 'timestamp_anon'.*row\(s\) \[2\]"):
        load_series(path, "alibaba_genai")


def test_overlapping_exports_are_noted_with_files_span_and_counts(tmp_path):
    ds = pd.date_range("2024-03-15", periods=24, freq="5min", tz=UTC)
    frame = pd.DataFrame({"unique_id": "cpu_cores/a", "ds": ds, "y": np.arange(24.0)})
    frame.iloc[:18].to_csv(tmp_path / "export-1.csv", index=False)
    frame.iloc[6:].to_csv(tmp_path / "export-2.csv", index=False)  # an hour in both, identical
    result = load_series(tmp_path, "long")
    assert len(result.frame) == 36
    (note,) = [n["note"] for n in result.notes]
    assert "export-1.csv and export-2.csv overlap from 2024-03-15T00:30:00+00:00 to 2024-03-15T01:25:00+00:00" in note
    assert "12 identical row(s)" in note and "other values" not in note
    changed = frame.iloc[6:].assign(y=lambda d: d["y"] + 1)
    changed.to_csv(tmp_path / "export-2.csv", index=False)
    (note,) = [n["note"] for n in load_series(tmp_path, "long").notes]
    assert "12 row(s) with other values" in note and "cpu_cores/a" in note


def test_available_metrics_are_known_for_messages(tmp_path):
    ds = pd.date_range("2024-03-15", periods=4, freq="5min", tz=UTC)
    pd.concat([pd.DataFrame({"unique_id": f"{m}/a", "ds": ds, "y": 1.0}) for m in ("cpu_cores", "memory_bytes")]
              ).to_csv(tmp_path / "x.csv", index=False)
    result = load_series(tmp_path / "x.csv", "long", ["gpu"])
    assert result.frame.empty and result.available == ["cpu_cores", "memory_bytes"]
