"""The ensemble's arithmetic: its members, per-step weights of the best of them and conformal intervals.

Per metric, forward selection on the validation day chooses the members (``choose_members``:
the models that lower the pooled validation MASE of the combination); the weights are then
fitted per series among those members. The backtest (:mod:`foresight_lib.forecasting.backtest`)
fits both on the validation day (errors the test day has not seen) and the champion bundle
reuses them at publish time.
Weights are computed from error ratios, never from raw squared errors, so that series of
any magnitude give finite weights.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

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
    levels: Sequence[int], members: Sequence[str] | None = None,
) -> EnsembleWeights:
    """Inverse-squared-MAE weights of the best ``TOP_MODELS`` members per step, and
    split-conformal interval half-widths from the combined validation errors.

    The weights are ``(best MAE / MAE)^2`` normalised, which equals inverse squared MAE
    but cannot overflow; a step where some model is exact gives the exact models equal
    weight.

    Args:
        members: the models it combines (default: every model of ``val_forecasts``); the
            weights name these only, so a model left out need not forecast.
    """
    models = list(val_forecasts) if members is None else [m for m in val_forecasts if m in set(members)]
    actual = _actuals_matrix(y_val, origins, h)
    stacked = np.stack([val_forecasts[m]["mean"] for m in models], axis=-1)  # (origins, h, n_models)
    weights = step_weights(_mae_by_model(stacked, actual))
    ens = EnsembleWeights(models, weights, {})
    combined = np.einsum("ohm,hm->oh", stacked, weights)
    abs_err = np.abs(actual - combined)
    n = abs_err.shape[0]
    for level in levels:
        # finite-sample conformal quantile
        q = min(1.0, np.ceil((n + 1) * level / 100.0) / n)
        ens.half_widths[level] = np.quantile(abs_err, q, axis=0, method="higher")
    return ens


def step_weights(mae: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """Per step the weights of the best ``TOP_MODELS`` members: ``mae`` (..., n_models) -> weights (..., n_models).

    Args:
        members: boolean (..., n_models), broadcast against ``mae``: the models allowed a
            weight (default: all). Leaving a model out gives the weights its absence from
            ``mae`` would.
    """
    key = mae if members is None else np.where(members, mae, np.nan)  # NaN sorts after every member
    order = np.argsort(key, axis=-1, kind="stable")[..., :TOP_MODELS]
    errors = np.take_along_axis(key, order, axis=-1)
    allowed = np.ones(errors.shape, dtype=bool) if members is None else np.take_along_axis(
        np.broadcast_to(members, key.shape), order, axis=-1)
    best = errors[..., :1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(np.isfinite(errors), (best / errors) ** 2, 0.0)
    inv = np.where(
        ~np.isfinite(best), allowed.astype("float64"),  # no member has a finite error: equal weights
        np.where(best <= _TINY, (errors <= _TINY).astype("float64"), ratio),  # exact members share the weight
    )
    weights = np.zeros(key.shape, dtype="float64")
    np.put_along_axis(weights, order, inv / inv.sum(axis=-1, keepdims=True), axis=-1)
    return weights


def _mae_by_model(stacked: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """(origins, h, n_models) forecasts, (origins, h) actuals -> (h, n_models) MAE, +inf where not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        mae = np.mean(np.abs(stacked - actual[..., None]), axis=0)
    return np.where(np.isfinite(mae), mae, np.inf)


# ---------------------------------------------------------------------------
# Choosing the members


SELECTION_MARGIN = 0.01
"""Least relative drop of the pooled validation MASE for which forward selection adds a member.
Chosen on the tuning split (the validation day of NAB CPU and Bitbrains, never the held-out day):
see ``benchmarks/results/ensemble_members_tuning.json``."""
MAX_MEMBERS = 5
"""Most members forward selection chooses (it stops earlier when no addition helps)."""
MIN_SELECTION_SERIES = 3
"""Fewest series of a metric with a complete validation day for a choice of its own; with fewer
(or when more than half its series lack one) the metric takes every base model (``TOP_MODELS`` per step)."""


def member_subsets(n_models: int) -> list[tuple[int, ...]]:
    """Every set of at most ``MAX_MEMBERS`` of ``n_models`` models, and the set of all, as sorted index
    tuples (a fixed order)."""
    out = [c for k in range(1, min(n_models, MAX_MEMBERS) + 1) for c in combinations(range(n_models), k)]
    return out if n_models <= MAX_MEMBERS else [*out, tuple(range(n_models))]


