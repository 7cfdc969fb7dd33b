"""Read real resource-usage data into the long frame and the series table.

``load_series(path, fmt)`` returns a ``LoadResult``: the long frame (``unique_id, ds,
y``; UTC, float64, sorted), the series table (``frames.SERIES_TABLE_COLUMNS``) and the
files or series that were skipped, each with its reason. Within a folder one bad file
is skipped, not fatal; a single bad file given on its own raises ``DataError``. The path
is local or ``s3://bucket/key`` (``file_reading.source_path``): every format reads from
S3 the same way, and messages name an S3 file by its URI.

Formats:

- ``long``: CSV or Parquet with ``unique_id, ds, y`` (optionally ``metric, entity,
  unit, labels``), one file or a folder of them. A ``<stem>.series.parquet`` beside a
  file (what ``foresight extract`` writes) supplies its series table.
- ``nab``: Numenta Anomaly Benchmark CloudWatch files, one ``timestamp,value`` CSV per
  series; metric and unit from the file name, naive timestamps taken as UTC.
- ``bitbrains``: GWA-T-12 Bitbrains per-VM files (``;``+TAB separated, ten metrics).
- ``alibaba2018``: Alibaba cluster-trace-v2018 ``machine_usage.csv`` (no header).
- ``alibaba_genai``: Alibaba GenAI trace ``pod_memory_util_anon.csv``.

A counter (a running total whose rate is the quantity of interest) is flagged in the
series table by ``"metric_type": "counter"`` in its labels; the features step turns it
into a rate.
"""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.frames import (
    SERIES_COLUMNS,
    SERIES_TABLE_COLUMNS,
    categorical_ids,
    check_series_frame,
    epoch_to_utc,
    guess_unit,
    make_unique_id,
    read_parquet_frame,
    split_unique_id,
    to_utc,
)
from foresight_lib.horizons import format_duration
from foresight_lib.sources.file_reading import (
    SourcePath,
    folder_files,
    glob_files,
    is_glob,
    numeric,
    read_csv,
    readable,
    require,
    separator,
    source_path,
)
from foresight_lib.sources.s3_paths import S3Path

log = logging.getLogger(__name__)

COUNTER_LABEL = "metric_type"
"""Label key that marks a series' type; value ``counter`` for running totals."""

ALIBABA2018_EPOCH = pd.Timestamp("2018-01-01T00:00:00Z")
"""Anchor of the Alibaba 2018 trace's relative seconds (the trace gives no absolute date).

Fixed so that loads are reproducible; the trace's 8 days then fall on Mon 2018-01-01 to
Mon 2018-01-09 UTC. Day-of-week and time-of-day features are therefore not meaningful
for this data set.
"""


@dataclass
class LoadResult:
    """What a loader read: the long frame, the series table and what it skipped.

    Unpacks as the pair ``frame, series = load_series(...)``.
    """

    frame: pd.DataFrame
    series: pd.DataFrame
    skipped: list[dict] = field(default_factory=list)
    """``{"file": path, "reason": ...}`` per skipped file (or ``unique_id`` per skipped series)."""
    notes: list[dict] = field(default_factory=list)
    """``{"unique_id" or "file": ..., "note": ...}``: rows dropped or values changed on the way in."""
    available: list[str] = field(default_factory=list)
    """Every metric the source offers (before ``metrics`` kept some), for messages."""

    def __iter__(self) -> Iterator[pd.DataFrame]:
        yield self.frame
        yield self.series


