"""Forecast accuracy metrics, one signature each, combined by ``evaluate``.

Every metric takes aligned arrays of actuals and forecasts for one series and
horizon (plus what it needs: the MASE scale, interval bounds, quantile forecasts) and
returns a float.

MASE divides by the in-sample MAE of the one-day seasonal naive (:func:`mase_scale`),
which is guarded: a constant or non-finite training part cannot be scored (MASE would
be 0/0 or meaningless) and is left out of every mean, and a scale below a millionth of
the series' mean level is raised to it, so that every scored value is finite. The
backtest reports which series were guarded and why.

The weighted quantile loss (:func:`wql`) scores the forecast distribution over the
quantiles the forecasts carry: the median (``yhat``) and both bounds of each interval
(:func:`quantile_columns`). It is guarded like MASE: a series whose actuals sum to zero
in absolute value is not scored for it, and a model without finite bands gets none (see
:func:`evaluate`); it is reported beside MASE and never ranks models.

The champion rule lives here, once: ``ChampionCriterion`` (the ``champion`` setting) turns
a leaderboard into one score per model; the leaderboard's ranking, each metric's champion
(``metric_champions``), the champion bundle's score, the registry's no-regression gate,
MLflow, the dashboard and the operations API all use it.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError

log = logging.getLogger(__name__)

MASE_MIN_RELATIVE_SCALE = 1e-6
"""Least MASE scale, as a share of the series' mean absolute level over the training part."""


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(y - yhat)))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200); a point where both are zero counts as 0."""
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2.0 * np.abs(y - yhat), denom, out=np.zeros_like(denom, dtype="float64"), where=denom > 0)
    return float(100.0 * np.mean(ratio))


def mase(y: np.ndarray, yhat: np.ndarray, scale: float) -> float:
    """MAE divided by ``scale``, the in-sample MAE of the one-day seasonal naive (NaN if it is not positive)."""
    return mae(y, yhat) / scale if scale > 0 and math.isfinite(scale) else float("nan")


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of actuals inside [lo, hi]."""
    return float(np.mean((y >= lo) & (y <= hi)))


def width(lo: np.ndarray, hi: np.ndarray) -> float:
    """Mean interval width."""
    return float(np.mean(hi - lo))


def pinball(y: np.ndarray, yhat_q: np.ndarray, q: float) -> np.ndarray:
    """Pinball (quantile) loss of the forecast ``yhat_q`` of quantile ``q`` at each point."""
    diff = np.asarray(y, dtype="float64") - np.asarray(yhat_q, dtype="float64")
    return np.maximum(q * diff, (q - 1.0) * diff)


def wql(y: np.ndarray, quantiles: Mapping[float, np.ndarray]) -> float:
    """Mean weighted quantile loss: a CRPS approximation over the forecast quantiles.

    The GluonTS / AWS "mean weighted quantile loss": for each quantile q,
    ``2 * sum(pinball_q(y, yhat_q)) / sum(|y|)`` over the points, then the mean over the
    quantiles. 0 is perfect; it is scale-free, so it may be pooled over series of
    different units. Foresight scores it per series and horizon (the points are the
    cutoffs' forecasts at that step) and averages over series, as it does MASE.

    Args:
        y: the actuals.
        quantiles: quantile level (0..1) -> the forecasts of that quantile, aligned on ``y``.

    Returns:
        NaN when ``sum(|y|)`` is 0 or not finite (the loss is undefined), or when a
        quantile forecast is not finite.
    """
    y = np.asarray(y, dtype="float64")
    with np.errstate(over="ignore", invalid="ignore"):
        weight = float(np.sum(np.abs(y)))
    if not (math.isfinite(weight) and weight > 0) or not quantiles:
        return float("nan")
    losses = []
    for q, yhat_q in quantiles.items():
        yhat_q = np.asarray(yhat_q, dtype="float64")
        if not np.isfinite(yhat_q).all():
            return float("nan")
        losses.append(2.0 * float(np.sum(pinball(y, yhat_q, q))) / weight)
    return float(np.mean(losses))


def quantile_columns(levels=(80, 95)) -> dict[str, float]:
    """Forecast column -> the quantile it is: ``yhat`` the median, ``yhat_lo_80`` 0.1, ``yhat_hi_95`` 0.975…

    A central ``L`` % interval is bounded by the quantiles ``(1 - L/100) / 2`` and ``(1 + L/100) / 2``.
    """
    out = {"yhat": 0.5}
    for level in levels:
        out[f"yhat_lo_{level}"] = round((1.0 - level / 100.0) / 2.0, 6)
        out[f"yhat_hi_{level}"] = round((1.0 + level / 100.0) / 2.0, 6)
    return out