def subset_losses(val_forecasts: dict[str, Forecast], y_val: np.ndarray, origins: Sequence[int], h: int,
                  scale: float, subsets: Sequence[tuple[int, ...]]) -> np.ndarray:
    """One series' validation MASE of the weighted combination of each subset: shape (len(subsets),).

    The weights are those ``fit_ensemble_weights`` gives the subset (fitted on the same day).
    """
    models = list(val_forecasts)
    actual = _actuals_matrix(y_val, origins, h)
    stacked = np.stack([val_forecasts[m]["mean"] for m in models], axis=-1)
    mae = _mae_by_model(stacked, actual)  # (h, n)
    mask = np.zeros((len(subsets), 1, len(models)), dtype=bool)
    for i, subset in enumerate(subsets):
        mask[i, 0, list(subset)] = True
    weights = step_weights(np.broadcast_to(mae, (len(subsets), *mae.shape)), mask)  # (k, h, n)
    with np.errstate(over="ignore", invalid="ignore"):
        combined = np.einsum("ohm,khm->koh", stacked, weights)
        return np.mean(np.abs(combined - actual), axis=(1, 2)) / scale


@dataclass
class MemberChoice:
    """One metric's ensemble members and how they were chosen (``report``: its JSON form)."""

    members: list[str]
    rule: str
    """``forward_selection``, or ``all_models`` (today's rule: the best ``TOP_MODELS`` of every base model per step)."""
    reason: str = ""
    series: int = 0
    """Series of the metric with a complete validation day (what the choice was made on)."""
    validation_mase: float | None = None
    """Pooled validation MASE of the chosen combination (all models' when it fell back)."""
    all_models_validation_mase: float | None = None
    steps: list[dict] = field(default_factory=list)
    """Forward selection's path: each member added with the pooled validation MASE it reached."""

    def report(self) -> dict:
        return {"members": self.members, "rule": self.rule, "reason": self.reason, "series": self.series,
                "validation_mase": _rounded(self.validation_mase),
                "all_models_validation_mase": _rounded(self.all_models_validation_mase), "steps": self.steps}


def _rounded(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def choose_members(models: Sequence[str], losses: np.ndarray, n_series: int,
                   margin: float = SELECTION_MARGIN) -> MemberChoice:
    """Greedy forward selection of one metric's members on its pooled validation errors.

    Starts from the best single model, then adds the model that most lowers the pooled
    validation MASE (mean over series) of the weighted combination, while that drops by
    more than ``margin`` (relative); at most ``MAX_MEMBERS``.

    Args:
        models: the base models, in the order of ``member_subsets``' indices.
        losses: (series, len(member_subsets(len(models)))) from ``subset_losses``, one row per
            series with a complete validation day.
        n_series: every series of the metric (with or without a validation day).
    """
    models = list(models)
    every = MemberChoice(models, "all_models", series=int(losses.shape[0]))
    scorable = np.isfinite(losses).all(axis=1) if losses.size else np.zeros(losses.shape[0], dtype=bool)
    losses = losses[scorable]
    every.series = int(losses.shape[0])
    needed = max(MIN_SELECTION_SERIES, int(np.ceil(n_series / 2)))
    if losses.shape[0] < needed:
        every.reason = (f"{losses.shape[0]} of {n_series} series have a complete validation day (no gaps, every "
                        f"model forecast, a usable MASE scale); {needed} needed to choose members, so every base "
                        f"model is combined (the best {TOP_MODELS} per step)")
        return every
    if len(models) == 1:
        every.reason = "one base model"
        return every
    subsets = member_subsets(len(models))
    pooled = dict(zip(subsets, losses.mean(axis=0), strict=True))
    all_models = tuple(range(len(models)))
    every_loss = pooled.get(all_models)
    current = min((s for s in subsets if len(s) == 1), key=lambda s: pooled[s])
    steps = [{"add": models[current[0]], "validation_mase": _rounded(pooled[current])}]
    while len(current) < min(len(models), MAX_MEMBERS):
        candidates = [tuple(sorted((*current, i))) for i in range(len(models)) if i not in current]
        best = min(candidates, key=lambda s: pooled[s])
        if not pooled[best] < pooled[current] * (1.0 - margin):
            break
        steps.append({"add": models[(set(best) - set(current)).pop()], "validation_mase": _rounded(pooled[best])})
        current = best
    return MemberChoice([models[i] for i in current], "forward_selection", series=every.series,
                        validation_mase=float(pooled[current]),
                        all_models_validation_mase=None if every_loss is None else float(every_loss), steps=steps)


def _actuals_matrix(y_future: np.ndarray, origins: Sequence[int], h: int) -> np.ndarray:
    return np.stack([y_future[o : o + h] for o in origins])
