"""Evaluation shard by shard: what evaluate and publish hold is bounded by a shard, not by the run.

Every fitted model of every series does not fit in one task at thousands of series (3.3 GB
at 1,000). A series is scored, and its ensemble weighed, on its own data only, so evaluate
finishes the backtest one shard at a time (``finish_backtest`` on the shard's parts) and
stores each shard's result, fitted models included (``evaluate/shard-<i>.pkl``). What is
ranked across series is kept for the run (``summarize``): per-series scores, the live
forecasts, the bookkeeping and the backtest forecasts of the few series plotted in MLflow.
The leaderboards, champions and scores are those of one evaluation over every series: the
shards are consecutive runs of the sorted ids, so their per-series rows put back in shard
order are the rows of the whole.

Publish builds each metric's champion from the shards' results (``champion_bundles``):
one shard's result in memory at a time, its pieces of each champion set aside on local
disk, then one metric's champion at a time.
"""
from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

from foresight_lib.errors import DataError
from foresight_lib.forecasting.backtest import (
    BacktestPart,
    BacktestResult,
    BacktestSpec,
    choose_ensemble_members,
    finish_backtest,
    part_validation_losses,
    scored_leaderboard,
)
from foresight_lib.forecasting.backtest_runner import RunOutcome
from foresight_lib.forecasting.champion import ChampionBundle
from foresight_lib.forecasting.metrics import champion, criterion_of, leaderboard
from foresight_lib.forecasting.models import ENSEMBLE
from foresight_lib.forecasting.plots import PLOT_SERIES, pick_series
from foresight_lib.forecasting.profiles import metric_profiles
from foresight_lib.forecasting.shards import empty_reason, is_global, load_parts, part_name, require_parts
from foresight_lib.frames import categorical_ids
from foresight_lib.scratch import scratch_dir

__all__ = ["backtest_forecasts_name", "champion_bundles", "evaluate_in_shards", "merge_bundles",
           "read_backtest_forecasts", "result_name", "subset_part", "summarize"]

log = logging.getLogger(__name__)


def result_name(shard: int | None) -> str:
    """Where evaluate stores a shard's result (``None``: the result of a run evaluated at once)."""
    return "evaluate/result.pkl" if shard is None else f"evaluate/shard-{shard}.pkl"


def backtest_forecasts_name(shard: int | None) -> str:
    """A shard's backtest forecasts in the run folder (``None``: every series', ``backtest_forecasts``)."""
    return "backtest_forecasts" if shard is None else f"backtest_forecasts/shard-{shard}"


def read_backtest_forecasts(store, shards: int) -> pd.DataFrame:
    """A run's backtest forecasts of every series: one frame, or its shards' put back in order."""
    if shards <= 1 or store.exists(backtest_forecasts_name(None)):
        return store.read_frame(backtest_forecasts_name(None))
    frames = [store.read_frame(backtest_forecasts_name(shard)) for shard in range(1, shards + 1)
              if store.exists(backtest_forecasts_name(shard))]
    out = pd.concat(frames, ignore_index=True)
    out["unique_id"] = categorical_ids(out["unique_id"])  # as read from one file
    return out


def subset_part(part: BacktestPart, ids: set[str], keep_seconds: bool) -> BacktestPart:
    """A global model's part cut to the series ``ids`` (its fitted network is kept whole).

    Args:
        keep_seconds: keep the fit and predict seconds (for one shard only, so that the
            run's sums count the global model's single fit once).
    """
    def cut(outcome: RunOutcome | None) -> RunOutcome | None:
        if outcome is None:
            return None
        return RunOutcome(
            forecasts={k: v for k, v in outcome.forecasts.items() if k[1] in ids},
            fit_seconds=dict(outcome.fit_seconds) if keep_seconds else {},
            predict_seconds=dict(outcome.predict_seconds) if keep_seconds else {},
            fallbacks=[f for f in outcome.fallbacks if str(f.get("unique_id")) in ids],
            models={k: v for k, v in outcome.models.items() if not isinstance(k, tuple) or k[1] in ids},
        )

    out = copy.copy(part)
    out.splits = [s for s in part.splits if s.unique_id in ids]
    out.skipped = [row for row in part.skipped if str(row["unique_id"]) in ids]
    out.outcome, out.validation = cut(part.outcome), cut(part.validation)
    return out