def seasonal_naive_scale(y_train: np.ndarray, season_length: int) -> float:
    """In-sample MAE of the seasonal naive forecast; falls back to lag 1 if too short.

    A flat series (scale 0) gets the smallest positive spacing instead so MASE stays finite.
    """
    y_train = np.asarray(y_train, dtype="float64")
    lag = season_length if y_train.size > season_length else 1
    scale = float(np.mean(np.abs(y_train[lag:] - y_train[:-lag]))) if y_train.size > lag else 0.0
    if scale > 0:
        return scale
    fallback = float(np.mean(np.abs(np.diff(y_train)))) if y_train.size > 1 else 0.0
    return fallback if fallback > 0 else max(float(np.abs(y_train).mean()) * 1e-3, 1e-9)


@dataclass(frozen=True)
class MaseScale:
    """A series' MASE scale and, when the plain in-sample MAE could not be used, why."""

    value: float
    """The scale; NaN when the series cannot be scored."""
    note: str | None = None

    @property
    def scorable(self) -> bool:
        return math.isfinite(self.value) and self.value > 0


def mase_scale(y_train: np.ndarray, season_length: int) -> MaseScale:
    """The guarded MASE scale of one series: the in-sample MAE of the seasonal naive.

    The seasonal lag falls back to 1 when the training part is one season or shorter.
    Guards, each with a note: a training part that is constant, has fewer than two
    values or holds non-finite values is not scored (NaN); a scale below
    ``MASE_MIN_RELATIVE_SCALE`` times the mean absolute level becomes the larger of the
    lag-1 in-sample MAE and that floor.
    """
    y = np.asarray(y_train, dtype="float64")
    if y.size < 2:
        return MaseScale(float("nan"), f"{y.size} training value(s): MASE is undefined; not scored")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        return MaseScale(float("nan"), f"{bad} non-finite training value(s): MASE is undefined; not scored")
    with np.errstate(over="ignore", invalid="ignore"):
        level = float(np.mean(np.abs(y)))
        lag = season_length if y.size > season_length else 1
        seasonal = float(np.mean(np.abs(y[lag:] - y[:-lag])))
        lag1 = float(np.mean(np.abs(np.diff(y))))
    if not (math.isfinite(level) and math.isfinite(seasonal) and math.isfinite(lag1)):
        return MaseScale(float("nan"), "training values too large for a finite MASE scale; not scored")
    if lag1 == 0:
        return MaseScale(float("nan"), f"constant training part (every value {y[0]:.6g}): MASE would be 0/0; "
                                       "not scored")
    floor = MASE_MIN_RELATIVE_SCALE * level
    if seasonal >= floor and seasonal > 0:
        return MaseScale(seasonal)
    value = max(lag1, floor)
    source = "the lag-1 in-sample MAE" if lag1 >= floor else f"{MASE_MIN_RELATIVE_SCALE:g} x the mean level"
    return MaseScale(value, f"seasonal-naive in-sample MAE {seasonal:.3g} is below {MASE_MIN_RELATIVE_SCALE:g} x "
                            f"the mean level {level:.3g}; scale set to {value:.3g} ({source})")


def mase_scales(trains: Mapping[str, np.ndarray], season_length: int) -> tuple[dict[str, float], dict[str, str]]:
    """Guarded MASE scales per series and the notes of the guarded ones (see :func:`mase_scale`)."""
    scales, notes = {}, {}
    for uid, y in trains.items():
        scale = mase_scale(y, season_length)
        scales[uid] = scale.value
        if scale.note:
            notes[uid] = scale.note
    return scales, notes


LEADERBOARD_COLUMNS = [
    "model", "horizon", "mae", "rmse", "smape", "mase", "wql",
    "coverage_80", "coverage_95", "width_80", "width_95",
]


