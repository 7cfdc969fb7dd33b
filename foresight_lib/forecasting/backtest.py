"""The backtest: the evaluation protocol of DESIGN.md, for every model.

Per series the last ``test_days`` are held out and each model is fitted once on the
``history_days`` before them. From a cutoff every ``stride`` across the held-out
part it forecasts 1..H steps, conditioned on the actuals up to the cutoff, with no
refit. Local models run in parallel across series (one process per core); global
models (the LSTM) are fitted once across all series. A model that fails on a series
is replaced there by the fallback model, and the report counts it; so is a model whose
forecasts are not finite, so that no NaN or infinity ever leaves the backtest.

The ensemble needs errors that the test day has not seen: the base models are also
fitted on the history minus its last day and forecast that day with the same
protocol; those errors set the ensemble's weights and interval widths per step.

Every forecast that leaves the backtest is finite, and every series or model left out of
the scores is listed with its reason (``skipped``, ``unscored``, ``skipped_models``).
Fitting and forecasting live in :mod:`foresight_lib.forecasting.backtest_runner` (which knows
nothing of the protocol: this module hands it a ``ForecastTask``), the ensemble's arithmetic in
:mod:`foresight_lib.forecasting.ensemble`.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest_runner import (
    ForecastTask,
    RunOutcome,
    check_forecast,
    fallback_forecast,
    merge_outcome,
    run_models,
)
from foresight_lib.forecasting.ensemble import (
    SELECTION_MARGIN,
    TOP_MODELS,
    EnsembleWeights,
    MemberChoice,
    choose_members,
    fit_ensemble_weights,
    member_subsets,
    subset_losses,
)
from foresight_lib.forecasting.metrics import (
    DEFAULT_CRITERION,
    ChampionCriterion,
    champion,
    criterion_of,
    evaluate,
    leaderboard,
    mase_scales,
    wql_left_out,
)
from foresight_lib.forecasting.models import ENSEMBLE, FALLBACK_MODEL, check_model_names, model_class
from foresight_lib.forecasting.models.base import Forecast
from foresight_lib.frames import LEVELS, check_series_frame, split_unique_id
from foresight_lib.horizons import horizon_steps, parse_horizons, season_length, to_timedelta

__all__ = [
    "MAX_ABS_VALUE", "MIN_TRAIN_SEASONS", "TOP_MODELS", "BacktestPart", "BacktestResult", "BacktestSpec",
    "EnsembleWeights", "SeriesSplit", "backtest_part", "choose_ensemble_members", "finish_backtest",
    "fit_ensemble_weights", "forecast_frame", "part_validation_losses", "run_backtest", "scored_leaderboard",
    "split_series", "validation_losses",
]

log = logging.getLogger(__name__)

_LocalOutcome = RunOutcome
"""The name backtest parts pickled before the runner had its own module give the outcome: they still load."""

MIN_TRAIN_SEASONS = 2.0
"""Least history, in seasons (days), a series needs before its held-out part."""
MAX_ABS_VALUE = 1e18
"""Largest magnitude a backtested value may have: far above any plausible resource value
(validation quarantines absurd ones from ``validation.max_abs_value``, 1e15 by default) and
far below where squared errors overflow. A series beyond it is skipped with its reason."""


@dataclass
class BacktestSpec:
    """What to backtest and how; defaults are DESIGN.md's evaluation protocol."""

    models: list[str]
    freq: str = "5min"
    horizons: list[str] = field(default_factory=lambda: ["5m", "15m", "30m"])
    test_days: float = 1.0
    history_days: float = 14.0
    stride: str = "30m"
    season: str = "1d"
    levels: tuple[int, ...] = LEVELS
    n_jobs: int = 0
    """Worker processes for local models; 0 = one per core, 1 = in this process."""
    model_params: dict[str, dict] = field(default_factory=dict)
    future: bool = False
    """Also forecast H steps after the end of the data (the live forecast)."""
    keep_models: bool = False
    """Return the fitted models (updated to the end of the data)."""
    criterion: ChampionCriterion = DEFAULT_CRITERION
    """The champion rule that ranks the leaderboard and picks the champion (``champion.criterion``)."""
    select_members: bool = False
    """Choose the ensemble's members per metric on the validation day (forward selection);
    False: every base model, the best ``TOP_MODELS`` per step (``ensemble_selection``)."""
    selection_margin: float = SELECTION_MARGIN
    """Least relative drop of the pooled validation MASE for which a member is added."""

    def __post_init__(self) -> None:
        self.models = check_model_names(list(self.models))
        self.horizons = parse_horizons(self.horizons)
        self.season_length = season_length(self.freq, self.season)
        self.horizon_steps = {h: horizon_steps(h, self.freq) for h in self.horizons}
        self.max_steps = max(self.horizon_steps.values())
        self.stride_steps = horizon_steps(self.stride, self.freq)
        self.test_steps = _days_to_steps(self.test_days, self.season_length, "test_days")
        self.history_steps = _days_to_steps(self.history_days, self.season_length, "history_days")
        if self.max_steps > self.test_steps:
            raise ConfigError(
                f"the longest horizon ({self.horizons[-1]}) is longer than the held-out part "
                f"({self.test_days} day(s)); raise test_days or shorten the horizons"
            )
        if self.models == [ENSEMBLE]:
            raise ConfigError("the ensemble combines other models; name at least one more model")

    @property
    def base_models(self) -> list[str]:
        return [m for m in self.models if m != ENSEMBLE]

    @property
    def origins(self) -> list[int]:
        """Counts of held-out actuals known at each cutoff."""
        return list(range(0, self.test_steps - self.max_steps + 1, self.stride_steps))