def load_series(path: str | Path | S3Path, fmt: str, metrics: Sequence[str] | None = None) -> LoadResult:
    """Load ``path`` in format ``fmt`` as a long frame and series table.

    Args:
        path: a file, a folder searched recursively for the format's files, or a glob
            pattern (``data/*.csv``); local, or on S3 as ``s3://bucket/key`` (endpoint and
            credentials as for the data root, ``locations.s3_filesystem``).
        fmt: one of ``FORMATS``.
        metrics: keep only these metric names (e.g. ``["cpu_utilization"]``).

    Raises:
        ConfigError: unknown format or metric name.
        DataError: the path does not exist, or nothing in it could be read (the reasons
            per file are listed).
        SourceError: S3 refused or could not be reached.
    """
    if fmt not in _LOADERS:
        raise ConfigError(f"unknown format '{fmt}'; choose from {list(FORMATS)}")
    path = source_path(path)
    if not path.exists() and not (is_glob(path) and glob_files(path)):
        raise DataError(f"{path}: no such file or folder; check the input path")
    wanted = _clean_metrics(metrics)
    result = _LOADERS[fmt](path, wanted)
    if wanted is not None:
        found = set(result.series["metric"])
        missing = sorted(wanted - found)
        if missing:
            log.warning("metric(s) %s not found in %s; it has %s", missing, path, result.available)
    for row in result.skipped:
        log.warning("skipped %s: %s", row.get("file") or row.get("unique_id"), row["reason"])
    log.info("loaded %d series, %d rows from %s (%d skipped)", len(result.series), len(result.frame),
             path, len(result.skipped))
    return result


def _clean_metrics(metrics: Sequence[str] | str | None) -> set[str] | None:
    if metrics is None:
        return None
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    names = {m.strip() for m in metrics if m and m.strip()}
    return names or None


# ---------------------------------------------------------------------------
# Shared helpers


def _label_json(labels: dict) -> str:
    return json.dumps(labels, sort_keys=True)


def infer_freq(ds: pd.Series | pd.DatetimeIndex) -> str | None:
    """The median step of sorted timestamps as a short label (``5min``, ``57s``, ``1h``); None if < 2 distinct."""
    values = np.unique(pd.DatetimeIndex(ds).as_unit("ns").asi8)
    if values.size < 2:
        return None
    step = pd.Timedelta(int(np.median(np.diff(values))), unit="ns").round("s")
    if step <= pd.Timedelta(0):
        return None
    label = format_duration(step)
    return label.replace("m", "min") if label.endswith("m") else label


def _freqs(frame: pd.DataFrame) -> dict[str, str | None]:
    return {uid: infer_freq(g) for uid, g in frame.groupby("unique_id", sort=False)["ds"]}


def _make_series_table(rows: list[dict], frame: pd.DataFrame) -> pd.DataFrame:
    """Series table from per-series rows, restricted to ids in ``frame``, with inferred frequency."""
    table = pd.DataFrame(rows, columns=SERIES_TABLE_COLUMNS[:-1])
    table = table.drop_duplicates("unique_id", keep="first")
    freqs = _freqs(frame)
    table = table[table["unique_id"].isin(freqs)].copy()
    table["freq"] = table["unique_id"].map(freqs)
    table["freq"] = table["freq"].astype(object).where(table["freq"].notna(), None)
    return table.sort_values("unique_id").reset_index(drop=True)[SERIES_TABLE_COLUMNS]


def _load_files(
    path: SourcePath, files: list[SourcePath],
    read_one: Callable[[SourcePath], tuple[pd.DataFrame, list[dict], list[dict]]],
) -> LoadResult:
    """Read each file; in a folder a failing file is skipped with its reason, a single file raises."""
    frames, rows, skipped, notes, read = [], [], [], [], []
    for file in files:
        try:
            try:
                frame, table_rows, file_notes = read_one(file)
            except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:
                raise DataError(f"{file}: a timestamp is out of range ({exc}); fix or remove that row") from exc
        except DataError as exc:
            if path.is_file():
                raise
            skipped.append({"file": str(file), "reason": str(exc)})
            continue
        if not frame.empty:
            frames.append(frame)
            read.append(file)
            rows.extend(table_rows)
        notes.extend(file_notes)
    if not frames:
        if skipped:
            reasons = "; ".join(s["reason"] for s in skipped[:3])
            raise DataError(f"{path}: none of {len(files)} file(s) could be read: {reasons}")
        return _empty_result(skipped, notes)
    notes.extend(overlaps(read, frames))
    frame = check_series_frame(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True),
                               source=str(path))
    return LoadResult(frame, _make_series_table(rows, frame), skipped, notes)


