"""Series ids as categories and sorting without copies: what keeps a run's frames small."""
from __future__ import annotations

import numpy as np
import pandas as pd

from foresight_lib.frames import categorical_ids, check_series_frame, read_parquet_frame, sort_series, text_ids


def long_frame(ids: list[str], n: int = 3) -> pd.DataFrame:
    ds = pd.date_range("2024-03-01", periods=n, freq="5min", tz="UTC").as_unit("ns")
    return pd.DataFrame({"unique_id": np.repeat(ids, n), "ds": np.tile(ds, len(ids)),
                         "y": np.arange(len(ids) * n, dtype="float64")})


def test_categorical_ids_keep_the_ids_present_in_text_order():
    ids = pd.Series(["b/2", "a/1", "b/2"]).astype(pd.CategoricalDtype(["b/2", "zz/unused", "a/1"]))
    out = categorical_ids(ids)
    assert list(out.cat.categories) == ["a/1", "b/2"]
    assert out.tolist() == ["b/2", "a/1", "b/2"]
    assert list(categorical_ids(pd.Series([2, 1])).cat.categories) == ["1", "2"]  # ids are text
    assert text_ids(pd.Series([2, 1])).tolist() == ["2", "1"]  # text stays text
    assert isinstance(text_ids(ids).dtype, pd.CategoricalDtype)


def test_sort_series_sorts_by_id_then_time_and_leaves_a_sorted_frame_uncopied():
    frame = long_frame(["a/1", "b/2"])
    frame["unique_id"] = categorical_ids(frame["unique_id"])
    same = sort_series(frame)
    assert np.shares_memory(same["y"].to_numpy(), frame["y"].to_numpy())
    shuffled = frame.iloc[[4, 0, 5, 2, 1, 3]]
    out = sort_series(shuffled)
    pd.testing.assert_frame_equal(out, frame)
    text = long_frame(["b/2", "a/1"])  # text ids out of order, then times out of order in one series
    assert sort_series(text)["unique_id"].tolist() == ["a/1"] * 3 + ["b/2"] * 3
    backwards = long_frame(["a/1"]).iloc[[0, 2, 1]]
    assert sort_series(backwards)["ds"].is_monotonic_increasing


def test_check_series_frame_keeps_categorical_ids_and_parquet_reads_them_back(tmp_path):
    frame = long_frame(["b/2", "a/1"])
    checked = check_series_frame(frame.assign(unique_id=frame["unique_id"].astype("category")))
    assert isinstance(checked["unique_id"].dtype, pd.CategoricalDtype)
    assert checked["unique_id"].tolist() == ["a/1"] * 3 + ["b/2"] * 3
    frame.to_parquet(tmp_path / "f.parquet", index=False)
    read = read_parquet_frame(str(tmp_path / "f.parquet"))
    assert list(read["unique_id"].cat.categories) == ["a/1", "b/2"]
    pd.testing.assert_frame_equal(read.astype({"unique_id": str}), frame)
