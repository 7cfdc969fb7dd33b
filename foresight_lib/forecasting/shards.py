"""Series shards of the train step: which series each mapped task backtests, and how the parts merge.

With thousands of series, one task per model would hold and backtest every series. The
features step splits the sorted series ids into balanced shards of at most
``train.shard_series`` series and the DAG maps ``train`` over model × shard. A local model
sees one series at a time, so its forecasts on a shard are those it gives in one task over
every series, and ``merge_parts`` puts a model's shards back together before the evaluation.

The global LSTM learns one network across the series, so it is not sharded: one fit per
run over every series, in a task of its own. Fitted per shard, what it learns (and so its
accuracy) would change with the shard size: at the default of 100 series the change was
within the seed's own spread, for one fit per shard (``benchmarks/lstm_shards.py``).

A part is ``backtests/<model>.pkl`` when the model runs as one task (the LSTM always,
every model when there is one shard) and ``backtests/<model>/shard-<i>.pkl`` for shard
``i`` of ``n`` (1-based, as the Airflow UI shows it: ``arima · shard 3/8``).

A run maps ``local models × shards + global models`` train tasks and one rightsize task per
shard. So that this stays within ``train.max_mapped_tasks`` (and Airflow's
``core.max_map_length``) at any fleet size, ``plan_shards`` caps the shard count: past the
cap the shards grow instead of multiplying.
"""
from __future__ import annotations

import inspect
import math
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest import BacktestPart
from foresight_lib.forecasting.backtest_runner import RunOutcome, merge_outcome
from foresight_lib.forecasting.models import model_class
from foresight_lib.forecasting.models.base import GlobalForecaster

__all__ = ["ShardPlan", "empty_reason", "features_name", "is_global", "load_parts", "merge_parts", "part_name",
           "plan_shards", "require_parts", "shard_count", "split_ids", "task_label", "train_tasks", "with_threads"]


def shard_count(n_series: int, shard_series: int | None) -> int:
    """How many shards ``n_series`` series make at ``shard_series`` each (0 or None: no sharding, one)."""
    if not shard_series or n_series <= shard_series:
        return 1
    return math.ceil(n_series / shard_series)


@dataclass(frozen=True)
class ShardPlan:
    """How a run's series are cut into shards, and the mapped tasks that makes."""

    shards: int
    series: int
    """Series of the run."""
    largest_shard: int
    """Series of the largest shard (``split_ids`` makes them differ by at most one)."""
    train_tasks: int
    rightsize_tasks: int

    @property
    def mapped_tasks(self) -> int:
        """Every mapped task instance of the run (train and rightsize)."""
        return self.train_tasks + self.rightsize_tasks


def plan_shards(n_series: int, local_models: int, global_models: int, shard_series: int | None,
                max_mapped_tasks: int) -> ShardPlan:
    """The shard count of a run: ``ceil(n_series / shard_series)``, capped so that its mapped tasks fit.

    The run maps ``local_models × shards + global_models`` train tasks and ``shards``
    rightsize tasks; the shard count is the smaller of ``shard_count`` and the largest count
    whose tasks stay within ``max_mapped_tasks``. Past that cap a bigger fleet makes bigger
    shards, not more of them.

    Raises:
        ConfigError: even one shard maps more than ``max_mapped_tasks`` tasks (too many models).
    """
    need = local_models + global_models + 1
    if max_mapped_tasks < need:
        raise ConfigError(
            f"train.max_mapped_tasks is {max_mapped_tasks}, but even with one shard the run maps {need} tasks "
            f"({local_models + global_models} train tasks, one per model but the ensemble, and one rightsize task); "
            f"raise train.max_mapped_tasks to at least {need} or configure fewer models")
    cap = (max_mapped_tasks - global_models) // (local_models + 1)
    shards = max(1, min(shard_count(n_series, shard_series), cap))
    return ShardPlan(shards=shards, series=n_series, largest_shard=math.ceil(n_series / shards),
                     train_tasks=local_models * shards + global_models, rightsize_tasks=shards)


def split_ids(unique_ids: Iterable, shards: int) -> list[list[str]]:
    """The sorted, distinct ids cut into ``shards`` consecutive runs whose sizes differ by at most one.

    Consecutive runs of sorted ids put back in shard order give the sorted ids again: the
    order of the series in a backtest over the whole frame (``split_series`` sorts them).
    """
    ids = sorted({str(uid) for uid in unique_ids})
    if shards < 1:
        raise ConfigError(f"the series must be split into at least one shard, got {shards}")
    size, extra = divmod(len(ids), shards)
    out, start = [], 0
    for i in range(shards):
        end = start + size + (1 if i < extra else 0)
        out.append(ids[start:end])
        start = end
    return out


def features_name(shard: int) -> str:
    """The features of shard ``shard`` in the run folder (the full ``features`` stays beside them)."""
    return f"features/shard-{shard}"