def _shard_parts(store, models: Sequence[str], shards: int, run_key: str
                 ) -> Iterator[tuple[int | None, list[BacktestPart] | None, dict | None]]:
    """``(shard, parts in model order, None)`` per shard; for a shard with no series left
    ``(shard, None, {"skipped": its series, "shards": one entry per local model})``.

    A run with one shard, or with no sharded model, is one shard ``None`` (``load_parts``).
    """
    local = [m for m in models if not is_global(m)]
    if shards <= 1 or not local:
        yield None, load_parts(store, models, shards, run_key)[0], None
        return
    require_parts(store, models, shards, run_key)
    global_parts = {m: pickle.loads(store.read_bytes(part_name(m))) for m in models if is_global(m)}
    seconds_counted = False
    for shard in range(1, shards + 1):
        parts = {m: pickle.loads(store.read_bytes(part_name(m, shard))) for m in local}
        first = parts[local[0]]
        if not first.splits:
            yield shard, None, {"skipped": first.skipped, "shards": [
                {"model": m, "shard": shard, "shards": shards, "series": len(p.skipped), "reason": empty_reason(p)}
                for m, p in parts.items()]}
            continue
        ids = {s.unique_id for s in first.splits} | {str(row["unique_id"]) for row in first.skipped}
        for model, part in global_parts.items():
            parts[model] = subset_part(part, ids, keep_seconds=not seconds_counted)
        seconds_counted = True
        yield shard, [parts[m] for m in models], None


def evaluate_in_shards(store, models: Sequence[str], shards: int, run_key: str, spec: BacktestSpec,
                       metric_of: Mapping[str, str] | None = None) -> tuple[BacktestResult, list[dict]]:
    """Finish the backtest one shard at a time, storing each shard's result; the run's summary.

    The ensemble's members are chosen per metric over every shard's validation day: a first
    pass reads each shard's parts for their validation errors (``part_validation_losses``),
    so every shard combines the members one evaluation of every series would choose.

    Returns:
        The run's result without fitted models (``summarize``) and the shards that had no
        series left after validation, with the reason.

    Raises:
        ConfigError: a train task's part is missing (named by model and shard).
        DataError: no series at all could be backtested, or none could be scored.
    """
    pieces, evaluated, skipped_shards, skipped_series = [], [], [], []
    members = _ensemble_members(store, models, shards, run_key, spec, metric_of)
    for shard, parts, skipped in _shard_parts(store, models, shards, run_key):
        if parts is None:
            skipped_series.extend(skipped["skipped"])
            skipped_shards.extend(skipped["shards"])
            log.warning("shard %d/%d skipped: %s", shard, shards, skipped["shards"][0]["reason"])
            continue
        result = finish_backtest(parts, spec, require_scored=shard is None, metric_of=metric_of, members=members)
        del parts
        store.write_bytes(result_name(shard), pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        store.write_frame(backtest_forecasts_name(shard), result.forecasts)
        evaluated.append(shard)
        pieces.append(_light(result))
        log.info("evaluated %s: %d series", "every series" if shard is None else f"shard {shard}/{shards}",
                 len(result.series))
        del result
    if not pieces:
        reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in skipped_series[:5])
        raise DataError(f"no series can be backtested ({len(skipped_series)} skipped): {reasons}")
    summary = summarize(pieces, spec, [result_name(shard) for shard in evaluated], skipped_series)
    summary.forecasts = _plotted_forecasts(store, summary, evaluated)
    return summary, skipped_shards