def overlaps(files: Sequence[SourcePath], frames: Sequence[pd.DataFrame]) -> list[dict]:
    """Notes on files that hold the same series at the same times (two exports that overlap).

    One note per pair of files: the overlap's span, its series, and how many of its rows
    are identical in both (validation drops them) or differ (their series are quarantined
    as duplicates). Only series found in several files are compared.
    """
    if len(frames) < 2:
        return []
    spans = pd.concat([frame.assign(unique_id=frame["unique_id"].astype(str)).groupby("unique_id")["ds"]
                       .agg(["min", "max"]).assign(file=i) for i, frame in enumerate(frames)])
    shared_ids = spans[spans.index.duplicated(keep=False)]
    pairs: dict[tuple[int, int], set[str]] = defaultdict(set)
    for uid, rows in shared_ids.groupby(level=0):
        rows = rows.sort_values("file")
        for (_, a), (_, b) in combinations(rows.iterrows(), 2):
            if max(a["min"], b["min"]) <= min(a["max"], b["max"]):
                pairs[(int(a["file"]), int(b["file"]))].add(str(uid))
    notes = []
    for (i, j), ids in sorted(pairs.items()):
        keys = ["unique_id", "ds"]
        shared = _rows_of(frames[i], ids).merge(_rows_of(frames[j], ids), on=keys, suffixes=("_a", "_b"))
        if shared.empty:
            continue
        differs = (shared["y_a"] != shared["y_b"]) & ~(shared["y_a"].isna() & shared["y_b"].isna())
        text = (f"{files[i].name} and {files[j].name} overlap from {shared['ds'].min().isoformat()} to "
                f"{shared['ds'].max().isoformat()} in {shared['unique_id'].nunique()} series: "
                f"{int((~differs).sum())} identical row(s) (dropped as duplicates)")
        if differs.any():
            conflicting = sorted(shared.loc[differs, "unique_id"].unique())
            text += (f", {int(differs.sum())} row(s) with other values (their series are quarantined as duplicate "
                     f"timestamps, e.g. {conflicting[:3]}); remove one of the exports or the overlap")
        notes.append({"file": f"{files[i]}, {files[j]}", "note": text})
    return notes


def _rows_of(frame: pd.DataFrame, ids: set[str]) -> pd.DataFrame:
    uid = frame["unique_id"].astype(str)
    return pd.DataFrame({"unique_id": uid, "ds": frame["ds"], "y": frame["y"]})[uid.isin(ids)]


def _empty_result(skipped: list[dict], notes: list[dict]) -> LoadResult:
    frame = pd.DataFrame({
        "unique_id": pd.Series([], dtype=str), "ds": pd.Series([], dtype="datetime64[ns, UTC]"),
        "y": pd.Series([], dtype="float64"),
    })
    return LoadResult(frame, pd.DataFrame(columns=SERIES_TABLE_COLUMNS), skipped, notes)


def _long_pieces(uid: str, ds: pd.Series | pd.DatetimeIndex, values: np.ndarray) -> pd.DataFrame:
    keep = ~np.isnan(values)
    return pd.DataFrame({"unique_id": uid, "ds": pd.DatetimeIndex(ds)[keep], "y": values[keep]})


def _filter_empty(metrics: set[str] | None, available: Sequence[str], fmt: str) -> None:
    if metrics is None:
        return
    unknown = sorted(metrics - set(available))
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown} for format {fmt}; choose from {list(available)}")


# ---------------------------------------------------------------------------
# long