def part_name(model: str, shard: int | None = None) -> str:
    """Where a train task stores its backtest part."""
    return f"backtests/{model}.pkl" if shard is None else f"backtests/{model}/shard-{shard}.pkl"


def is_global(model: str) -> bool:
    """Whether ``model`` is fitted once across every series (so it is never sharded)."""
    return issubclass(model_class(model), GlobalForecaster)


def train_tasks(models: Sequence[str], shards: int) -> list[dict]:
    """The keyword arguments of every train task: local models × shards, each global model once.

    ``shard`` is None for a task over every series (a global model, or a single shard).
    """
    tasks = []
    for model in models:
        if shards <= 1 or is_global(model):
            tasks.append({"model": model, "shard": None, "shards": 1})
        else:
            tasks.extend({"model": model, "shard": i, "shards": shards} for i in range(1, shards + 1))
    return tasks


def with_threads(model_params: dict[str, dict], model: str, threads: int) -> dict[str, dict]:
    """``model_params`` with a global model's thread count set to ``threads`` unless configured.

    The LSTM sets torch's threads itself (one per core by default), over any limit the task
    set before; local models run in worker processes of one thread each.
    """
    if not is_global(model) or "n_threads" not in inspect.signature(model_class(model)).parameters:
        return model_params
    return {**model_params, model: {"n_threads": threads, **model_params.get(model, {})}}


def task_label(task: dict) -> str:
    """A train task as the Airflow UI names it: ``arima · shard 3/8``, or just the model."""
    if task.get("shard") is None:
        return task["model"]
    return f"{task['model']} · shard {task['shard']}/{task['shards']}"


def merge_parts(parts: Sequence[BacktestPart]) -> BacktestPart:
    """One model's parts as the part of one task over every series, its series sorted by id.

    Every model's merged part, sharded or not, so lists the series in the same order (the
    order of ``split_series`` over the whole frame), as ``finish_backtest`` requires.
    Outcomes and validation outcomes are merged, skipped series concatenated, and the
    seconds summed (the work done, not the time the shards took side by side).
    """
    outcome = RunOutcome()
    validation = None
    for part in parts:
        merge_outcome(outcome, part.outcome)
        if part.validation is not None:
            validation = validation or RunOutcome()
            merge_outcome(validation, part.validation)
    return BacktestPart(
        models=list(parts[0].models),
        splits=sorted((s for part in parts for s in part.splits), key=lambda s: s.unique_id),
        skipped=sorted((row for part in parts for row in part.skipped), key=lambda row: str(row["unique_id"])),
        outcome=outcome, validation=validation,
        seconds=sum(part.seconds for part in parts),
        model_params={k: v for part in parts for k, v in (getattr(part, "model_params", None) or {}).items()},
        tuning={k: v for part in parts for k, v in (getattr(part, "tuning", None) or {}).items()},
    )


def empty_reason(part: BacktestPart) -> str:
    """Why a shard's part holds no series: how many were skipped and the first reasons."""
    reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in part.skipped[:3])
    return f"every series of the shard was skipped ({len(part.skipped)}): {reasons}"


def require_parts(store, models: Sequence[str], shards: int, run_key: str) -> list[dict]:
    """The run's train tasks, once every one has stored its part.

    Raises:
        ConfigError: a train task's part is missing (named by model and shard).
    """
    planned = train_tasks(models, shards)
    missing = [t for t in planned if not store.exists(part_name(t["model"], t["shard"]))]
    if missing:
        named = ", ".join(f"{task_label(t)} ({part_name(t['model'], t['shard'])})" for t in missing)
        raise ConfigError(f"no backtest for {named} in run {run_key}; run their train tasks first")
    return planned


def load_parts(store, models: Sequence[str], shards: int, run_key: str) -> tuple[list[BacktestPart], list[dict]]:
    """Every model's part from a run folder, its shards merged, and the shards that had no series left.

    Every merged part lists the series sorted by id (``merge_parts``), the order
    ``finish_backtest`` requires to be the same in every part.

    Raises:
        ConfigError: a train task's part is missing (named by model and shard).
        DataError: no series at all could be backtested.
    """
    planned = require_parts(store, models, shards, run_key)
    parts, skipped_shards = [], []
    for model in models:
        shard_parts = []
        for task in (t for t in planned if t["model"] == model):
            part = pickle.loads(store.read_bytes(part_name(model, task["shard"])))
            if not part.splits and task["shard"] is not None:
                skipped_shards.append({"model": model, "shard": task["shard"], "shards": task["shards"],
                                       "series": len(part.skipped), "reason": empty_reason(part)})
            shard_parts.append(part)
        parts.append(merge_parts(shard_parts))
    if not parts[0].splits:
        skipped = parts[0].skipped
        reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in skipped[:5])
        raise DataError(f"no series can be backtested ({len(skipped)} skipped): {reasons}")
    return parts, skipped_shards
