"""Configuration: defaults, clear errors naming the bad key, env and per-run overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from foresight_lib.config import DEFAULT_CONFIG_PATH, REPO_ROOT, ForesightConfig, deep_merge, load_config
from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.models import DEFAULT_MODELS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("FORESIGHT_CONFIG", "FORESIGHT_DATA_ROOT", "MLFLOW_TRACKING_URI", "FORESIGHT_HOME"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "foresight.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_file_loads_with_documented_defaults():
    cfg = load_config()
    assert cfg.schedule == "0 2 * * *"
    assert cfg.source.kind == "demo"
    assert cfg.freq == "5min"
    assert cfg.horizons == ["5m", "15m", "30m"]
    assert cfg.horizon_steps == {"5m": 1, "15m": 3, "30m": 6}
    assert cfg.models == DEFAULT_MODELS
    assert (cfg.test_days, cfg.history_days, cfg.stride, cfg.levels) == (1, 14, "30m", [80, 95])
    assert cfg.source.prometheus.max_points == 11000
    assert cfg.source.prometheus.conn_id == "foresight_prometheus"
    assert cfg.validation.max_failed_share == 0.3
    assert cfg.mlflow.experiment == "foresight-nightly"
    assert cfg.rightsizing.profile == "balanced"
    # relative paths resolve against the repository root
    assert cfg.data_root == str(REPO_ROOT / "var" / "data")
    assert cfg.validation.suite_dir == str(REPO_ROOT / "include" / "gx")
    assert cfg.mlflow.tracking_uri == f"sqlite:///{REPO_ROOT / 'var' / 'mlflow' / 'mlflow.db'}"


def test_default_file_matches_model_defaults():
    """include/foresight.yaml documents the defaults; it must not drift from the code."""
    from_file = load_config().to_dict()
    from_code = ForesightConfig().to_dict()
    for key in ("schedule", "source", "freq", "horizons", "models", "test_days", "history_days", "stride",
                "levels", "features", "train", "publish", "rightsizing"):
        assert from_file[key] == from_code[key], key
    assert {k: v for k, v in from_file["validation"].items() if k != "suite_dir"} == \
        {k: v for k, v in from_code["validation"].items() if k != "suite_dir"}


def test_empty_file_gives_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.models == DEFAULT_MODELS
    assert cfg.validation.ranges["*"].min == 0


def test_unknown_keys_are_named_with_allowed_keys(tmp_path):
    path = write(tmp_path, "histroy_days: 3\nsource:\n  prometheus:\n    timeout: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "2 invalid settings" in text
    assert "histroy_days: unknown setting" in text and "history_days" in text
    assert "source.prometheus.timeout: unknown setting" in text and "timeout_s" in text
    assert str(path) in text


def test_bad_values_name_key_and_allowed_values(tmp_path):
    path = write(tmp_path, (
        "source: {format: csv, prometheus: {aggregation: node}}\n"
        "models: [naive, bogus]\nlevels: [0, 80]\nschedule: every night\n"
        "validation: {ranges: {cpu: {min: 5, max: 1}}, max_failed_share: 2}\n"
    ))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "source.format" in text and "'bitbrains'" in text and "'csv'" in text
    assert "source.prometheus.aggregation" in text and "'namespace'" in text
    assert "models: unknown model(s) ['bogus']" in text and "seasonal_naive" in text
    assert "levels:" in text
    assert "schedule:" in text and "cron" in text
    assert "validation.ranges.cpu: min (5.0) is greater than max (1.0)" in text
    assert "validation.max_failed_share" in text


@pytest.mark.parametrize("overrides, key", [
    ({"horizons": ["7m"]}, "horizons: horizon 7m is not a whole number of 5m steps"),
    ({"stride": "2m"}, "stride: stride 2m is not a whole number"),
    ({"freq": "10min"}, "horizons: horizon 5m is not a whole number of 10m steps"),
    ({"freq": "soon"}, "freq: 'soon' is not a frequency"),
    ({"source": {"kind": "files"}}, "needs source.path"),
    ({"model_params": {"prophet2": {}}}, "model_params: parameters for unknown model(s) ['prophet2']"),
    ({"features": {"gap_limit": "an hour"}}, "features.gap_limit"),
    ({"retry_delay": "2T"}, "retry_delay: '2T' is not a duration"),  # the DAG file reads it without pandas
    ({"rightsizing": {"replica_capacity": {"cpu": 0}}}, "replica_capacity must be positive"),
    ({"tuning": {"models": ["arima"]}}, "tuning.models: no search space for ['arima']; tunable models are"),
    ({"tuning": {"timeout_s": 0}}, "tuning.timeout_s"),
])
def test_cross_field_checks(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert key in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line 2, column 4"):
        load_config(write(tmp_path, "a: 1\nb: : x\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_path_resolution_order(tmp_path, monkeypatch):
    path = write(tmp_path, "history_days: 3\n")
    monkeypatch.setenv("FORESIGHT_CONFIG", str(path))
    assert load_config().history_days == 3
    other = tmp_path / "other.yaml"
    other.write_text("history_days: 5\n", encoding="utf-8")
    assert load_config(other).history_days == 5  # an explicit path wins over the env variable
    monkeypatch.delenv("FORESIGHT_CONFIG")
    assert load_config().history_days == 14
    assert DEFAULT_CONFIG_PATH.is_file()


def test_env_overrides_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FORESIGHT_DATA_ROOT", "s3://bucket/foresight")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("FORESIGHT_HOME", str(tmp_path))
    cfg = load_config()
    assert cfg.data_root == "s3://bucket/foresight"
    assert cfg.mlflow.tracking_uri == "http://mlflow:5000"
    assert cfg.mlflow.artifact_location == str(tmp_path / "var" / "mlflow" / "artifacts")
    assert cfg.validation.suite_dir == str(tmp_path / "include" / "gx")
    monkeypatch.setenv("FORESIGHT_DATA_ROOT", "data")
    assert load_config().data_root == str(tmp_path / "data")


def test_run_overrides_win_and_merge_deeply(monkeypatch):
    monkeypatch.setenv("FORESIGHT_DATA_ROOT", "/srv/env-root")
    cfg = load_config(overrides={
        "metrics": ["container_cpu_usage_seconds_total"], "models": ["naive", "ets", "naive"],
        "horizons": ["30m", "5m"], "data_root": "/srv/run-root",
        "source": {"prometheus": {"retries": 1}}, "validation": {"min_completeness": 0.5},
    })
    assert cfg.source.metrics == ["container_cpu_usage_seconds_total"]
    assert cfg.source.kind == "demo"  # siblings of an overridden key are kept
    assert cfg.source.prometheus.retries == 1 and cfg.source.prometheus.max_points == 11000
    assert cfg.models == ["naive", "ets"]
    assert cfg.horizons == ["5m", "30m"]
    assert cfg.data_root == "/srv/run-root"
    assert cfg.validation.min_completeness == 0.5 and cfg.validation.max_failed_share == 0.3
    with pytest.raises(ConfigError, match="models"):
        load_config(overrides={"models": []})


def test_to_dict_and_params_are_flat_text():
    cfg = load_config(overrides={"model_params": {"arima": {"season": 288}}})
    nested = cfg.to_dict()
    assert nested["source"]["prometheus"]["max_points"] == 11000
    params = cfg.to_params()
    assert params["models"] == ",".join(DEFAULT_MODELS)
    assert params["model_params.arima.season"] == "288"
    assert params["validation.ranges.*.min"] == "0.0"
    assert params["publish.pushgateway_url"] == ""
    assert all(isinstance(v, str) for v in params.values())


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": [1]}, "d": 1}
    merged = deep_merge(base, {"a": {"b": 2}, "e": 3})
    assert merged == {"a": {"b": 2, "c": [1]}, "d": 1, "e": 3}
    assert base == {"a": {"b": 1, "c": [1]}, "d": 1}


def test_validation_guards_have_defaults_and_reject_bad_values(tmp_path):
    cfg = load_config()
    v = cfg.validation
    assert (v.max_non_finite_share, v.max_abs_value, v.min_relative_std) == (0.0, 1e15, 1e-6)
    # every default rule is bounded on both sides or falls back to max_abs_value, so 1e300 always fails
    assert all(rule.min == 0 for rule in v.ranges.values())
    assert v.ranges["*_cores"].max == 1e6 and v.ranges["*_bytes"].max == 1e16 and v.ranges["*"].max is None
    path = write(tmp_path, (
        "validation:\n  max_abs_value: .inf\n  min_relative_std: -1\n  max_non_finite_share: 2\n"
        "  ranges: {cpu: {max: .nan}, mem: {min: -.inf}}\n"
    ))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "validation.max_abs_value: must be a finite number" in text
    assert "validation.min_relative_std" in text and "validation.max_non_finite_share" in text
    assert "validation.ranges.cpu.max: a bound must be a finite number" in text
    assert "validation.ranges.mem.min: a bound must be a finite number" in text
    cfg = load_config(overrides={"validation": {"max_abs_value": 1e18, "min_relative_std": 0}})
    assert cfg.validation.max_abs_value == 1e18 and cfg.validation.min_relative_std == 0


def test_a_bad_setting_from_the_run_is_blamed_on_the_run_not_the_file():
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"history_days": -3})
    message = str(caught.value)
    assert message.startswith("the run's parameters: 1 invalid setting")
    assert "history_days: Input should be greater than or equal to 1 (got -3) [set by the run's parameters]" in message
    assert "foresight.yaml" not in message


def test_a_freq_from_the_run_is_named_when_the_horizons_no_longer_fit_it():
    """``freq: 1h`` from the run's parameters: the horizons and stride of the file fail, naming freq and the run."""
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"freq": "1h"})
    message = str(caught.value)
    assert message.startswith("the run's parameters: 2 invalid settings")
    assert "horizons: horizon 5m is not a whole number of 1h steps" in message
    assert "(freq is 1h) [freq set by the run's parameters]" in message
    assert "foresight.yaml" not in message


