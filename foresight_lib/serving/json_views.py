"""JSON views of the published files (``latest/``), as the plugin's JSON endpoints and the dashboard serve them."""
from __future__ import annotations

import math
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


def _filtered(frame: pd.DataFrame, filters: dict[str, str | None]) -> pd.DataFrame:
    for column, value in filters.items():
        if value is not None and column in frame.columns:
            frame = frame[frame[column].astype(str) == value]
    return frame


def forecasts_payload(data_root: str, series: str | None = None, metric: str | None = None,
                      entity: str | None = None, model: str | None = None, limit: int = 10_000) -> dict[str, Any]:
    """The latest forecasts as JSON: ``published_at``, ``run_id``, ``count``, ``forecasts`` (rows)."""
    snapshot = registry_files(data_root).snapshot()
    if snapshot.forecasts is None:
        return {"published_at": None, "run_id": None, "count": 0, "forecasts": [],
                "note": f"nothing published yet under {data_root}"}
    frame = snapshot.forecasts.copy()
    parts = [split_unique_id(str(uid)) for uid in frame["unique_id"]] if "unique_id" in frame else []
    if parts:
        frame["metric"] = [p[0] for p in parts]
        frame["entity"] = [p[1] for p in parts]
    frame = _filtered(frame, {"unique_id": series, "metric": metric, "entity": entity, "model": model})
    return {"published_at": snapshot.published_at.isoformat() if snapshot.published_at is not None else None,
            "run_id": snapshot.run_id, "count": int(len(frame)), "truncated": bool(len(frame) > limit),
            "forecasts": frame_records(frame.head(limit))}


def recommendations_payload(data_root: str, entity: str | None = None, resource: str | None = None,
                            limit: int = 10_000) -> dict[str, Any] | None:
    """The latest recommendations as JSON, or None when none were published."""
    snapshot = registry_files(data_root).snapshot()
    if snapshot.recommendations is None:
        return None
    frame = _filtered(snapshot.recommendations, {"entity": entity, "resource": resource})
    return {"published_at": snapshot.published_at.isoformat() if snapshot.published_at is not None else None,
            "run_id": snapshot.run_id, "count": int(len(frame)), "truncated": bool(len(frame) > limit),
            "recommendations": frame_records(frame.head(limit))}