def _days_to_steps(days: float, steps_per_day: int, name: str) -> int:
    steps = int(round(days * steps_per_day))
    if steps < 1:
        raise ConfigError(f"{name} must be positive, got {days}")
    return steps


@dataclass
class SeriesSplit:
    """One series cut for the protocol: training values and the held-out values after them."""

    unique_id: str
    ds: pd.DatetimeIndex
    """Timestamps of train + test (regular)."""
    train: np.ndarray
    test: np.ndarray


@dataclass
class BacktestResult:
    """Forecasts, scores and bookkeeping of one backtest."""

    forecasts: pd.DataFrame
    per_series: pd.DataFrame
    leaderboard: pd.DataFrame
    champion: str
    series: list[str]
    skipped: list[dict]
    fallbacks: list[dict]
    fit_seconds: dict[str, float]
    predict_seconds: dict[str, float]
    seconds: float
    spec: BacktestSpec
    future_forecasts: pd.DataFrame | None = None
    models: dict = field(default_factory=dict)
    """(model, unique_id) -> fitted local model, and model -> fitted global model."""
    ensemble_weights: dict = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    """MASE scale per series: in-sample MAE of the one-day seasonal naive on the training part,
    guarded (:func:`foresight_lib.forecasting.metrics.mase_scale`); NaN for a series that is not scored."""
    scale_notes: dict[str, str] = field(default_factory=dict)
    """Series whose MASE scale was guarded (floored, or not scored) -> why."""
    unscored: list[dict] = field(default_factory=list)
    """Series backtested but left out of the scores (no usable MASE scale), with the reason."""
    skipped_models: list[dict] = field(default_factory=list)
    """Models of the spec missing from the leaderboard, with the reason (normally none)."""
    validation_fallbacks: list[dict] = field(default_factory=list)
    """Fallbacks on the ensemble's validation day (``fallbacks`` holds the held-out day's only)."""
    tuning: dict = field(default_factory=dict)
    """model -> how its tuned parameters were chosen in this run (tuned or reused, MASE before/after)."""
    fitted_params: dict[str, dict] = field(default_factory=dict)
    """model -> the constructor parameters of one fitted instance, where ``models`` is not kept
    (a run evaluated in shards keeps its fitted models in the shards' results)."""
    ensemble_members: dict = field(default_factory=dict)
    """metric -> the ensemble's members there and how they were chosen (``MemberChoice``)."""
    shard_results: list[str] = field(default_factory=list)
    """Where the shards' results, with their fitted models, are stored in the run folder (see
    :mod:`foresight_lib.forecasting.shard_results`); empty when this result holds the models itself."""

    def report(self) -> dict:
        """The JSON report: leaderboard rows, champion, series, timings, skips, fallbacks, MASE and wQL guards."""
        return {
            "champion": self.champion,
            "leaderboard": self.leaderboard.to_dict(orient="records"),
            "series": len(self.series),
            "series_ids": self.series,
            "seconds": round(self.seconds, 3),
            "fit_seconds": {k: round(v, 3) for k, v in self.fit_seconds.items()},
            "predict_seconds": {k: round(v, 3) for k, v in self.predict_seconds.items()},
            "skipped": self.skipped,
            "skipped_models": self.skipped_models,
            "unscored": self.unscored,
            "mase_guard": [
                {"unique_id": uid, "scale": self.scales.get(uid), "scored": uid not in {u["unique_id"] for u in
                                                                                         self.unscored},
                 "reason": note}
                for uid, note in self.scale_notes.items()
            ],
            "wql_left_out": wql_left_out(self.per_series),
            "fallbacks": self.fallbacks,
            "fallback_counts": _count_series(self.fallbacks),
            "validation_fallbacks": self.validation_fallbacks,
            "validation_fallback_counts": _count_series(self.validation_fallbacks),
            "ensemble_members": {metric: choice.report()
                                 for metric, choice in (getattr(self, "ensemble_members", None) or {}).items()},
            "protocol": {
                "freq": self.spec.freq, "horizons": self.spec.horizons,
                "test_days": self.spec.test_days, "history_days": self.spec.history_days,
                "stride": self.spec.stride, "season_length": self.spec.season_length,
                "cutoffs_per_series": len(self.spec.origins), "models": self.spec.models,
            },
        }