def test_a_horizon_longer_than_the_held_out_part_is_refused_at_load():
    """A ``30d`` horizon is a config error before any work, not a failure after extract and features."""
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"horizons": ["30m", "30d"]})
    message = str(caught.value)
    assert "the longest of horizons (30d) is longer than the held-out part, test_days (1 day(s))" in message
    assert "[horizons set by the run's parameters]" in message
    assert load_config(overrides={"horizons": ["1d"]}).horizons == ["1d"]


def test_grid_and_freshness_settings(tmp_path):
    cfg = load_config()
    assert cfg.features.grid_tolerance == 0.1
    assert cfg.validation.max_staleness is None and cfg.validation.max_stale_share == 0.5
    assert load_config(overrides={"validation": {"max_staleness": "6h"}}).validation.max_staleness == "6h"
    for bad, where in (({"features": {"grid_tolerance": 0.5}}, "features.grid_tolerance"),
                       ({"validation": {"max_staleness": "soon"}}, "validation.max_staleness"),
                       ({"validation": {"max_stale_share": 2}}, "validation.max_stale_share")):
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            load_config(overrides=bad)


def test_source_format_offers_exactly_the_formats_the_loaders_read():
    from typing import get_args

    from foresight_lib.config import SourceConfig
    from foresight_lib.sources.loaders import FORMATS

    assert get_args(SourceConfig.model_fields["format"].annotation) == FORMATS, (
        "a format added to foresight_lib/sources/loaders.py (_LOADERS) is also named in SourceConfig.format")
