"""What the tests of the global models (LightGBM, LSTM) share: periodic series on a short "day", splits, actuals."""
from __future__ import annotations

import numpy as np

M = 24  # a short "day" keeps the tests fast
H = 6
KEYS = ["mean", "lo-80", "hi-80", "lo-95", "hi-95"]
ORIGINS = list(range(0, 2 * M - H + 1, 3))


def periodic(n_series: int = 4, days: int = 12, noise: float = 0.3, seed: int = 0) -> list[np.ndarray]:
    """Daily cycles of different levels, amplitudes and phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * M)
    return [10 * (i + 1) + (2 + i) * np.sin(2 * np.pi * t / M + i) + rng.normal(0, noise, t.size)
            for i in range(n_series)]


def split(ys: list[np.ndarray], test: int = 2 * M):
    return [y[:-test] for y in ys], [y[-test:] for y in ys]


def actuals(future: np.ndarray, origins) -> np.ndarray:
    """The H actuals after each origin."""
    return np.stack([future[o : o + H] for o in origins])