def _load_long(path: SourcePath, metrics: set[str] | None) -> LoadResult:
    def is_table(f: SourcePath) -> bool:
        return f.name.endswith(".series.parquet") or f.name.endswith(".series.csv")

    files = folder_files(path, ["*.csv", "*.parquet"], exclude=is_table)
    seen: set[str] = set()
    result = _load_files(path, files, lambda f: _read_long_file(f, metrics, seen))
    result.available = sorted(seen)
    return result


def _read_long_file(file: SourcePath, metrics: set[str] | None,
                    seen: set[str] | None = None) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    if file.suffix.lower() == ".parquet":
        if file.stat().st_size == 0:
            raise DataError(f"{file}: file is empty; remove it or re-export the data")
        source = readable(file)  # an S3 failure is no corrupt file: it raises as it is
        try:
            df = read_parquet_frame(source)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
            raise DataError(f"{file}: cannot be read as Parquet ({type(exc).__name__}: {str(exc)[:200]}); "
                            "check that the file is complete and really Parquet") from exc
        if df.empty:
            raise DataError(f"{file}: file has no rows; remove it or re-export the data")
    else:
        df = read_csv(file, sep=separator(file), encoding="utf-8-sig")
    require(df, SERIES_COLUMNS, file, "a long-format file")
    df = df.copy(deep=False)  # copy on write: columns are replaced, never changed in place
    df["y"] = numeric(df["y"], file, "y")
    df["ds"] = to_utc(df["ds"], source=str(file))
    df["unique_id"] = categorical_ids(df["unique_id"])
    table = _sidecar_table(file)
    rows = []
    for _, first in df[~df["unique_id"].duplicated()].iterrows():
        uid = first["unique_id"]
        metric_default, entity_default = split_unique_id(uid)
        row = {
            "unique_id": uid,
            "metric": _cell(first, "metric") or metric_default,
            "entity": _cell(first, "entity") or entity_default,
            "unit": _cell(first, "unit") or guess_unit(_cell(first, "metric") or metric_default),
            "labels": _cell(first, "labels") or _label_json({}),
        }
        if table is not None and uid in table.index:
            known = table.loc[uid]
            row.update({k: known[k] for k in ("metric", "entity", "unit", "labels")
                        if k in known.index and isinstance(known[k], str) and known[k]})
        rows.append(row)
    if seen is not None:
        seen.update(r["metric"] for r in rows)
    if metrics is not None:
        keep_ids = {r["unique_id"] for r in rows if r["metric"] in metrics}
        rows = [r for r in rows if r["unique_id"] in keep_ids]
        df = df[df["unique_id"].isin(keep_ids)]
    # Missing values stay: validation counts them per series (max_null_share) and says so.
    return df[SERIES_COLUMNS], rows, []


def _cell(row: pd.Series, column: str) -> str | None:
    if column not in row.index:
        return None
    value = row[column]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _sidecar_table(file: SourcePath) -> pd.DataFrame | None:
    """The series table written beside ``file`` by ``foresight extract``, indexed by unique_id."""
    for suffix in (".series.parquet", ".series.csv"):
        side = file.with_name(file.stem + suffix)
        if side.is_file():
            try:
                read = pd.read_parquet if suffix.endswith("parquet") else pd.read_csv
                table = read(readable(side))
            except Exception as exc:  # noqa: BLE001 - a broken side table only loses metadata
                log.warning("cannot read series table %s (%s); guessing units from names", side, exc)
                return None
            if "unique_id" in table.columns:
                return table.drop_duplicates("unique_id").set_index("unique_id")
    return None


# ---------------------------------------------------------------------------
# NAB (Numenta Anomaly Benchmark, AWS CloudWatch)

_NAB_METRICS = {
    # name in the file (lower case, '_' separated) -> (metric, unit)
    "cpu_utilization": ("cpu_utilization", "percent"),
    "disk_write_bytes": ("disk_write_bytes", "bytes"),
    "network_in": ("network_in", "bytes"),
    "networkin": ("network_in", "bytes"),
    "request_count": ("request_count", "count"),
}