def _ensemble_members(store, models: Sequence[str], shards: int, run_key: str, spec: BacktestSpec,
                      metric_of: Mapping[str, str] | None) -> dict | None:
    """metric -> the ensemble's members over every shard; None (``finish_backtest`` chooses) for a run
    evaluated at once or without the ensemble."""
    if (ENSEMBLE not in spec.models or shards <= 1 or all(is_global(m) for m in models)
            or not getattr(spec, "select_members", False)):  # off: every shard takes every base model
        return None
    losses = []
    for _, parts, _ in _shard_parts(store, models, shards, run_key):
        if parts is not None:
            losses.append(part_validation_losses(parts, spec, metric_of))
            del parts
    return choose_ensemble_members(losses, spec)


def _light(result: BacktestResult) -> BacktestResult:
    """A shard's result without its fitted models and backtest forecasts (kept: what is ranked across series)."""
    out = copy.copy(result)
    out.fitted_params = {}
    for key, fitted in result.models.items():
        model = key[0] if isinstance(key, tuple) else key
        if model not in out.fitted_params and hasattr(fitted, "get_params"):
            out.fitted_params[model] = fitted.get_params()
    out.models, out.ensemble_weights, out.forecasts = {}, {}, pd.DataFrame()
    return out


def summarize(pieces: Sequence[BacktestResult], spec: BacktestSpec, names: Sequence[str],
              skipped: Sequence[dict] = ()) -> BacktestResult:
    """The run's result from its shards' (in shard order), as one evaluation over every series would give it.

    It holds no fitted models (``shard_results`` says where they are) and no backtest
    forecasts (``_plotted_forecasts`` adds the plotted series').

    Raises:
        DataError: no series of any shard could be scored.
    """
    series = [uid for p in pieces for uid in p.series]
    unscored = [row for p in pieces for row in p.unscored]
    if len(unscored) == len(series):
        reasons = "; ".join(f"{r['unique_id']}: {r['reason']}" for r in unscored[:5])
        raise DataError(f"no series can be scored ({len(series)} backtested, none with a usable MASE scale): {reasons}")
    per_series = pd.concat([p.per_series for p in pieces if not p.per_series.empty], ignore_index=True)
    board, skipped_models = scored_leaderboard(leaderboard(per_series, spec.horizons, criterion_of(spec)), spec.models)
    futures = [p.future_forecasts for p in pieces if p.future_forecasts is not None]
    first = pieces[0]
    return BacktestResult(
        forecasts=pd.DataFrame(), per_series=per_series, leaderboard=board,
        champion=champion(board, criterion_of(spec)),
        series=series, skipped=sorted([*skipped, *(row for p in pieces for row in p.skipped)],
                                      key=lambda row: str(row["unique_id"])),
        fallbacks=[row for p in pieces for row in p.fallbacks],
        fit_seconds=_summed(p.fit_seconds for p in pieces), predict_seconds=_summed(p.predict_seconds for p in pieces),
        seconds=max(p.seconds for p in pieces), spec=first.spec,
        future_forecasts=pd.concat(futures, ignore_index=True) if futures else None,
        scales={k: v for p in pieces for k, v in p.scales.items()},
        scale_notes={k: v for p in pieces for k, v in p.scale_notes.items()},
        unscored=unscored, skipped_models=skipped_models,
        validation_fallbacks=[row for p in pieces for row in p.validation_fallbacks],
        tuning={k: v for p in pieces for k, v in p.tuning.items()},
        ensemble_members={k: v for p in pieces for k, v in (getattr(p, "ensemble_members", None) or {}).items()},
        fitted_params={k: v for p in reversed(pieces) for k, v in p.fitted_params.items()},
        shard_results=list(names),
    )


def _summed(dicts) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for name, seconds in d.items():
            out[name] = out.get(name, 0.0) + seconds
    return out


