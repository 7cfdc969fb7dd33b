"""Durations as written in the config and on the command line: ``30s``, ``5m``, ``1h``, ``1d``.

Kept free of pandas so that the DAG file can read its retry delay at parse time.
"""
from __future__ import annotations

import re

from foresight_lib.errors import HorizonError

_DURATION = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """Seconds in ``30s``, ``5m``/``5min``, ``1h``, ``1d``.

    Raises:
        HorizonError: the text is not such a duration, or it is not positive.
    """
    match = _DURATION.match(str(text))
    if not match:
        raise HorizonError(
            f"'{text}' is not a duration; write a whole number and a unit, "
            "e.g. 5m, 15m, 30m, 1h, 1d (units: s, m/min, h, d)"
        )
    value, unit = int(match.group(1)), match.group(2).lower()
    if value <= 0:
        raise HorizonError(f"duration '{text}' must be positive")
    return value * _UNIT_SECONDS[unit]
