"""Tiny models for runner tests."""
from __future__ import annotations

import numpy as np

from foresight_lib.forecasting.models.base import Forecaster, gaussian_intervals


class ConstantForecaster(Forecaster):
    """Forecasts the training mean; never looks at new actuals."""

    alias = "constant"

    def fit(self, y, season_length, ds=None):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, h, levels=(80, 95)):
        return gaussian_intervals(np.full(h, self.mean_), np.ones(h), levels)

    def update(self, y_new):
        return self


class FailingForecaster(ConstantForecaster):
    """Fails to fit on every series."""

    alias = "failing"

    def fit(self, y, season_length, ds=None):
        raise RuntimeError("cannot fit this series")
