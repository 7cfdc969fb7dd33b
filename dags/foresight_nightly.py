"""
### Foresight nightly forecasting

Every night: **extract** the metrics → **validate** them (Great Expectations; failing
series are quarantined) → build **features** (counters to rates, resampling, gap
filling) → **train** every model (rolling-origin backtest; one mapped task per model and
shard of `train.shard_series` series, bigger shards where more tasks would pass
`train.max_mapped_tasks`; the global LSTM one task over every series)
→ **evaluate** (leaderboard, champion by mean MASE); beside training, **rightsize** walks
each shard's series for the rightsizing plan → **publish** (MLflow parent and
child runs, the champion registered as `foresight-<metric>`, forecasts written to the
run folder and then to `latest`).

**Trigger with parameters** to choose metrics, models and horizons; `overrides`
takes any other setting of `include/foresight.yaml` (e.g. `{"history_days": 3}`).
A backfill of a past date only sees data up to that date, and a re-run of a date
replaces exactly that date's run folder and MLflow run, once it has succeeded; two runs
of one date never run at once (the second fails naming the first). A failed run leaves
the previous run folder, champion and published forecasts in place. **Publish**: only
the newest run with the configured models, metrics and horizons replaces the published
forecasts and moves the champions (`auto`); a backfill of an older date or an ad-hoc
run stays in its run folder and MLflow unless triggered with `always`. The teardown
task **release** runs however the run ended: it finishes or undoes a publish that was
killed (so the champion aliases agree with `latest/` again) and frees the date's lock.

**Backfill with parameters.** Airflow's Backfill dialog sends its Run Parameters only
when *Override parameters on existing runs* is checked; unchecked, every run of the
backfill uses the configured metrics and models. From the command line:
`airflow backfill create --dag-id foresight_nightly --from-date 2024-03-18 --to-date
2024-03-19 --dag-run-conf '{"models": ["naive", "arima"]}'`. *Unpause on trigger* (checked
by default) also lets the schedule start the latest nightly run; unchecked, a run of the
paused DAG waits in Queued until the DAG is unpaused (the Foresight dashboard says so).

Results: the run folder (`<data_root>/runs/<date>`), the MLflow UI (experiment
`foresight-nightly`, parent runs named `<date> <time> nightly|backfill|ad hoc`) and
`<data_root>/latest`.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from foresight_dags.common import (
    SETTINGS,
    build_features,
    default_args,
    metrics_param,
    prometheus_connection,
    release,
    section,
    validate,
)
from foresight_lib.forecasting.models import ALL_MODELS
from foresight_lib.orchestration.dags import NIGHTLY_DAG

SOURCE = section("source")
TRAIN = section("train")
TRAIN_AT_ONCE = TRAIN.get("parallel_tasks") if isinstance(TRAIN.get("parallel_tasks"), int) else 4
"""Train tasks of one run side by side (each takes that share of the CPUs); a bad value is the config check's."""
TRAIN_LABEL = ("{{ task.op_kwargs['model'] }}{% if task.op_kwargs['shard'] %} · shard "
               "{{ task.op_kwargs['shard'] }}/{{ task.op_kwargs['shards'] }}{% endif %}")
"""A train task in the UI: ``arima · shard 3/8``, or the model alone when it runs over every series."""
RIGHTSIZE_LABEL = ("{% if task.op_kwargs['shard'] %}shard {{ task.op_kwargs['shard'] }}/"
                   "{{ task.op_kwargs['shards'] }}{% else %}every series{% endif %}")


@dag(
    dag_id=NIGHTLY_DAG,
    schedule=SETTINGS.get("schedule", "0 2 * * *"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["foresight", "forecasting", "mlflow"],
    default_args=default_args(),
    params={
        "metrics": metrics_param("Metrics to forecast"),
        "models": Param(
            list(SETTINGS.get("models") or ["naive", "seasonal_naive", "ets", "ensemble"]), type="array",
            items={"type": "string", "enum": ALL_MODELS}, examples=ALL_MODELS, title="Models",
            description="Models to train and compare; the ensemble combines the others.",
        ),
        "horizons": Param(
            list(SETTINGS.get("horizons") or ["5m", "15m", "30m"]), type="array", items={"type": "string"},
            title="Horizons", description="Forecast horizons as durations (5m, 15m, 30m, 1h).",
        ),
        "overrides": Param(
            {}, type="object", title="Other settings",
            description="Any other setting of include/foresight.yaml, e.g. {\"history_days\": 3}.",
        ),
        "publish": Param(
            "auto", type="string", enum=["auto", "always", "never"], title="Publish",
            description="auto: replace the published forecasts and champions only if this is the newest run with "
                        "the configured models, metrics and horizons (a backfill of an older date or an ad-hoc "
                        "run stays in its run folder and MLflow); always / never: for this run.",
        ),
    },
)
def foresight_nightly():
    @task
    def extract(params=None, run_id=None, data_interval_start=None, data_interval_end=None,
                logical_date=None, dag_run=None) -> dict:
        from foresight_lib import pipeline

        return pipeline.extract(
            run_id=run_id, data_interval_start=data_interval_start,
            data_interval_end=data_interval_end or logical_date or dag_run.run_after,
            params=dict(params or {}), connection=prometheus_connection,
        )

    @task
    def select_models(run: dict) -> list[dict]:
        from foresight_lib import pipeline

        return pipeline.train_tasks(run)

    @task(map_index_template=TRAIN_LABEL, max_active_tis_per_dagrun=max(1, TRAIN_AT_ONCE))
    def train(run: dict, model: str, shard: int | None = None, shards: int = 1) -> dict:
        from foresight_lib import pipeline

        return pipeline.train(run, model, shard, shards)

    @task
    def rightsize_shards(run: dict) -> list[dict]:
        from foresight_lib import pipeline

        return pipeline.rightsize_tasks(run)

    @task(map_index_template=RIGHTSIZE_LABEL)
    def rightsize(run: dict, shard: int | None = None, shards: int = 1) -> dict:
        from foresight_lib import pipeline

        return pipeline.rightsize(run, shard, shards)

    @task
    def evaluate(run: dict, trained: list[dict]) -> dict:
        from foresight_lib import pipeline

        return pipeline.evaluate(run, list(trained))

    @task
    def publish(run: dict) -> dict:
        from foresight_lib import pipeline

        return pipeline.publish(run)

    run = extract()
    features = build_features(validate(run))
    trained = train.partial(run=features).expand_kwargs(select_models(features))
    walked = rightsize.partial(run=features).expand_kwargs(rightsize_shards(features))
    published = publish(evaluate(features, trained))
    walked >> published
    published >> release(run)


nightly = foresight_nightly()
