"""
### Foresight scaling plan

Between two nightly runs, every half hour (`rightsizing.plan_schedule`): **extract** the
latest metrics → **validate** them (the nightly's Great Expectations suites) → build
**features** → **size the next windows** (`rightsizing.plan_windows` windows of 30
minutes, each from a forecast of its peak and a factor learnt from past windows; no
training) → **publish** them to `<data_root>/latest/scaling_plan.parquet`.

The Prometheus gauges `foresight_recommendation{kind="window"}` then show this plan
instead of the nightly's once it reaches further. The nightly's forecasts, daily sizes
and champion are left as they are; a failed run leaves the previous plan in place.

Run folders: `<data_root>/plans/<date>` (the newest `rightsizing.plan_keep_runs` are kept).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from foresight_dags.common import (
    build_features,
    default_args,
    metrics_param,
    prometheus_connection,
    release,
    section,
    validate,
)
from foresight_lib.orchestration.dags import SCALING_PLAN_DAG

RIGHTSIZING = section("rightsizing")


@dag(
    dag_id=SCALING_PLAN_DAG,
    schedule=RIGHTSIZING.get("plan_schedule", "*/30 * * * *"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=25),
    doc_md=__doc__,
    tags=["foresight", "rightsizing", "scaling"],
    # A retry must land before the next half hour's run makes it moot.
    default_args=default_args(max_retry_delay=timedelta(minutes=5)),
    params={
        "metrics": metrics_param("Metrics to plan for"),
        "overrides": Param(
            {}, type="object", title="Other settings",
            description="Any other setting of include/foresight.yaml, e.g. {\"rightsizing\": {\"plan_windows\": 2}}.",
        ),
    },
)
def foresight_scaling_plan():
    @task
    def extract(params=None, run_id=None, data_interval_end=None, logical_date=None, dag_run=None) -> dict:
        from foresight_lib import scaling_plan

        return scaling_plan.extract(
            run_id=run_id, data_interval_end=data_interval_end or logical_date or dag_run.run_after,
            params=dict(params or {}), connection=prometheus_connection,
        )

    @task
    def size_windows(run: dict) -> dict:
        from foresight_lib import scaling_plan

        return scaling_plan.size_windows(run)

    @task
    def publish(run: dict) -> dict:
        from foresight_lib import scaling_plan

        return scaling_plan.publish(run)

    run = extract()
    publish(size_windows(build_features(validate(run)))) >> release(run)


scaling_plan = foresight_scaling_plan()
