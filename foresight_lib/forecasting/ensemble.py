"""The ensemble's arithmetic: per-step weights of the best base models and conformal intervals.

The backtest (:mod:`foresight_lib.forecasting.backtest`) fits these on each series' validation day
(errors the test day has not seen) and the champion bundle reuses them at publish time.
Weights are computed from error ratios, never from raw squared errors, so that series of
any magnitude give finite weights.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foresight_lib.forecasting.models.base import Forecast

TOP_MODELS = 3
"""How many of the base models (the best per step on the validation day) the ensemble combines."""

_TINY = 1e-300


@dataclass
class EnsembleWeights:
    """Per step: the weight of each base model and the interval half-widths."""

    models: list[str]
    weights: np.ndarray
    """Shape (h, n_models), rows sum to 1."""
    half_widths: dict[int, np.ndarray]
    """Level -> shape (h,) half-width from the validation errors."""

    def combine(self, forecasts: dict[str, Forecast], levels: Sequence[int]) -> Forecast:
        stacked = np.stack([forecasts[m]["mean"] for m in self.models], axis=-1)
        mean = np.einsum("ohm,hm->oh", stacked, self.weights)
        out: Forecast = {"mean": mean}
        for level in levels:
            out[f"lo-{level}"] = mean - self.half_widths[level]
            out[f"hi-{level}"] = mean + self.half_widths[level]
        return out


def fit_ensemble_weights(
    val_forecasts: dict[str, Forecast], y_val: np.ndarray, origins: Sequence[int], h: int,
    levels: Sequence[int],
) -> EnsembleWeights:
    """Inverse-squared-MAE weights of the best ``TOP_MODELS`` models per step, and
    split-conformal interval half-widths from the combined validation errors.

    The weights are ``(best MAE / MAE)^2`` normalised, which equals inverse squared MAE
    but cannot overflow; a step where some model is exact gives the exact models equal
    weight.
    """
    models = list(val_forecasts)
    actual = _actuals_matrix(y_val, origins, h)
    with np.errstate(over="ignore", invalid="ignore"):
        mae_by_model = np.stack(
            [np.mean(np.abs(val_forecasts[m]["mean"] - actual), axis=0) for m in models], axis=-1
        )  # (h, n_models)
    mae_by_model = np.where(np.isfinite(mae_by_model), mae_by_model, np.inf)
    weights = np.zeros_like(mae_by_model)
    for step in range(h):
        order = np.argsort(mae_by_model[step], kind="stable")[:TOP_MODELS]
        errors = mae_by_model[step, order]
        best = errors[0]
        if not np.isfinite(best):  # no model has a finite error: equal weights
            inv = np.ones_like(errors)
        elif best <= _TINY:  # exact models share the weight
            inv = (errors <= _TINY).astype("float64")
        else:
            inv = np.where(np.isfinite(errors), (best / errors) ** 2, 0.0)
        weights[step, order] = inv / inv.sum()
    ens = EnsembleWeights(models, weights, {})
    combined = np.einsum(
        "ohm,hm->oh", np.stack([val_forecasts[m]["mean"] for m in models], axis=-1), weights
    )
    abs_err = np.abs(actual - combined)
    n = abs_err.shape[0]
    for level in levels:
        # finite-sample conformal quantile
        q = min(1.0, np.ceil((n + 1) * level / 100.0) / n)
        ens.half_widths[level] = np.quantile(abs_err, q, axis=0, method="higher")
    return ens


def _actuals_matrix(y_future: np.ndarray, origins: Sequence[int], h: int) -> np.ndarray:
    return np.stack([y_future[o : o + h] for o in origins])