def _count_series(fallbacks: list[dict]) -> dict[str, int]:
    """Model -> number of distinct series it fell back on."""
    seen: dict[str, set[str]] = {}
    for row in fallbacks:
        seen.setdefault(row["model"], set()).add(row["unique_id"])
    return {model: len(ids) for model, ids in seen.items()}


def split_series(df: pd.DataFrame, spec: BacktestSpec) -> tuple[list[SeriesSplit], list[dict]]:
    """Cut every series of a regular long frame; too short or gappy ones are skipped with a reason."""
    df = check_series_frame(df)
    step = to_timedelta(spec.freq)
    min_seasons = max([MIN_TRAIN_SEASONS] + [_min_seasons(m) for m in spec.base_models])
    min_train = int(np.ceil(min_seasons * spec.season_length))
    splits, skipped = [], []
    for uid, group in df.groupby("unique_id", sort=True):
        ds = pd.DatetimeIndex(group["ds"])
        y = group["y"].to_numpy("float64")
        if ds.has_duplicates:
            skipped.append({"unique_id": uid, "reason": "duplicate timestamps; run the features step first"})
            continue
        if len(ds) > 1 and not (np.diff(ds.asi8) == step.value).all():
            skipped.append({
                "unique_id": uid,
                "reason": f"not on a regular {spec.freq} grid; resample it (features step) before the backtest",
            })
            continue
        n_test = spec.test_steps
        n_train = min(len(y) - n_test, spec.history_steps)
        if n_train < min_train:
            skipped.append({
                "unique_id": uid,
                "reason": (
                    f"too short: {len(y)} values, needs {n_test} held out + at least {min_train} of history "
                    f"({min_seasons:g} day(s) at {spec.freq}); give it more history or lower test_days"
                ),
            })
            continue
        window = slice(len(y) - n_test - n_train, len(y))
        y_window, ds_window = y[window], ds[window]
        if np.isnan(y_window).any():
            missing = int(np.isnan(y_window).sum())
            skipped.append({
                "unique_id": uid,
                "reason": f"{missing} missing value(s) left after gap filling in the backtest window",
            })
            continue
        if np.isinf(y_window).any():
            skipped.append({
                "unique_id": uid,
                "reason": (f"{int(np.isinf(y_window).sum())} infinite value(s) in the backtest window; validation "
                           "quarantines such series (validation.max_non_finite_share)"),
            })
            continue
        if (np.abs(y_window) > MAX_ABS_VALUE).any():
            worst = float(y_window[np.argmax(np.abs(y_window))])
            skipped.append({
                "unique_id": uid,
                "reason": (f"{int((np.abs(y_window) > MAX_ABS_VALUE).sum())} absurd value(s) beyond "
                           f"±{MAX_ABS_VALUE:g} in the backtest window (e.g. {worst:.6g}); validation quarantines "
                           "such series (validation.max_abs_value)"),
            })
            continue
        splits.append(SeriesSplit(uid, ds_window, y_window[:n_train], y_window[n_train:]))
    return splits, skipped


