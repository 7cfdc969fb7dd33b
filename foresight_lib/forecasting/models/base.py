"""The one model interface every forecaster implements.

A local ``Forecaster`` sees one series: ``fit`` on history, ``predict`` h steps from
the end of what it has seen, ``update`` with new actuals without refitting (what a
champion does between two nightly trainings). ``forecast_origins`` runs the
evaluation protocol's many cutoffs; the default loops over ``update``/``predict``
and models override it when they can vectorise.

A ``GlobalForecaster`` is fitted once on many series (the LSTM) and forecasts them
in batches.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.stats import norm

from foresight_lib.errors import ConfigError, SeriesTooShortError
from foresight_lib.frames import LEVELS

Forecast = dict[str, np.ndarray]
"""``mean`` plus ``lo-<L>``/``hi-<L>`` per level; arrays of shape (h,) or (origins, h)."""


def z_value(level: int) -> float:
    """Two-sided normal quantile for a central interval of ``level`` percent."""
    return float(norm.ppf(0.5 + level / 200.0))


def gaussian_intervals(mean: np.ndarray, sigma: np.ndarray, levels: Sequence[int] = LEVELS) -> Forecast:
    """Mean plus symmetric normal intervals with per-step standard deviation ``sigma``."""
    out: Forecast = {"mean": mean}
    for level in levels:
        z = z_value(level)
        out[f"lo-{level}"] = mean - z * sigma
        out[f"hi-{level}"] = mean + z * sigma
    return out


def empty_forecast(h: int, levels: Sequence[int] = LEVELS) -> Forecast:
    """A forecast with no origin: every key, zero rows."""
    empty = np.empty((0, h))
    return {"mean": empty, **{f"{side}-{level}": empty for level in levels for side in ("lo", "hi")}}


def known_context(model: str, history, future, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A series' history and everything known at its last origin (``history + future[:max origin]``).

    What a global model may read when it forecasts from ``origins``; checked to be non-empty,
    long enough and finite, with errors naming ``model``.
    """
    history = np.asarray(history, dtype="float64").ravel()
    future = np.asarray(future, dtype="float64").ravel()
    if history.size == 0:
        raise SeriesTooShortError(f"{model}: a series has no history to forecast from; give it some")
    if origins.max() > future.size:
        raise ConfigError(f"{model}: an origin needs {origins.max()} future values, got {future.size}")
    known = np.concatenate([history, future[: origins.max()]])
    if not np.isfinite(known).all():
        raise ValueError(f"{model} got missing values in the context; fill gaps first")
    return history, known


def stack_forecasts(forecasts: Sequence[Forecast]) -> Forecast:
    """Stack per-origin forecasts of shape (h,) into arrays of shape (origins, h)."""
    keys = forecasts[0].keys()
    return {k: np.vstack([f[k] for f in forecasts]) for k in keys}


class Forecaster(ABC):
    """A model of one series. Fitted state lives in trailing-underscore attributes."""

    alias: ClassVar[str]
    needs_timestamps: ClassVar[bool] = False
    min_seasons: ClassVar[float] = 0.0
    """History the model needs, in seasons (days); the runner checks it up front."""

    @abstractmethod
    def fit(self, y: np.ndarray, season_length: int, ds: pd.DatetimeIndex | None = None) -> Forecaster:
        """Fit on history ``y`` (float64, no NaN, regular grid)."""

    @abstractmethod
    def predict(self, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        """Forecast ``h`` steps after the last value seen (by ``fit`` or ``update``)."""

    @abstractmethod
    def update(self, y_new: np.ndarray) -> Forecaster:
        """Condition on actuals that came after the last seen value, without refitting."""

    def forecast_origins(
        self, y_future: np.ndarray, origins: Sequence[int], h: int, levels: Sequence[int] = LEVELS
    ) -> Forecast:
        """Forecasts from several cutoffs after the training end, with no refit.

        Args:
            y_future: actuals after the training end.
            origins: increasing counts of ``y_future`` values known at each cutoff
                (0 = right at the end of training).
            h: steps ahead per forecast.

        Returns:
            Arrays of shape (len(origins), h).
        """
        results = []
        seen = 0
        for origin in origins:
            if origin > seen:
                self.update(np.asarray(y_future[seen:origin], dtype="float64"))
                seen = origin
            results.append(self.predict(h, levels))
        return stack_forecasts(results)

    def get_params(self) -> dict:
        """Constructor parameters, logged to MLflow."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}


class GlobalForecaster(ABC):
    """A model fitted across many series at once (e.g. the LSTM)."""

    alias: ClassVar[str]
    min_seasons: ClassVar[float] = 0.0
    needs_timestamps: ClassVar[bool] = False
    """Whether ``fit_many`` and ``forecast_origins_many`` take the series' timestamps (``ds=``)."""

    @abstractmethod
    def fit_many(self, ys: Sequence[np.ndarray], season_length: int) -> GlobalForecaster:
        """Fit one model on all series' histories."""

    @abstractmethod
    def forecast_origins_many(
        self,
        histories: Sequence[np.ndarray],
        futures: Sequence[np.ndarray],
        origins: Sequence[int],
        h: int,
        levels: Sequence[int] = LEVELS,
    ) -> list[Forecast]:
        """Per series, forecasts from each origin; each conditioned on history + future[:origin]."""

    def predict_from(self, y_context: np.ndarray, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        """Forecast ``h`` steps after the end of ``y_context`` (shape (h,) arrays)."""
        result = self.forecast_origins_many([y_context], [np.empty(0)], [0], h, levels)[0]
        return {k: v[0] for k, v in result.items()}

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}