def parse_nab_name(stem: str) -> tuple[str, str, str, dict]:
    """Metric, entity, unit and labels from a NAB file name.

    ``ec2_cpu_utilization_24ae8d`` -> (``cpu_utilization``, ``24ae8d``, ``percent``,
    {service: ec2}); ``iio_us-east-1_i-a2eb1cd9_NetworkIn`` -> (``network_in``,
    ``i-a2eb1cd9``, ``bytes``, {service: iio, region: us-east-1}). A name with no known
    CloudWatch metric keeps the file name as its metric, ``nab`` as entity and unit ``unknown``.
    """
    name = stem.lower()
    labels: dict = {"source_file": stem}
    for key, (metric, unit) in _NAB_METRICS.items():
        idx = name.find(key)
        if idx < 0:
            continue
        before, after = stem[:idx].strip("_"), stem[idx + len(key):].strip("_")
        if after:  # <service>_<metric>_<id>
            entity = after
            if before:
                labels["service"] = before
        else:  # <service>_<region>_<instance>_<Metric>
            parts = before.split("_")
            entity = parts[-1] if parts and parts[-1] else stem
            if len(parts) > 1:
                labels["service"] = parts[0]
            if len(parts) > 2:
                labels["region"] = "_".join(parts[1:-1])
        return metric, entity, unit, labels
    return re.sub(r"[^a-z0-9_]+", "_", name), "nab", "unknown", labels


def _load_nab(path: SourcePath, metrics: set[str] | None) -> LoadResult:
    files = folder_files(path, ["*.csv"])
    available = sorted({parse_nab_name(f.stem)[0] for f in files})
    if metrics is not None:
        files = [f for f in files if parse_nab_name(f.stem)[0] in metrics]
        if not files:
            raise ConfigError(f"no NAB file of metric(s) {sorted(metrics)} in {path}; it has {available}")
    result = _load_files(path, files, _read_nab_file)
    result.available = available
    return result


def _read_nab_file(file: SourcePath) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    df = read_csv(file)
    df.columns = [str(c).strip().lower() for c in df.columns]
    require(df, ["timestamp", "value"], file, "a NAB file")
    metric, entity, unit, labels = parse_nab_name(file.stem)
    uid = make_unique_id(metric, entity)
    values = numeric(df["value"], file, "value")
    ds = to_utc(df["timestamp"], source=str(file))
    row = {"unique_id": uid, "metric": metric, "entity": entity, "unit": unit, "labels": _label_json(labels)}
    return _long_pieces(uid, ds, values), [row], []


# ---------------------------------------------------------------------------
# Bitbrains GWA-T-12

BITBRAINS_COLUMNS = {
    # header (lower case, stripped) -> (metric, unit)
    "cpu cores": ("cpu_cores", "cores"),
    "cpu capacity provisioned [mhz]": ("cpu_capacity_mhz", "MHz"),
    "cpu usage [mhz]": ("cpu_usage_mhz", "MHz"),
    "cpu usage [%]": ("cpu_usage_percent", "percent"),
    "memory capacity provisioned [kb]": ("memory_provisioned_kb", "KB"),
    "memory usage [kb]": ("memory_usage_kb", "KB"),
    "disk read throughput [kb/s]": ("disk_read_kbps", "KB/s"),
    "disk write throughput [kb/s]": ("disk_write_kbps", "KB/s"),
    "network received throughput [kb/s]": ("net_rx_kbps", "KB/s"),
    "network transmitted throughput [kb/s]": ("net_tx_kbps", "KB/s"),
}
BITBRAINS_METRICS = [m for m, _ in BITBRAINS_COLUMNS.values()]


def _load_bitbrains(path: SourcePath, metrics: set[str] | None) -> LoadResult:
    _filter_empty(metrics, BITBRAINS_METRICS, "bitbrains")
    files = folder_files(path, ["*.csv"])
    result = _load_files(path, files, lambda f: _read_bitbrains_file(f, metrics))
    result.available = list(BITBRAINS_METRICS)
    return result


