"""Model registry: names used in config and on the command line.

Classes are imported lazily so that listing or validating names never pulls in
torch, LightGBM, Prophet or statsmodels.
"""
from __future__ import annotations

from importlib import import_module

from foresight_lib.errors import ConfigError

MODEL_PATHS: dict[str, str] = {
    "naive": "foresight_lib.forecasting.models.naive:Naive",
    "seasonal_naive": "foresight_lib.forecasting.models.naive:SeasonalNaive",
    "arima": "foresight_lib.forecasting.models.arima:AutoARIMA",
    "ets": "foresight_lib.forecasting.models.ets:ETS",
    "fourier": "foresight_lib.forecasting.models.fourier:Fourier",
    "prophet": "foresight_lib.forecasting.models.prophet:Prophet",
    "lstm": "foresight_lib.forecasting.models.lstm:LSTM",
    "lightgbm": "foresight_lib.forecasting.models.lightgbm:LightGBM",
}
GLOBAL_MODELS = ["lstm", "lightgbm"]
"""The registered models fitted across all series at once (``GlobalForecaster``); the others see one
series at a time. Kept here so that listing them imports no model (a test checks it against the classes)."""
ENSEMBLE = "ensemble"
"""Combines the other models per horizon from their errors on a validation day."""

DEFAULT_MODELS = ["naive", "seasonal_naive", "arima", "ets", "fourier", "prophet", "lstm", ENSEMBLE]
FALLBACK_MODEL = "seasonal_naive"
ALL_MODELS = [*MODEL_PATHS, ENSEMBLE]
TUNABLE_MODELS = ["lightgbm", "lstm"]
"""Models with a search space for automatic tuning (``foresight_lib.forecasting.tuning``)."""


def check_model_names(names: list[str]) -> list[str]:
    """Names as given, de-duplicated in order; raises on an unknown one."""
    unknown = [n for n in names if n not in ALL_MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; choose from {ALL_MODELS}")
    if not names:
        raise ConfigError(f"no model given; choose from {ALL_MODELS}")
    return list(dict.fromkeys(names))


def model_class(name: str):
    """The class registered under ``name`` (imported on first use)."""
    if name not in MODEL_PATHS:
        raise ConfigError(f"unknown model '{name}'; choose from {list(MODEL_PATHS)}")
    module, _, attr = MODEL_PATHS[name].partition(":")
    return getattr(import_module(module), attr)


def make_model(name: str, **params):
    """A new, unfitted instance of the model ``name``."""
    return model_class(name)(**params)