def evaluate(forecasts: pd.DataFrame, scales: dict[str, float], horizons: dict[str, int],
             levels=(80, 95)) -> pd.DataFrame:
    """Per series, model and horizon metrics from a backtest forecast frame.

    Args:
        forecasts: forecast frame with an ``y`` column of actuals.
        scales: MASE scale per ``unique_id``; a series whose scale is missing, not finite or
            not positive (see :func:`mase_scale`) is not scored, so no mean counts it.
        horizons: horizon label -> step (only that step is scored for the horizon).
        levels: the interval levels the forecasts carry (``yhat_lo_<level>``, ``yhat_hi_<level>``).

    ``wql`` (:func:`wql`) is over the median and every bound of ``levels``. It is NaN for
    a series and horizon whose actuals sum to 0 in absolute value (the same for every
    model), and for every row of a model whose bands are not finite on some scored
    forecast (a model that cannot give quantiles): such a model is left out of any mean
    of ``wql`` rather than compared on other series (logged; :func:`wql_left_out` lists both).

    Returns:
        Columns ``unique_id, model, horizon`` and one column per metric.
    """
    rows = []
    step_to_label = {step: label for label, step in horizons.items()}
    scorable = {uid for uid, scale in scales.items() if math.isfinite(scale) and scale > 0}
    subset = forecasts[forecasts["step"].isin(step_to_label)]
    left_out = set(subset["unique_id"].unique()) - scorable
    if left_out:
        log.info("%d series not scored (no usable MASE scale), e.g. %s", len(left_out), sorted(left_out)[:3])
        subset = subset[subset["unique_id"].isin(scorable)]
    quantiles = quantile_columns(levels)
    no_bands = _models_without_bands(subset, list(quantiles))
    for (uid, model, step), g in subset.groupby(["unique_id", "model", "step"], sort=False):
        y = g["y"].to_numpy("float64")
        yhat = g["yhat"].to_numpy("float64")
        row = {
            "unique_id": uid, "model": model, "horizon": step_to_label[step],
            "mae": mae(y, yhat), "rmse": rmse(y, yhat), "smape": smape(y, yhat),
            "mase": mase(y, yhat, scales[uid]),
            "wql": float("nan") if model in no_bands else
            wql(y, {q: g[column].to_numpy("float64") for column, q in quantiles.items()}),
        }
        for level in levels:
            lo = g[f"yhat_lo_{level}"].to_numpy("float64")
            hi = g[f"yhat_hi_{level}"].to_numpy("float64")
            row[f"coverage_{level}"] = coverage(y, lo, hi)
            row[f"width_{level}"] = width(lo, hi)
        rows.append(row)
    if not rows:
        columns = ["unique_id", "model", "horizon", "mae", "rmse", "smape", "mase", "wql"]
        columns += [f"{kind}_{level}" for level in levels for kind in ("coverage", "width")]
        return pd.DataFrame(columns=columns)
    per_series = pd.DataFrame(rows)
    unweighted = per_series.loc[~per_series["model"].isin(no_bands) & per_series["wql"].isna(), "unique_id"]
    if not unweighted.empty:
        log.info("%d series not scored for wql at some horizon (sum of |y| over the scored points is 0 or not "
                 "finite), e.g. %s", unweighted.nunique(), sorted(unweighted.unique())[:3])
    return per_series


def _models_without_bands(subset: pd.DataFrame, columns: list[str]) -> set[str]:
    """Models whose quantile forecasts (``columns``) are not finite on some scored row (each logged)."""
    if subset.empty:
        return set()
    bad = pd.Series(~np.isfinite(subset[columns].to_numpy("float64")).all(axis=1), index=subset.index)
    counts = bad.groupby(subset["model"]).agg(["sum", "size"])
    counts = counts[counts["sum"] > 0]
    for model, (n_bad, n) in counts.iterrows():
        log.warning("model %s: quantile bands not finite on %d of %d scored forecasts: wql not scored, left out of "
                    "any quantile ranking", model, n_bad, n)
    return {str(m) for m in counts.index}


def wql_left_out(per_series: pd.DataFrame) -> list[dict]:
    """What :func:`evaluate` left out of ``wql``, with the reason: models, then series and horizons.

    A model with no finite ``wql`` at all has no quantile bands to score (see
    :func:`evaluate`); a series and horizon without a finite ``wql`` for any model that
    has them had actuals summing to 0 in absolute value (``sum(|y|)`` is the weight).
    """
    if per_series.empty or "wql" not in per_series:
        return []
    frame = per_series[["unique_id", "model", "horizon"]].assign(
        scored=np.isfinite(pd.to_numeric(per_series["wql"], errors="coerce").to_numpy("float64")))
    with_bands = frame.groupby("model", sort=False)["scored"].any()
    out: list[dict] = [{"model": str(m), "reason": "no finite quantile bands (the median and interval bounds): "
                                                   "wql not scored, left out of any quantile ranking"}
                       for m in with_bands.index[~with_bands.to_numpy()]]
    by_series = frame[frame["model"].isin(with_bands.index[with_bands.to_numpy()])].groupby(
        ["unique_id", "horizon"], sort=False)["scored"].any()
    out += [{"unique_id": str(uid), "horizon": str(horizon),
             "reason": "sum of |y| over the scored points is 0 or not finite: wql not scored"}
            for uid, horizon in by_series.index[~by_series.to_numpy()]]
    return out