def _plotted_forecasts(store, summary: BacktestResult, shards: Sequence[int | None]) -> pd.DataFrame:
    """The backtest forecasts of the series each model's MLflow run plots (``pick_series``), from ``shards``."""
    wanted = {uid for model in summary.spec.models
              for uid in pick_series(summary.per_series, model, summary.series, PLOT_SERIES)}
    frames = []
    for shard in shards:
        frame = store.read_frame(backtest_forecasts_name(shard))
        if not frame.empty:
            frames.append(frame[frame["unique_id"].isin(wanted)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def champion_bundles(store, result: BacktestResult, champions: dict[str, str], features: pd.DataFrame,
                     metric_of: dict[str, str], units: dict[str, str] | None = None) -> Iterator[tuple[str, object]]:
    """``(metric, ChampionBundle)`` for each metric's champion, built from the shards' results.

    One shard's result is read at a time; its pieces of every metric's champion wait on
    local disk, and one metric's champion is put together at a time, so the largest thing
    held is one metric's champion. Every bundle forecasts as the bundle built at once over
    the metric's series would.

    Args:
        result: the run's result (``evaluate_in_shards``).
        metric_of: unique_id -> metric.
    """
    units = units or {}
    # A result that holds its fitted models: evaluated at once in one process, or stored before shard results.
    if not getattr(result, "shard_results", None):
        for metric, model in champions.items():
            frame = features[features["unique_id"].isin([u for u in result.series if metric_of[u] == metric])]
            yield metric, ChampionBundle.from_result(result, model, frame, unit=units.get(metric))
        return
    with scratch_dir("champions") as tmp:
        pieces: dict[str, list[Path]] = {metric: [] for metric in champions}
        for i, name in enumerate(result.shard_results):
            shard_result = pickle.loads(store.read_bytes(name))
            by_metric: dict[str, list[str]] = {}
            for uid in shard_result.series:
                by_metric.setdefault(metric_of[uid], []).append(uid)
            for metric, model in champions.items():
                if metric not in by_metric:
                    continue
                frame = features[features["unique_id"].isin(by_metric[metric])]
                piece = ChampionBundle.from_result(shard_result, model, frame, unit=units.get(metric))
                path = Path(tmp) / f"{list(champions).index(metric)}-{i}.pkl"
                path.write_bytes(pickle.dumps(piece, protocol=pickle.HIGHEST_PROTOCOL))
                pieces[metric].append(path)
            del shard_result
        for metric, paths in pieces.items():
            if not paths:
                raise DataError(f"no shard's result holds a series of {metric}; re-run evaluate")
            ids = [uid for uid in result.series if metric_of[uid] == metric]
            frame = features[features["unique_id"].isin(ids)]
            yield metric, merge_bundles([pickle.loads(p.read_bytes()) for p in paths], result, frame,
                                        {metric: units[metric]} if metric in units else None)
            for path in paths:
                path.unlink()


def merge_bundles(bundles: Sequence, result: BacktestResult, frame: pd.DataFrame,
                  units: dict[str, str] | None = None):
    """One metric's champion from its pieces built on each shard (in shard order).

    The profile, scores and evaluation frame (``frame``: the metric's series, on which
    the previous champion is scored) are those of every series of the metric;
    a global member's network is the same in every piece (one fit per run), so one is kept.
    """
    out = copy.copy(bundles[0])
    if len(bundles) == 1:  # a pickled piece has lost its evaluation frame (kept in memory only)
        out._eval_frame = frame
        return out
    out.local_models, out.contexts, out.ensemble_weights, out.last_ds, out.fitted_as = {}, {}, {}, {}, {}
    out.global_models = dict(bundles[0].global_models)
    # the metric's ensemble members: the same in every piece (chosen over every shard)
    out.members = list(dict.fromkeys(m for piece in bundles for m in piece.members))
    for piece in bundles:
        for name, fitted in piece.global_models.items():
            out.global_models.setdefault(name, fitted)
        for attr in ("local_models", "contexts", "ensemble_weights", "last_ds", "fitted_as"):
            getattr(out, attr).update(getattr(piece, attr))
    ids = set(out.last_ds)
    out.profiles = metric_profiles(frame, out.spec, units, ids)
    scored = result.per_series[result.per_series["unique_id"].isin(ids)]
    out.set_scores(scored)
    out._eval_frame = frame[frame["unique_id"].astype(str).isin(ids)]
    return out