def _min_seasons(model: str) -> float:
    return float(getattr(model_class(model), "min_seasons", 0.0))


# ---------------------------------------------------------------------------
# Ensemble


def _validation_splits(splits: list[SeriesSplit], spec: BacktestSpec) -> tuple[list[SeriesSplit], list[int]]:
    """The last day of each training part, held out the same way the test day is."""
    val_steps = spec.season_length
    val_origins = list(range(0, val_steps - spec.max_steps + 1, spec.stride_steps))
    min_train = int(np.ceil(MIN_TRAIN_SEASONS * spec.season_length))
    val_splits = [
        SeriesSplit(s.unique_id, s.ds[: len(s.train)], s.train[:-val_steps], s.train[-val_steps:])
        for s in splits
        if len(s.train) - val_steps >= min_train
    ]
    return val_splits, val_origins


def _metric_of(uid: str, metric_of: Mapping[str, str] | None) -> str:
    """A series' metric: ``metric_of``'s (the series table's), else its id's ``<metric>/`` part."""
    return (metric_of or {}).get(uid) or split_unique_id(uid)[0]


def validation_losses(splits: Sequence[SeriesSplit], spec: BacktestSpec, val_forecasts: dict,
                      metric_of: Mapping[str, str] | None = None) -> dict[str, tuple[np.ndarray, int]]:
    """metric -> (validation MASE of each member subset per series with a complete validation day,
    shape (series, subsets); the metric's number of series).

    Only the validation day is read (each series' last training day and the base models'
    forecasts of it); the MASE scale is the training part's. Rows are in ``splits``' order,
    so the rows of consecutive shards put together are those of the whole.
    """
    bases = spec.base_models
    subsets = member_subsets(len(bases))
    _, val_origins = _validation_splits(list(splits), spec)
    val_steps = spec.season_length
    scales, _ = mase_scales({s.unique_id: s.train for s in splits}, spec.season_length)
    rows: dict[str, list[np.ndarray]] = {}
    counts: dict[str, int] = {}
    for split in splits:
        uid = split.unique_id
        metric = _metric_of(uid, metric_of)
        counts[metric] = counts.get(metric, 0) + 1
        rows.setdefault(metric, [])
        scale = scales[uid]
        if not np.isfinite(scale) or not all((m, uid) in val_forecasts for m in bases):
            continue  # too short to validate, or no usable scale: a gap in the metric's validation day
        rows[metric].append(subset_losses({m: val_forecasts[(m, uid)] for m in bases}, split.train[-val_steps:],
                                          val_origins, spec.max_steps, scale, subsets))
    return {metric: (np.stack(r) if r else np.empty((0, len(subsets))), counts[metric]) for metric, r in rows.items()}


def part_validation_losses(parts: Sequence[BacktestPart], spec: BacktestSpec,
                           metric_of: Mapping[str, str] | None = None) -> dict[str, tuple[np.ndarray, int]]:
    """``validation_losses`` of the series of some parts (one shard's, every model's)."""
    val_forecasts: dict = {}
    for part in parts:
        if part.validation is not None:
            val_forecasts.update(part.validation.forecasts)
    return validation_losses(parts[0].splits, spec, val_forecasts, metric_of)


