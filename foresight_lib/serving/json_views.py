"""JSON views of the published files (``latest/``), as the plugin's JSON endpoints and the dashboard serve them."""
from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pandas as pd

from foresight_lib.frames import split_unique_id
from foresight_lib.serving.exposition import registry_files, utc_stamps


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts: timestamps as ISO 8601 text, NaN as None."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = utc_stamps(out[column]).map(lambda t: t.isoformat() if pd.notna(t) else None)
    out = out.astype(object).where(out.notna(), None)
    records = out.to_dict(orient="records")
    for record in records:
        for key, value in record.items():
            if isinstance(value, np.generic):
                record[key] = value.item()
            if isinstance(record[key], float) and not math.isfinite(record[key]):
                record[key] = None
    return records


PAGE_SIZE = 10_000
"""Rows per page of ``/forecasts`` and ``/recommendations`` when ``limit`` is not given."""
MAX_PAGE_SIZE = 100_000
"""The most rows one page may ask for (``limit``); page on with ``offset`` (``next_offset``)."""


def split_ids(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The metric and entity of each ``<metric>/<entity>`` id, split once per distinct id (not per row)."""
    ids = ids.astype(str)
    distinct = pd.unique(ids)
    parts = [split_unique_id(uid) for uid in distinct]
    metric = dict(zip(distinct, (p[0] for p in parts), strict=True))
    entity = dict(zip(distinct, (p[1] for p in parts), strict=True))
    return ids.map(metric), ids.map(entity)


def matching(values: pd.Series, q: str | None) -> pd.Series:
    """True where the text contains ``q`` (case-insensitive); tested once per distinct value."""
    if not q:
        return pd.Series(True, index=values.index)
    text = values.astype(str)
    needle = q.casefold()
    hits = {v for v in pd.unique(text) if needle in v.casefold()}
    return text.isin(hits)


def _filtered(frame: pd.DataFrame, filters: dict[str, str | None]) -> pd.DataFrame:
    for column, value in filters.items():
        if value is not None and column in frame.columns:
            values = frame[column]
            text = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype(str)
            frame = frame[(text == value).to_numpy()]
    return frame


def _page(frame: pd.DataFrame, limit: int, offset: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows ``offset`` to ``offset + limit`` and what says where the next page starts."""
    count = int(len(frame))
    end = offset + limit
    return frame.iloc[offset:end], {"count": count, "offset": int(offset), "limit": int(limit),
                                    "truncated": bool(count > end), "next_offset": int(end) if count > end else None}


_FORECASTS: dict[str, tuple[Any, pd.DataFrame]] = {}
_FORECASTS_LOCK = threading.Lock()


def _forecasts(data_root: str, snapshot) -> pd.DataFrame:
    """The published forecasts with ``metric`` and ``entity``, sorted by series (once per publish)."""
    with _FORECASTS_LOCK:
        cached = _FORECASTS.get(str(data_root))
    if cached is not None and cached[0] is snapshot:
        return cached[1]
    frame = snapshot.forecasts.copy()
    if "model" in frame:
        frame["model"] = frame["model"].astype(str).astype("category")
    if "unique_id" in frame:
        frame["unique_id"] = frame["unique_id"].astype(str)
        metric, entity = split_ids(frame["unique_id"])
        frame["metric"], frame["entity"] = metric.astype("category"), entity.astype("category")
        frame = frame.sort_values("unique_id", kind="stable").reset_index(drop=True)
        frame["unique_id"] = pd.Series(np.asarray(frame["unique_id"].to_numpy(), dtype=object), dtype=object)
    with _FORECASTS_LOCK:
        _FORECASTS[str(data_root)] = (snapshot, frame)
    return frame


def _one_series(frame: pd.DataFrame, uid: str) -> pd.DataFrame:
    """The rows of one series of a frame sorted by ``unique_id`` (a binary search, not a scan)."""
    ids = frame["unique_id"].to_numpy()
    lo, hi = np.searchsorted(ids, uid, side="left"), np.searchsorted(ids, uid, side="right")
    return frame.iloc[lo:hi]


def forecasts_payload(data_root: str, series: str | None = None, metric: str | None = None,
                      entity: str | None = None, model: str | None = None, limit: int = PAGE_SIZE,
                      offset: int = 0, q: str | None = None) -> dict[str, Any]:
    """A page of the latest forecasts as JSON: ``published_at``, ``run_id``, ``count`` (rows matching),
    ``offset``, ``limit``, ``truncated``, ``next_offset`` (None on the last page) and ``forecasts`` (rows,
    sorted by series).

    Args:
        series, metric, entity, model: keep the rows equal to these.
        q: keep the series whose id contains this text (case-insensitive).
        limit, offset: the page.
    """
    snapshot = registry_files(data_root).snapshot()
    if snapshot.forecasts is None:
        return {"published_at": None, "run_id": None, "count": 0, "offset": int(offset), "limit": int(limit),
                "truncated": False, "next_offset": None, "forecasts": [],
                "note": f"nothing published yet under {data_root}"}
    frame = _forecasts(data_root, snapshot)
    if series is not None and "unique_id" in frame:
        frame = _one_series(frame, series)
    frame = _filtered(frame, {"metric": metric, "entity": entity, "model": model})
    if q and "unique_id" in frame:
        frame = frame[matching(frame["unique_id"], q).to_numpy()]
    page, paging = _page(frame, limit, offset)
    return {"published_at": snapshot.published_at.isoformat() if snapshot.published_at is not None else None,
            "run_id": snapshot.run_id, **paging, "forecasts": frame_records(page)}


def recommendations_payload(data_root: str, entity: str | None = None, resource: str | None = None,
                            limit: int = PAGE_SIZE, offset: int = 0, q: str | None = None) -> dict[str, Any] | None:
    """A page of the latest recommendations as JSON (paged as :func:`forecasts_payload`), or None when none were
    published; ``q`` keeps the rows whose entity (or series) contains it."""
    snapshot = registry_files(data_root).snapshot()
    if snapshot.recommendations is None:
        return None
    frame = _filtered(snapshot.recommendations, {"entity": entity, "resource": resource})
    if q:
        keep = pd.Series(False, index=frame.index)
        for column in ("entity", "unique_id"):
            if column in frame:
                keep |= matching(frame[column], q)
        frame = frame[keep.to_numpy()]
    page, paging = _page(frame, limit, offset)
    return {"published_at": snapshot.published_at.isoformat() if snapshot.published_at is not None else None,
            "run_id": snapshot.run_id, **paging, "recommendations": frame_records(page)}
