from __future__ import annotations

import json

import pandas as pd
import pytest

from foresight_lib.cli import main
from foresight_lib.frames import SERIES_TABLE_COLUMNS
from foresight_lib.sources.loaders import load_series


def test_extract_bitbrains_to_parquet_and_read_back(tmp_path, shared_data, capsys):
    out = tmp_path / "raw" / "metrics.parquet"
    code = main(["extract", "--source", "files", "--input", str(shared_data / "bitbrains_rnd" / "2013-8" / "100.csv"),
                 "--format", "bitbrains", "--metrics", "cpu_usage_mhz,memory_usage_kb", "--output", str(out)])
    assert code == 0
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["unique_id", "ds", "y"]
    assert str(frame["ds"].dtype) == "datetime64[ns, UTC]"
    assert len(frame) == 2 * 8618
    series = pd.read_parquet(tmp_path / "raw" / "metrics.series.parquet")
    assert list(series.columns) == SERIES_TABLE_COLUMNS
    assert series["unique_id"].tolist() == ["cpu_usage_mhz/vm100", "memory_usage_kb/vm100"]
    assert series["unit"].tolist() == ["MHz", "KB"]
    assert "wrote 17236 rows of 2 series" in capsys.readouterr().out
    # the long loader picks the series table up again
    again = load_series(out, "long")
    pd.testing.assert_frame_equal(again.frame.astype({"unique_id": str}), frame.astype({"unique_id": str}))
    assert again.series["unit"].tolist() == ["MHz", "KB"]
    assert json.loads(again.series["labels"].iloc[0])["vm"] == "100"


def test_extract_alibaba2018_keeps_counter_flag_in_csv_output(tmp_path, shared_data):
    out = tmp_path / "machines.csv"
    code = main(["extract", "--input", str(shared_data / "alibaba2018_machines"), "--format", "alibaba2018",
                 "--metrics", "net_in", "--output", str(out)])
    assert code == 0
    frame = pd.read_csv(out)
    assert frame["unique_id"].nunique() == 16
    series = pd.read_parquet(tmp_path / "machines.series.parquet")
    assert all(json.loads(labels)["metric_type"] == "counter" for labels in series["labels"])
    loaded = load_series(out, "long")
    assert len(loaded.frame) == len(frame)
    assert loaded.frame["ds"].iloc[0].tzname() == "UTC"


@pytest.mark.parametrize(("args", "words"), [
    (["--format", "nab", "--output", "x.parquet"], "--source files needs --input"),
    (["--input", "somewhere", "--format", "nab", "--output", "x.json"], "end the name with .parquet or .csv"),
    (["--input", "does/not/exist", "--format", "nab", "--output", "x.parquet"], "no such file or folder"),
    (["--source", "prometheus", "--url", "http://localhost:9090", "--output", "x.parquet"],
     "--source prometheus needs --query and --start and --end"),
])
def test_bad_extract_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    code = main(["extract", *args])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("foresight extract: error:")
    assert words in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_bad_file_in_the_folder_is_reported(tmp_path, nab_data, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    src = nab_data / "nab_aws" / "realAWSCloudwatch" / "ec2_network_in_257a54.csv"
    (folder / src.name).write_text(src.read_text())
    (folder / "ec2_network_in_ffffff.csv").write_text("when,what\n1,2\n")
    code = main(["extract", "--input", str(folder), "--format", "nab", "--output", str(tmp_path / "o.parquet")])
    assert code == 0
    captured = capsys.readouterr()
    assert "ec2_network_in_ffffff.csv" in captured.err and "missing column" in captured.err
    assert "1 skipped" in captured.out
    assert pd.read_parquet(tmp_path / "o.parquet")["unique_id"].unique().tolist() == ["network_in/257a54"]