def choose_ensemble_members(losses: Sequence[Mapping[str, tuple[np.ndarray, int]]], spec: BacktestSpec
                            ) -> dict[str, MemberChoice]:
    """metric -> its members, from the validation losses of every shard (in shard order)."""
    pooled: dict[str, list] = {}
    for shard in losses:
        for metric, (rows, n) in shard.items():
            entry = pooled.setdefault(metric, [[], 0])
            entry[0].append(rows)
            entry[1] += n
    bases = spec.base_models
    if not getattr(spec, "select_members", False):
        return {metric: MemberChoice(list(bases), "all_models", reason="member selection is off (ensemble_selection)")
                for metric in sorted(pooled)}
    out = {}
    for metric in sorted(pooled):
        rows, n = pooled[metric]
        out[metric] = choose_members(bases, np.concatenate(rows), n, getattr(spec, "selection_margin",
                                                                             SELECTION_MARGIN))
        log.info("ensemble of %s: members %s (%s%s)", metric, out[metric].members, out[metric].rule,
                 f": {out[metric].reason}" if out[metric].reason else "")
    return out


def _ensemble_forecasts(
    splits: list[SeriesSplit], spec: BacktestSpec, test_forecasts: dict, val_forecasts: dict,
    fallbacks: list[dict], members: Mapping[str, MemberChoice] | None = None,
    metric_of: Mapping[str, str] | None = None,
) -> dict[str, EnsembleWeights]:
    """Validation-day weights per series among its metric's members, then the ensemble's
    forecasts into ``test_forecasts``.

    A series whose combination is not finite gets the fallback's forecasts instead (and
    no weights), recorded in ``fallbacks`` like any failed model.
    """
    _, val_origins = _validation_splits(splits, spec)
    origins = spec.origins + ([spec.test_steps] if spec.future else [])
    val_steps = spec.season_length
    weights: dict[str, EnsembleWeights] = {}
    bases = spec.base_models
    for split in splits:
        uid = split.unique_id
        choice = (members or {}).get(_metric_of(uid, metric_of))
        chosen = [m for m in bases if choice is None or m in choice.members]
        if all((m, uid) in val_forecasts for m in bases):
            val_fc = {m: val_forecasts[(m, uid)] for m in bases}
            ens = fit_ensemble_weights(val_fc, split.train[-val_steps:], val_origins, spec.max_steps, spec.levels,
                                       members=chosen)
        else:  # too short to validate: equal weights, widths from the widest member
            ens = EnsembleWeights(chosen, np.full((spec.max_steps, len(chosen)), 1.0 / len(chosen)), {})
            for level in spec.levels:
                ens.half_widths[level] = np.max(
                    [(test_forecasts[(m, uid)][f"hi-{level}"][0] - test_forecasts[(m, uid)][f"lo-{level}"][0]) / 2
                     for m in chosen], axis=0,
                )
        with np.errstate(all="ignore"):
            combined = ens.combine({m: test_forecasts[(m, uid)] for m in chosen}, spec.levels)
        try:
            check_forecast(combined, len(origins), spec.max_steps)
        except ValueError as exc:
            log.warning("ensemble failed on %s (%s); using %s", uid, exc, FALLBACK_MODEL)
            fallbacks.append({"model": ENSEMBLE, "unique_id": uid, "error": f"ValueError: {exc}"})
            test_forecasts[(ENSEMBLE, uid)] = fallback_forecast(split, spec.season_length, origins,
                                                                 spec.max_steps, spec.levels)
            continue
        weights[uid] = ens
        test_forecasts[(ENSEMBLE, uid)] = combined
    return weights


def _spec_fields(spec: BacktestSpec) -> dict:
    return {
        "models": spec.models, "freq": spec.freq, "horizons": spec.horizons,
        "test_days": spec.test_days, "history_days": spec.history_days, "stride": spec.stride,
        "season": spec.season, "levels": spec.levels, "n_jobs": spec.n_jobs,
        "model_params": spec.model_params, "future": spec.future, "keep_models": spec.keep_models,
        "criterion": criterion_of(spec), "select_members": getattr(spec, "select_members", False),
        "selection_margin": getattr(spec, "selection_margin", SELECTION_MARGIN),
    }