def leaderboard(per_series: pd.DataFrame, horizon_order: list[str],
                criterion: ChampionCriterion | None = None) -> pd.DataFrame:
    """Mean of per-series metrics per model and horizon, models ranked by the champion criterion.

    A mean skips NaN (a series not scored for ``wql``); a metric the per-series frame
    does not have (``wql`` of scores made before it was) is NaN.
    """
    missing = [c for c in LEADERBOARD_COLUMNS if c not in per_series.columns]
    if missing:
        per_series = per_series.reindex(columns=[*per_series.columns, *missing])
    board = per_series.groupby(["model", "horizon"], sort=False)[LEADERBOARD_COLUMNS[2:]].mean().reset_index()
    rank = (criterion or DEFAULT_CRITERION).scores(board).sort_values()
    board["model"] = pd.Categorical(board["model"], categories=list(rank.index), ordered=True)
    board["horizon"] = pd.Categorical(board["horizon"], categories=horizon_order, ordered=True)
    board = board.sort_values(["model", "horizon"]).reset_index(drop=True)
    board["model"] = board["model"].astype(str)
    board["horizon"] = board["horizon"].astype(str)
    return board[LEADERBOARD_COLUMNS]


IN_DATA_UNIT = ("mae", "rmse", "width_")
"""Leaderboard columns in the data's unit (``width_80``, ``width_95``…): meaningless pooled over metrics."""


def pooled_leaderboard(board: pd.DataFrame, metrics: int) -> pd.DataFrame:
    """A leaderboard pooled over ``metrics`` resource metrics, as files and summaries publish it.

    Over one metric it is whole. Over several, the columns in the data's unit (MAE, RMSE,
    interval widths) would average cores with bytes, so they are left out: the scale-free
    ones (MASE, sMAPE, wQL, coverage) stay, and the per-metric leaderboards keep every column.
    """
    if metrics <= 1:
        return board
    return board[[c for c in board.columns if not str(c).startswith(IN_DATA_UNIT)]]


def champion(board: pd.DataFrame, criterion: ChampionCriterion | None = None) -> str:
    """The model with the lowest score under ``criterion`` (default: mean MASE over the horizons in ``board``).

    Raises:
        DataError: no model has a finite score (no series could be scored).
    """
    return (criterion or DEFAULT_CRITERION).champion(board)


def metric_of_rows(per_series: pd.DataFrame, series: pd.DataFrame | None = None) -> pd.Series:
    """The metric of each row's ``unique_id``: the series table's, else the id's ``<metric>/`` part."""
    from foresight_lib.frames import split_unique_id

    by_id = {} if series is None else dict(zip(series["unique_id"].astype(str), series["metric"].astype(str),
                                                strict=False))
    return per_series["unique_id"].astype(str).map(lambda uid: by_id.get(uid) or split_unique_id(uid)[0])


