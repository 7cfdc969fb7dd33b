"""Which grid slot a timestamp belongs to: the one assignment validation and features share.

A grid of step ``freq`` is anchored at the Unix epoch. Sources stamp points a little off
the marks (``00:04:59.9``, ``00:05:00.06``): a point within ``tolerance`` (a share of the
step, ``features.grid_tolerance``) before a mark counts for that mark, not for the slot
before it. Slot ``k`` therefore holds the points in ``[k·step − tol, (k+1)·step − tol)``.
"""
from __future__ import annotations

import numpy as np

DEFAULT_GRID_TOLERANCE = 0.1
"""Share of the step before a grid mark that still counts for that mark."""


def tolerance_ns(step_ns: int | np.ndarray, tolerance: float) -> int | np.ndarray:
    """The tolerance in ns of a step (or steps) in ns."""
    if isinstance(step_ns, np.ndarray):
        return np.floor(step_ns * float(tolerance)).astype(np.int64)
    return int(step_ns * float(tolerance))


def grid_slots(ds_ns: np.ndarray, step_ns: int | np.ndarray, tolerance: float = DEFAULT_GRID_TOLERANCE) -> np.ndarray:
    """Slot number (``ds`` of the slot = number × step) of each int64 ns timestamp."""
    return np.floor_divide(ds_ns + tolerance_ns(step_ns, tolerance), step_ns)