# ---------------------------------------------------------------------------
# Assembly


def forecast_frame(
    forecasts: dict[tuple[str, str], Forecast], splits: list[SeriesSplit], origins: list[int],
    h: int, levels: Sequence[int], models: list[str], freq: pd.Timedelta, with_actuals: bool,
) -> pd.DataFrame:
    """Long forecast frame (``unique_id, cutoff, ds, step, model, yhat, yhat_lo_80…``)."""
    frames = []
    steps = np.arange(1, h + 1)
    for split in splits:
        n_train = len(split.train)
        last_known = np.array([n_train + o - 1 for o in origins])
        start_ns = split.ds.as_unit("ns").asi8[0]
        cutoff = np.repeat(start_ns + last_known * freq.value, h)
        ds = cutoff + np.tile(steps, len(origins)) * freq.value
        target_idx = (np.array(origins)[:, None] + steps[None, :] - 1).ravel()
        for model in models:
            fc = forecasts[(model, split.unique_id)]
            data = {
                "unique_id": split.unique_id, "cutoff": cutoff, "ds": ds,
                "step": np.tile(steps, len(origins)), "model": model, "yhat": fc["mean"].ravel(),
            }
            for level in levels:
                data[f"yhat_lo_{level}"] = fc[f"lo-{level}"].ravel()
                data[f"yhat_hi_{level}"] = fc[f"hi-{level}"].ravel()
            if with_actuals:
                data["y"] = split.test[target_idx]
            frames.append(pd.DataFrame(data))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    for col in ("cutoff", "ds"):
        out[col] = pd.to_datetime(out[col], unit="ns", utc=True)
    out["step"] = out["step"].astype("int64")
    return out


@dataclass
class BacktestPart:
    """The forecasts of some of the models: what one mapped training task produces.

    Parts of the same frame and spec are merged by ``finish_backtest``; a part pickles
    (arrays and fitted models), so a DAG task can store it for the evaluate step.
    """

    models: list[str]
    splits: list[SeriesSplit]
    skipped: list[dict]
    outcome: RunOutcome
    validation: RunOutcome | None
    seconds: float
    model_params: dict = field(default_factory=dict)
    """Parameters a model of this part ran with that the spec's do not hold (tuned ones)."""
    tuning: dict = field(default_factory=dict)
    """model -> how its tuned parameters were chosen (``tuning.params_for_run``)."""


def backtest_part(
    df: pd.DataFrame, spec: BacktestSpec, models: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None,
    allow_empty: bool = False,
) -> BacktestPart:
    """Fit and forecast ``models`` (default: every base model of ``spec``) on every series.

    When ``spec`` includes the ensemble, the models also forecast each series' validation
    day (the last day of its training part), which sets the ensemble's weights.

    Args:
        allow_empty: when no series can be backtested, return a part with no series (its
            ``skipped`` says why) instead of failing: one shard of many may lose all its series.

    Raises:
        DataError: no series is long and regular enough (the reasons per series are listed).
    """
    started = time.perf_counter()
    models = [m for m in (models or spec.base_models) if m != ENSEMBLE]
    check_model_names(models)
    splits, skipped = split_series(df, spec)
    if not splits and allow_empty:
        log.warning("no series can be backtested (%d skipped); the part is empty", len(skipped))
        validation = RunOutcome() if ENSEMBLE in spec.models else None
        return BacktestPart(models, [], skipped, RunOutcome(), validation, time.perf_counter() - started)
    if not splits:
        reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in skipped[:5])
        raise DataError(f"no series can be backtested ({len(skipped)} skipped): {reasons}")
    for row in skipped:
        log.warning("skipping series %s: %s", row["unique_id"], row["reason"])
    if on_start:
        on_start(len(splits))
    part_spec = BacktestSpec(**{**_spec_fields(spec), "models": models})
    origins = spec.origins + ([spec.test_steps] if spec.future else [])
    outcome = run_models(_task(splits, part_spec, origins), part_spec.n_jobs, progress)
    validation = None
    if ENSEMBLE in spec.models:
        val_splits, val_origins = _validation_splits(splits, spec)
        val_spec = BacktestSpec(**{**_spec_fields(part_spec), "keep_models": False, "future": False})
        validation = run_models(_task(val_splits, val_spec, val_origins), val_spec.n_jobs)
    return BacktestPart(models, splits, skipped, outcome, validation, time.perf_counter() - started)