def metric_leaderboards(result, series: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """metric -> leaderboard over that metric's series, ranked by the backtest's criterion.

    Args:
        result: the evaluated backtest (``per_series`` and ``spec``).
        series: the series table (``unique_id, metric``); a series it does not list (or all,
            without it) takes the metric of its ``unique_id`` (``<metric>/<entity>``).
    """
    per_series = result.per_series
    if per_series.empty:
        return {}
    metrics = metric_of_rows(per_series, series)
    criterion = criterion_of(result.spec)
    return {str(metric): leaderboard(per_series[metrics == metric], result.spec.horizons, criterion)
            for metric in sorted(metrics.unique())}


def metric_champions(result, series: pd.DataFrame | None = None) -> dict[str, str]:
    """Per metric, the champion by the backtest's criterion over that metric's series (the one mapping).

    A metric where no model could be scored has no champion (logged).
    """
    criterion = criterion_of(result.spec)
    out = {}
    for metric, board in metric_leaderboards(result, series).items():
        try:
            out[metric] = criterion.champion(board)
        except DataError:
            log.info("no model could be scored on %s; no champion for it", metric)
    return out


CRITERIA = ("mean_mase",)
"""The champion criteria known; ``mean_mase`` may weigh the horizons (``horizon_weights``)."""


@dataclass(frozen=True)
class ChampionCriterion:
    """The one champion rule: a leaderboard (``model, horizon, mase``) in, one score per model out; lower wins.

    ``mean_mase`` with no weights is the mean of a model's MASE over the horizons of the
    board. ``horizon_weights`` (horizon -> weight, horizons not named weigh 1) make it the
    weighted mean instead, e.g. ``{"30m": 2}`` counts the 30-minute error twice.
    Configured as ``champion: {criterion, horizon_weights}`` (``foresight_lib.config``).
    """

    name: str = "mean_mase"
    horizon_weights: tuple[tuple[str, float], ...] = ()
    """(horizon, weight) pairs, as a tuple so that the criterion is hashable and picklable."""

    @classmethod
    def from_setting(cls, setting: Mapping | ChampionCriterion | None) -> ChampionCriterion:
        """The criterion of a ``champion`` setting (``{criterion, horizon_weights}``), or the default."""
        if isinstance(setting, ChampionCriterion):
            return setting
        if not setting:
            return DEFAULT_CRITERION
        weights = setting.get("horizon_weights") or {}
        return cls(str(setting.get("criterion") or "mean_mase"),
                   tuple((str(h), float(w)) for h, w in dict(weights).items()))

    def to_setting(self) -> dict:
        """The ``champion`` setting of this criterion (what ``from_setting`` reads back)."""
        return {"criterion": self.name, "horizon_weights": dict(self.horizon_weights)}

    @property
    def is_default(self) -> bool:
        """Plain mean MASE over the horizons: the score is the ``mean_mase`` that readers know."""
        return self.name == "mean_mase" and all(w == 1.0 for _, w in self.horizon_weights)

    @property
    def label(self) -> str:
        """A short name of the rule, e.g. ``mean_mase`` or ``mean_mase[30m=2]``."""
        if self.is_default:
            return self.name
        return f"{self.name}[{','.join(f'{h}={w:g}' for h, w in self.horizon_weights)}]"

    @property
    def description(self) -> str:
        """The rule in words: ``mean MASE``, or ``mean MASE weighted by horizon (30m=2)``."""
        if self.is_default:
            return "mean MASE"
        return f"mean MASE weighted by horizon ({', '.join(f'{h}={w:g}' for h, w in self.horizon_weights)})"

    def scores(self, board: pd.DataFrame) -> pd.Series:
        """model -> score over the board's horizons (NaN where the model has no finite MASE)."""
        if board.empty:
            return pd.Series(dtype="float64")
        if self.is_default:
            return board.groupby("model")["mase"].mean()
        weights = dict(self.horizon_weights)
        w = board["horizon"].astype(str).map(lambda h: weights.get(h, 1.0)).astype("float64")
        mase_values = pd.to_numeric(board["mase"], errors="coerce").astype("float64")
        finite = np.isfinite(mase_values.to_numpy())
        w = w.where(finite, 0.0)
        frame = pd.DataFrame({"model": board["model"].to_numpy(), "wx": (w * mase_values.where(finite, 0.0)),
                              "w": w})
        sums = frame.groupby("model")[["wx", "w"]].sum()
        return (sums["wx"] / sums["w"].where(sums["w"] > 0)).astype("float64")

    def score(self, board: pd.DataFrame, model: str) -> float:
        """``model``'s score on ``board``.

        Raises:
            ConfigError: ``model`` is not on the board.
        """
        from foresight_lib.errors import ConfigError

        if board.empty or model not in set(board["model"]):
            known = sorted(board["model"].unique()) if not board.empty else []
            raise ConfigError(f"model '{model}' is not on the leaderboard; choose one of {known}")
        rows = board[board["model"] == model]
        if self.is_default:  # the mean as the registry has always compared it, to the last bit
            return float(pd.to_numeric(rows["mase"], errors="coerce").mean())
        return float(self.scores(rows).get(model, float("nan")))

    def champion(self, board: pd.DataFrame) -> str:
        """The model with the lowest finite score.

        Raises:
            DataError: no model has a finite score (no series could be scored).
        """
        means = self.scores(board)
        means = means[np.isfinite(means.to_numpy(dtype="float64"))]
        if means.empty:
            raise DataError(f"no model has a finite {self.description}, so there is no champion: no series could be "
                            "scored (constant or non-finite training data); check the backtest report's unscored "
                            "series")
        return str(means.idxmin())


DEFAULT_CRITERION = ChampionCriterion()
"""Mean MASE over the configured horizons: DESIGN.md's default champion rule."""


def criterion_of(spec) -> ChampionCriterion:
    """The champion criterion of a backtest spec (the default for specs pickled before it was one)."""
    return getattr(spec, "criterion", None) or DEFAULT_CRITERION