def _epoch_seconds(values: np.ndarray) -> np.ndarray:
    """Unix seconds; values that look like milliseconds (> 1e11) are divided by 1000.

    The Bitbrains header says ``Timestamp [ms]`` but the values are seconds, so the unit
    is decided from the magnitude rather than the header.
    """
    finite = values[np.isfinite(values)]
    if finite.size and np.median(finite) > 1e11:
        return values / 1000.0
    return values


def _read_bitbrains_file(file: SourcePath,
                         metrics: set[str] | None) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    # ';' then TAB: the C parser with skipinitialspace drops the TAB before each value.
    df = read_csv(file, sep=";", skipinitialspace=True, engine="c")
    df.columns = [str(c).strip().lower() for c in df.columns]
    ts_col = next((c for c in df.columns if c.startswith("timestamp")), None)
    if ts_col is None:
        raise DataError(f"{file}: no 'Timestamp' column; a Bitbrains file starts with 'Timestamp [ms];'"
                        f" (found: {list(df.columns)[:12]})")
    wanted = {h: mu for h, mu in BITBRAINS_COLUMNS.items() if metrics is None or mu[0] in metrics}
    require(df, list(wanted), file, "a Bitbrains file")
    seconds = _epoch_seconds(numeric(df[ts_col], file, ts_col))
    if np.isnan(seconds).any():
        raise DataError(f"{file}: {int(np.isnan(seconds).sum())} empty timestamp(s); fix or remove those rows")
    ds = epoch_to_utc(seconds, f"{file}: column '{ts_col}'")
    entity = f"vm{file.stem}"
    pieces, rows = [], []
    for header, (metric, unit) in wanted.items():
        uid = make_unique_id(metric, entity)
        pieces.append(_long_pieces(uid, ds, numeric(df[header], file, header)))
        rows.append({"unique_id": uid, "metric": metric, "entity": entity, "unit": unit,
                     "labels": _label_json({"vm": file.stem, "source_file": file.name})})
    return pd.concat(pieces, ignore_index=True), rows, []


# ---------------------------------------------------------------------------
# Alibaba cluster-trace-v2018, machine_usage.csv

ALIBABA2018_COLUMNS = [
    "machine_id", "time_stamp", "cpu_util_percent", "mem_util_percent", "mem_gps", "mkpi",
    "net_in", "net_out", "disk_io_percent",
]
ALIBABA2018_METRICS = {
    # column -> (metric, unit, counter); mem_gps and mkpi are left out (empty in ~78 % of rows)
    "cpu_util_percent": ("cpu_util_percent", "percent", False),
    "mem_util_percent": ("mem_util_percent", "percent", False),
    "net_in": ("net_in", "normalized", True),
    "net_out": ("net_out", "normalized", True),
    "disk_io_percent": ("disk_io_percent", "percent", False),
}


def _load_alibaba2018(path: SourcePath, metrics: set[str] | None) -> LoadResult:
    _filter_empty(metrics, [m for m, _, _ in ALIBABA2018_METRICS.values()], "alibaba2018")
    files = folder_files(path, ["machine_usage*.csv"])
    result = _load_files(path, files, lambda f: _read_alibaba2018_file(f, metrics))
    result.available = [m for m, _, _ in ALIBABA2018_METRICS.values()]
    return result