def _task(splits: list[SeriesSplit], spec: BacktestSpec, origins: list[int]) -> ForecastTask:
    """The runner's task: ``spec``'s base models on ``splits``, forecasting its longest horizon from ``origins``."""
    return ForecastTask(splits, spec.base_models, origins, spec.max_steps, spec.levels, spec.season_length,
                        spec.model_params, spec.keep_models)


def finish_backtest(parts: Sequence[BacktestPart], spec: BacktestSpec, require_scored: bool = True,
                    metric_of: Mapping[str, str] | None = None,
                    members: Mapping[str, MemberChoice] | None = None) -> BacktestResult:
    """Merge parts, add the ensemble, score every model and rank them.

    Args:
        require_scored: fail when no series can be scored. A shard of a larger run passes
            False: its series may all be unscored while the run's others are not.
        metric_of: unique_id -> metric (the series table's); a series it does not list takes
            its id's ``<metric>/`` part. The ensemble's members are chosen per metric.
        members: metric -> the ensemble's members, chosen over every shard of the run
            (``choose_ensemble_members``); default: chosen here, on these parts' validation day.
    """
    started = time.perf_counter()
    splits = parts[0].splits
    ids = [s.unique_id for s in splits]
    spec, tuning = _with_part_params(spec, parts)
    total = RunOutcome()
    val = RunOutcome()
    for part in parts:
        if [s.unique_id for s in part.splits] != ids:
            raise ConfigError("backtest parts cover different series; run every part on the same frame and spec")
        merge_outcome(total, part.outcome)
        if part.validation is not None:
            merge_outcome(val, part.validation)
    missing = [m for m in spec.base_models if (m, ids[0]) not in total.forecasts]
    if missing:
        raise ConfigError(f"no forecasts for model(s) {missing}; run their training before the evaluation")

    ensemble_weights: dict = {}
    ensemble_members: dict = {}
    if ENSEMBLE in spec.models:
        t0 = time.perf_counter()
        if members is None and not getattr(spec, "select_members", False):
            members = choose_ensemble_members([{_metric_of(u, metric_of): ([], 0) for u in ids}], spec)
        elif members is None:
            members = choose_ensemble_members([validation_losses(splits, spec, val.forecasts, metric_of)], spec)
        ensemble_members = {metric: members[metric] for metric in sorted({_metric_of(u, metric_of) for u in ids})
                            if metric in members}
        ensemble_weights = _ensemble_forecasts(splits, spec, total.forecasts, val.forecasts, total.fallbacks,
                                               members, metric_of)
        for name, seconds in val.fit_seconds.items():
            total.fit_seconds[f"{name}@validation"] = seconds
        total.fit_seconds[ENSEMBLE] = time.perf_counter() - t0
        total.predict_seconds[ENSEMBLE] = 0.0

    freq = to_timedelta(spec.freq)
    n_scored = len(spec.origins)
    scored = {k: {kk: vv[:n_scored] for kk, vv in v.items()} for k, v in total.forecasts.items()}
    forecasts = forecast_frame(scored, splits, spec.origins, spec.max_steps, spec.levels, spec.models, freq, True)
    future = None
    if spec.future:
        last = {k: {kk: vv[n_scored:] for kk, vv in v.items()} for k, v in total.forecasts.items()}
        future = forecast_frame(last, splits, [spec.test_steps], spec.max_steps, spec.levels, spec.models, freq, False)

    for name, frame in (("backtest", forecasts), ("future", future)):
        _check_finite(frame, name)

    scales, notes = mase_scales({s.unique_id: s.train for s in splits}, spec.season_length)
    unscored = [{"unique_id": uid, "reason": notes[uid]} for uid in ids if not np.isfinite(scales[uid])]
    for row in unscored:
        log.warning("series %s is not scored: %s", row["unique_id"], row["reason"])
    if len(unscored) == len(ids) and require_scored:
        reasons = "; ".join(f"{r['unique_id']}: {r['reason']}" for r in unscored[:5])
        raise DataError(f"no series can be scored ({len(ids)} backtested, none with a usable MASE scale): {reasons}")
    per_series = evaluate(forecasts, scales, spec.horizon_steps, spec.levels)
    board, skipped_models = scored_leaderboard(leaderboard(per_series, spec.horizons, criterion_of(spec)), spec.models)
    return BacktestResult(
        forecasts=forecasts, per_series=per_series, leaderboard=board,
        champion=champion(board, criterion_of(spec)) if len(unscored) < len(ids) else "",
        series=ids, skipped=parts[0].skipped, fallbacks=total.fallbacks,
        fit_seconds=total.fit_seconds, predict_seconds=total.predict_seconds,
        seconds=max(p.seconds for p in parts) + time.perf_counter() - started, spec=spec,
        future_forecasts=future, models=total.models, ensemble_weights=ensemble_weights, scales=scales,
        scale_notes=notes, unscored=unscored, skipped_models=skipped_models, validation_fallbacks=val.fallbacks,
        tuning=tuning, ensemble_members=ensemble_members,
    )


