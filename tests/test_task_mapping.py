"""The nightly's mapped tasks stay within ``train.max_mapped_tasks`` (and Airflow's limit) at any fleet size.

The mapping is built from the planning function and the very lists the DAG expands
(``train_tasks``, ``rightsize_tasks``), for up to a million series, without training.
"""
from __future__ import annotations

import math
import os

import pytest
from airflow_support import airflow_env, run_python

from foresight_lib import pipeline
from foresight_lib.config import ForesightConfig, load_config
from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.models import DEFAULT_MODELS, ENSEMBLE
from foresight_lib.forecasting.shards import features_name, is_global, plan_shards, split_ids, train_tasks
from foresight_lib.orchestration.dags import MAX_MAP_LENGTH
from foresight_lib.rightsizing.plan_step import rightsize_tasks
from foresight_lib.runs.storage import RunStore

FLEETS = [100, 10_000, 100_000, 1_000_000]
DEFAULTS = ForesightConfig()
MODELS = [m for m in DEFAULTS.models if m != ENSEMBLE]
GLOBAL = [m for m in MODELS if is_global(m)]
LOCAL = [m for m in MODELS if m not in GLOBAL]


def _plan(n_series: int, bound: int = DEFAULTS.train.max_mapped_tasks, models: list[str] = MODELS):
    global_models = sum(is_global(m) for m in models)
    return plan_shards(n_series, len(models) - global_models, global_models, DEFAULTS.train.shard_series, bound)


def test_the_defaults_are_those_of_the_library_and_the_file():
    assert DEFAULTS.models == DEFAULT_MODELS
    assert load_config().train == DEFAULTS.train
    assert DEFAULTS.train.max_mapped_tasks == 512 <= MAX_MAP_LENGTH
    assert LOCAL and GLOBAL, "the default models mix local and global ones"


@pytest.mark.parametrize("n_series", FLEETS)
def test_a_run_maps_at_most_the_bound_whatever_the_fleet(n_series):
    plan = _plan(n_series)
    trained = train_tasks(MODELS, plan.shards)
    walked = rightsize_tasks({"shards": plan.shards})
    assert (len(trained), len(walked)) == (plan.train_tasks, plan.rightsize_tasks)
    assert len(trained) + len(walked) == plan.mapped_tasks <= DEFAULTS.train.max_mapped_tasks
    assert max(len(trained), len(walked)) <= MAX_MAP_LENGTH
    # each local model once per shard, each global model once over every series
    for model in LOCAL:
        assert [t["shard"] for t in trained if t["model"] == model] == (
            list(range(1, plan.shards + 1)) if plan.shards > 1 else [None])
    for model in GLOBAL:
        assert [t["shard"] for t in trained if t["model"] == model] == [None]
    # shards of shard_series while they fit, then fewer and bigger ones
    wanted = math.ceil(n_series / DEFAULTS.train.shard_series)
    cap = (DEFAULTS.train.max_mapped_tasks - len(GLOBAL)) // (len(LOCAL) + 1)
    assert plan.shards == min(wanted, cap)
    sizes = [len(ids) for ids in split_ids((f"s{i:07d}" for i in range(n_series)), plan.shards)]
    assert sum(sizes) == n_series and max(sizes) - min(sizes) <= 1
    assert max(sizes) == plan.largest_shard
    if wanted <= cap:
        assert plan.largest_shard <= DEFAULTS.train.shard_series
    else:  # the bound, not shard_series, sets the size: every shard holds more
        assert min(sizes) > DEFAULTS.train.shard_series


def test_shard_sizes_at_each_fleet_size():
    """The figures of docs/scale-out.md and the README."""
    assert [(p.shards, p.largest_shard, p.mapped_tasks) for p in map(_plan, [1_000, *FLEETS[1:]])] == [
        (10, 100, 71), (73, 137, 512), (73, 1370, 512), (73, 13_699, 512)]
    assert _plan(100).shards == 1 and _plan(100).mapped_tasks == len(MODELS) + 1


def test_a_bound_one_shard_cannot_meet_is_refused_at_load_and_by_the_plan(tmp_path):
    need = len(MODELS) + 1
    assert _plan(10_000, bound=need).shards == 1
    with pytest.raises(ConfigError, match=rf"train\.max_mapped_tasks is {need - 1}.*at least {need}"):
        _plan(10_000, bound=need - 1)
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"train": {"max_mapped_tasks": need - 1}})
    assert f"train.max_mapped_tasks is {need - 1}" in str(err.value) and f"at least {need}" in str(err.value)
    # a bound that fits the file's models, and a run that asks for more models than it fits: the run is named
    path = tmp_path / "foresight.yaml"
    path.write_text("models: [naive, ensemble]\ntrain: {max_mapped_tasks: 3}\n")
    assert load_config(path).train.max_mapped_tasks == 3
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides={"models": ["naive", "ets", "lstm"]})
    assert "at least 4" in str(err.value) and "[models set by the run's parameters]" in str(err.value)