def _read_alibaba2018_file(file: SourcePath,
                           metrics: set[str] | None) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    df = read_csv(file, header=None)
    if df.shape[1] != len(ALIBABA2018_COLUMNS):
        raise DataError(f"{file}: {df.shape[1]} column(s), expected {len(ALIBABA2018_COLUMNS)} "
                        f"({', '.join(ALIBABA2018_COLUMNS)}, no header row)")
    df.columns = ALIBABA2018_COLUMNS
    seconds = numeric(df["time_stamp"], file, "time_stamp")
    if np.isnan(seconds).any():
        raise DataError(f"{file}: {int(np.isnan(seconds).sum())} empty time_stamp(s); fix or remove those rows")
    ds = epoch_to_utc(seconds + ALIBABA2018_EPOCH.timestamp(), f"{file}: column 'time_stamp'")
    machines = df["machine_id"].astype(str).to_numpy()
    pieces, rows, notes = [], [], []
    for column, (metric, unit, counter) in ALIBABA2018_METRICS.items():
        if metrics is not None and metric not in metrics:
            continue
        values = numeric(df[column], file, column)
        if column == "disk_io_percent":  # -1 and 101 mark invalid samples in the trace
            invalid = (values < 0) | (values > 100)
            values = np.where(invalid, np.nan, values)
            for machine, count in pd.Series(machines[invalid]).value_counts().items():
                notes.append({"unique_id": make_unique_id(metric, machine),
                              "note": f"{count} invalid disk_io value(s) (-1 or 101) dropped"})
        piece = pd.DataFrame({"machine": machines, "ds": ds, "y": values})
        piece = piece[piece["y"].notna()]
        piece.insert(0, "unique_id", metric + "/" + piece.pop("machine"))
        pieces.append(piece)
        labels = {"source_file": file.name, "epoch": ALIBABA2018_EPOCH.isoformat()}
        if counter:
            labels[COUNTER_LABEL] = "counter"
        for machine in np.unique(machines):
            rows.append({"unique_id": make_unique_id(metric, machine), "metric": metric, "entity": machine,
                         "unit": unit, "labels": _label_json({**labels, "machine": machine})})
    return pd.concat(pieces, ignore_index=True), rows, notes


# ---------------------------------------------------------------------------
# Alibaba GenAI trace (2026), pod memory utilisation


def _load_alibaba_genai(path: SourcePath, metrics: set[str] | None) -> LoadResult:
    _filter_empty(metrics, ["memory_utilization"], "alibaba_genai")
    files = folder_files(path, ["*.csv"])
    result = _load_files(path, files, _read_alibaba_genai_file)
    result.available = ["memory_utilization"]
    return result


def _read_alibaba_genai_file(file: SourcePath) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    df = read_csv(file)
    df.columns = [str(c).strip().lower() for c in df.columns]
    require(df, ["value", "timestamp_anon", "container_ip"], file, "an Alibaba GenAI pod file")
    values = numeric(df["value"], file, "value")
    seconds = numeric(df["timestamp_anon"], file, "timestamp_anon")
    if np.isnan(seconds).any():
        raise DataError(f"{file}: {int(np.isnan(seconds).sum())} empty timestamp_anon value(s); "
                        "fix or remove those rows")
    ds = epoch_to_utc(seconds, f"{file}: column 'timestamp_anon'")
    no_pod = df["container_ip"].isna().to_numpy()
    notes = []
    if no_pod.any():
        notes.append({"file": str(file), "note": f"{int(no_pod.sum())} row(s) without container_ip dropped"})
    pods = df["container_ip"].astype(str)[~no_pod]
    frame = pd.DataFrame({"unique_id": "memory_utilization/" + pods, "ds": ds[~no_pod], "y": values[~no_pod]})
    frame = frame[frame["y"].notna()]
    rows = [{"unique_id": make_unique_id("memory_utilization", pod), "metric": "memory_utilization",
             "entity": pod, "unit": "fraction",
             "labels": _label_json({"container_ip_md5": pod, "source_file": file.name})}
            for pod in pods.unique()]
    return frame, rows, notes


_LOADERS: dict[str, Callable[[SourcePath, set[str] | None], LoadResult]] = {
    "long": _load_long,
    "nab": _load_nab,
    "bitbrains": _load_bitbrains,
    "alibaba2018": _load_alibaba2018,
    "alibaba_genai": _load_alibaba_genai,
}

FORMATS = tuple(_LOADERS)
"""The formats ``load_series`` reads (``source.format``, ``--format``), one reader each in ``_LOADERS``."""
