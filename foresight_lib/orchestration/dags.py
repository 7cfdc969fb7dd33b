"""The ids of Foresight's DAGs: the DAG files, the operations API, the dashboard and the tests name them from here."""
from __future__ import annotations

NIGHTLY_DAG = "foresight_nightly"
"""The nightly DAG: extract, validate, features, train, evaluate, publish."""
SCALING_PLAN_DAG = "foresight_scaling_plan"
"""The DAG that sets the next windows' predictive scaling plan."""
MAX_MAP_LENGTH = 1024
"""Airflow's default ``core.max_map_length``: the most instances one mapped task may expand into (more
fail the task); ``train.max_mapped_tasks`` may not go above it."""