def test_a_bound_above_airflows_map_length_is_refused_saying_why():
    assert load_config(overrides={"train": {"max_mapped_tasks": MAX_MAP_LENGTH}}).train.max_mapped_tasks == 1024
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"train": {"max_mapped_tasks": MAX_MAP_LENGTH + 1}})
    assert "train.max_mapped_tasks: at most 1024" in str(err.value) and "core.max_map_length" in str(err.value)


def test_build_features_caps_the_shards_and_the_run_maps_within_the_bound(tmp_path):
    """One metric of the demo (8 series after features), 3 local models: shards of 2 series would map
    16 tasks, the bound is 12."""
    overrides = {"history_days": 3, "data_root": str(tmp_path / "data"), "models": ["naive", "seasonal_naive", "ets",
                 "ensemble"], "source": {"metrics": ["container_memory_working_set_bytes"]},
                 "train": {"shard_series": 2, "max_mapped_tasks": 12},
                 "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "artifact_location": str(tmp_path / "art")}}
    run = pipeline.extract(None, None, "2024-03-15T02:00:00", overrides=overrides, owner_pid=os.getpid())
    try:
        run = pipeline.build_features(pipeline.validate(run))
        store = RunStore(str(tmp_path / "data"), run["run_key"], attempt=run["attempt"])
        series = run["feature_series"]
        assert math.ceil(series / 2) > 3, "shards of 2 series would pass the bound"
        assert run["shards"] == 3, "the most shards whose 3 train tasks and rightsize task each fit in 12"
        sizes = [store.read_frame(features_name(i))["unique_id"].nunique() for i in range(1, 4)]
        assert sum(sizes) == series and max(sizes) - min(sizes) <= 1 and max(sizes) > 2
        mapped = pipeline.train_tasks(run) + pipeline.rightsize_tasks(run)
        assert len(mapped) == 3 * 3 + 3 <= 12
    finally:
        pipeline.release(run)


DAG_MAPPING = """
    import os
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag
    from foresight_lib.forecasting.models import GLOBAL_MODELS
    from foresight_lib.forecasting.shards import plan_shards
    from foresight_lib.runs import base_models, load_run_config

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["foresight_nightly"]
    mapped = sorted(t.task_id for t in dag.tasks if any(c.__name__ == "MappedOperator" for c in type(t).__mro__))
    cfg = load_run_config({"data_root": os.environ["MAPPING_DATA_ROOT"]})
    models = base_models(cfg)
    glob = sum(m in GLOBAL_MODELS for m in models)
    runs = []
    for n in (100, 10_000, 100_000, 1_000_000):
        plan = plan_shards(n, len(models) - glob, glob, cfg.train.shard_series, cfg.train.max_mapped_tasks)
        run = {"run_key": "2024-03-15", "overrides": {"data_root": os.environ["MAPPING_DATA_ROOT"]},
               "shards": plan.shards}
        runs.append({"series": n, "shards": plan.shards,
                     "train": len(dag.get_task("select_models").python_callable(run)),
                     "rightsize": len(dag.get_task("rightsize_shards").python_callable(run))})
    report({"mapped": mapped, "runs": runs, "bound": cfg.train.max_mapped_tasks,
            "max_map_length": conf.getint("core", "max_map_length")})
"""


def test_the_dags_own_task_functions_map_within_the_bound(tmp_path):
    """The nightly's mapped steps are train and rightsize; what their upstream tasks return fits, at any fleet."""
    env = airflow_env(tmp_path / "airflow", MAPPING_DATA_ROOT=str(tmp_path / "data"))
    env.pop("FORESIGHT_CONFIG", None)
    out = run_python(DAG_MAPPING, env, timeout=300)
    assert out["mapped"] == ["rightsize", "train"], "a new mapped step counts against train.max_mapped_tasks"
    assert out["bound"] == DEFAULTS.train.max_mapped_tasks <= out["max_map_length"] == MAX_MAP_LENGTH
    for run in out["runs"]:
        assert run["shards"] == _plan(run["series"]).shards
        assert run["train"] + run["rightsize"] <= out["bound"], run
    assert [r["train"] + r["rightsize"] for r in out["runs"]] == [_plan(n).mapped_tasks for n in FLEETS]