def _with_part_params(spec: BacktestSpec, parts: Sequence[BacktestPart]) -> tuple[BacktestSpec, dict]:
    """``spec`` holding the parameters the parts' models really ran with (tuned ones), and the tuning records."""
    params, tuning = {}, {}
    for part in parts:
        params.update(getattr(part, "model_params", None) or {})
        tuning.update(getattr(part, "tuning", None) or {})
    if not params:
        return spec, tuning
    spec = copy.copy(spec)
    spec.model_params = {**spec.model_params, **params}
    return spec, tuning


def _check_finite(frame: pd.DataFrame | None, name: str) -> None:
    """No NaN or infinity may leave the backtest (every model's failures were replaced by the fallback)."""
    if frame is None or frame.empty:
        return
    columns = [c for c in frame.columns if c == "yhat" or c.startswith(("yhat_lo_", "yhat_hi_"))]
    bad = ~np.isfinite(frame[columns].to_numpy(dtype="float64"))
    if bad.any():
        rows = frame[bad.any(axis=1)]
        raise DataError(f"{int(bad.sum())} non-finite {name} forecast value(s), e.g. model {rows['model'].iloc[0]} "
                        f"on {rows['unique_id'].iloc[0]}; this is a bug in the backtest's fallback")


def scored_leaderboard(board: pd.DataFrame, models: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """The leaderboard without models that have no finite score, and a skip entry for each of them."""
    means = board.groupby("model")["mase"].mean()
    skipped = []
    for model in models:
        if model not in means.index:
            skipped.append({"model": model, "reason": "no scored forecasts (every series it forecast was left out)"})
        elif not np.isfinite(means[model]):
            skipped.append({"model": model, "reason": "its mean MASE is not finite"})
    for row in skipped:
        log.warning("model %s left out of the leaderboard: %s", row["model"], row["reason"])
    dropped = {row["model"] for row in skipped}
    return board[~board["model"].isin(dropped)].reset_index(drop=True), skipped


def run_backtest(
    df: pd.DataFrame, spec: BacktestSpec, progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None, metric_of: Mapping[str, str] | None = None,
) -> BacktestResult:
    """Backtest ``spec.models`` on every series of the regular long frame ``df``.

    Args:
        df: long frame on the ``spec.freq`` grid (after the features step).
        progress: called with the number of series finished, for a progress bar.
        on_start: called once with the number of series that will be backtested.
        metric_of: unique_id -> metric, where the ids do not say it (``finish_backtest``).

    Raises:
        DataError: no series is long and regular enough (the reasons per series are listed).
    """
    started = time.perf_counter()
    part = backtest_part(df, spec, progress=progress, on_start=on_start)
    result = finish_backtest([part], spec, metric_of=metric_of)
    result.seconds = time.perf_counter() - started
    return result
