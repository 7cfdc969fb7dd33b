"""Horizons and frequencies as durations (``5m``, ``15m``, ``1h``) turned into steps."""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from foresight_lib.durations import duration_seconds
from foresight_lib.errors import HorizonError


def parse_duration(text: str | pd.Timedelta) -> pd.Timedelta:
    """Parse ``30s``, ``5m``/``5min``, ``1h``, ``1d`` into a Timedelta.

    Raises:
        HorizonError: the text is not such a duration.
    """
    if isinstance(text, pd.Timedelta):
        return text
    return pd.Timedelta(seconds=duration_seconds(text))


def format_duration(delta: pd.Timedelta) -> str:
    """The short label of a duration: 300 s -> ``5m``, 3600 s -> ``1h``."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_horizons(spec: str | Iterable[str]) -> list[str]:
    """Split ``"5m,15m,30m"`` (or a list) into canonical labels, sorted by length."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if not items:
        raise HorizonError("no horizon given; pass e.g. --horizons 5m,15m,30m")
    deltas = sorted({parse_duration(s) for s in items})
    return [format_duration(d) for d in deltas]


def horizon_steps(horizon: str, freq: str | pd.Timedelta) -> int:
    """Steps ahead that ``horizon`` is at frequency ``freq``.

    Raises:
        HorizonError: the horizon is not a whole number of steps of ``freq``.
    """
    delta = parse_duration(horizon)
    step = to_timedelta(freq)
    steps, remainder = divmod(delta, step)
    if remainder != pd.Timedelta(0) or steps < 1:
        raise HorizonError(
            f"horizon {horizon} is not a whole number of {format_duration(step)} steps; "
            f"use a multiple of {format_duration(step)} or resample the series to a finer frequency"
        )
    return int(steps)


def to_timedelta(freq: str | pd.Timedelta) -> pd.Timedelta:
    """A frequency as a Timedelta; accepts ``5m`` and pandas aliases like ``5min``."""
    if isinstance(freq, pd.Timedelta):
        return freq
    try:
        return parse_duration(freq)
    except HorizonError:
        try:
            return pd.to_timedelta(pd.tseries.frequencies.to_offset(freq))
        except (ValueError, TypeError) as exc:
            raise HorizonError(f"'{freq}' is not a frequency; use e.g. 5min or 1h") from exc


def season_length(freq: str | pd.Timedelta, season: str = "1d") -> int:
    """Steps in one season (one day by default) at ``freq``."""
    steps, remainder = divmod(parse_duration(season), to_timedelta(freq))
    if remainder != pd.Timedelta(0):
        raise HorizonError(f"season {season} is not a whole number of {freq} steps")
    return int(steps)
