"""The Foresight configuration: one YAML file, checked, with environment and per-run overrides.

Precedence, lowest first: the model defaults below, the YAML file, environment variables
(``FORESIGHT_DATA_ROOT``, ``MLFLOW_TRACKING_URI``), then ``overrides`` (the parameters of a
DAG run). Relative paths are resolved against the project home: ``FORESIGHT_HOME`` if set,
else the repository root.
"""
from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from foresight_lib.durations import duration_seconds
from foresight_lib.errors import ConfigError, ForesightError
from foresight_lib.forecasting.models import (
    ALL_MODELS,
    DEFAULT_MODELS,
    ENSEMBLE,
    TUNABLE_MODELS,
    check_model_names,
)
from foresight_lib.horizons import format_duration, horizon_steps, parse_duration, parse_horizons, to_timedelta
from foresight_lib.orchestration.dags import MAX_MAP_LENGTH

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_PATH = REPO_ROOT / "include" / "foresight.yaml"
PROFILES = ("cost", "balanced", "performance")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")
_CRON_PRESETS = {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly",
                 "@annually", "@midnight"}
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def _checked(check, value: str) -> str:
    """``value`` when ``check(value)`` accepts it; its ``ForesightError`` as a validation error otherwise."""
    try:
        check(value)
    except ForesightError as exc:
        raise _as_error(exc) from None
    return value


def _check_cron(value: str | None) -> str | None:
    """A DAG schedule: a cron expression, a preset, or None (manual runs only)."""
    if value is None or value.strip() in _CRON_PRESETS:
        return value
    fields = value.split()
    if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(f"'{value}' is not a cron expression; use 5 fields like '0 2 * * *' or a preset "
                         f"like @daily, or null for manual runs only")
    return value


def foresight_home() -> Path:
    """The folder relative paths in the config are resolved against."""
    home = os.environ.get("FORESIGHT_HOME")
    return Path(home).expanduser().resolve() if home else REPO_ROOT


def resolve_path(value: str, home: Path | None = None) -> str:
    """An absolute local path, or ``value`` unchanged when it is a URI (``s3://``, ``http://``)."""
    if _URI_SCHEME.match(value):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (home or foresight_home()) / path)


def resolve_tracking_uri(uri: str, home: Path | None = None) -> str:
    """MLflow tracking URI with a relative ``sqlite:///`` file or plain folder made absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + resolve_path(uri[len("sqlite:///"):], home)
    if uri.startswith("file:") and not uri.startswith("file:///"):
        return Path(resolve_path(uri[len("file:"):], home)).as_uri()
    return resolve_path(uri, home)


def _as_error(exc: ForesightError) -> ValueError:
    return ValueError(str(exc))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrometheusConfig(_Section):
    """Where and how to query Prometheus' HTTP API (``query_range``)."""

    url: str | None = None
    conn_id: str = "foresight_prometheus"
    queries: dict[str, str] = Field(default_factory=dict)
    aggregation: Literal["container", "pod", "namespace"] = "container"
    labels: dict[str, str | list[str]] = Field(default_factory=dict)
    """Equality filters added to every query's selector (label -> value or values), escaped."""
    timeout_s: float = Field(30.0, gt=0)
    max_points: int = Field(11000, gt=0, le=11000)
    retries: int = Field(3, ge=0, le=20)


class SourceConfig(_Section):
    """Where the metrics come from."""

    kind: Literal["demo", "files", "prometheus"] = "demo"
    path: str | None = None
    format: Literal["long", "nab", "bitbrains", "alibaba2018", "alibaba_genai"] = "long"
    metrics: list[str] = Field(default_factory=list)
    replay: bool = False
    seed: int = Field(0, ge=0)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)

    @model_validator(mode="after")
    def _path_for_files(self) -> SourceConfig:
        if self.kind == "files" and not self.path:
            raise ValueError("source.kind 'files' needs source.path (a file, folder or s3:// URI)")
        return self


class FeaturesConfig(_Section):
    gap_limit: str = "1h"
    max_filled_share: float = Field(0.2, ge=0, le=1)
    grid_tolerance: float = Field(0.1, ge=0, lt=0.5)
    """Share of the step before a grid mark that counts for that mark (``foresight_lib.quality.grid``);
    validation judges completeness on the same assignment."""

    @field_validator("gap_limit")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            return format_duration(parse_duration(value))
        except ForesightError as exc:
            raise _as_error(exc) from None


class TrainConfig(_Section):
    """How the train step is split into mapped tasks (``foresight_lib.forecasting.shards``)."""

    shard_series: int | None = Field(100, ge=0)
    """Series per shard of a local model's train task; 0 or null: one task per model."""
    parallel_tasks: int = Field(4, ge=1, le=1024)
    """Train tasks of one run that may run at once; each limits its threads to its share of the CPUs."""
    max_mapped_tasks: int = Field(512, ge=1)
    """Most mapped task instances of one run (train and rightsize together): past it the shards grow
    instead of multiplying (``forecasting.shards.plan_shards``); at most Airflow's ``core.max_map_length``."""

    @field_validator("max_mapped_tasks")
    @classmethod
    def _within_airflow(cls, value: int) -> int:
        if value > MAX_MAP_LENGTH:
            raise ValueError(f"at most {MAX_MAP_LENGTH}, got {value}: Airflow's default core.max_map_length fails a "
                             f"mapped task of more than {MAX_MAP_LENGTH} instances, and hundreds of mapped instances "
                             "per run already slow the scheduler")
        return value


class TuningConfig(_Section):
    """Automatic tuning of the models with a search space, on the validation split only
    (``foresight_lib.forecasting.tuning``); tuned parameters are reused until the next re-tune."""

    enabled: bool = False
    models: list[str] = Field(default_factory=lambda: list(TUNABLE_MODELS))
    """Models to tune when they are among the run's models."""
    trials: int = Field(20, ge=0, le=10_000)
    """Most Optuna trials per tuning (the base parameters are scored first, not counted)."""
    timeout_s: float = Field(1800.0, gt=0)
    """Time budget of one model's tuning, the base parameters' scoring included."""
    every_days: float = Field(7.0, gt=0)
    """Re-tune a model when its stored parameters are this old."""
    seed: int = 0

    @field_validator("models")
    @classmethod
    def _tunable(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if m not in TUNABLE_MODELS]
        if bad:
            raise ValueError(f"no search space for {bad}; tunable models are {TUNABLE_MODELS}")
        return value


class RangeConfig(_Section):
    """Allowed values of one metric; ``mostly`` is the share of a series' rows that must be in range.

    A bound left out is open on that side, except that ``validation.max_abs_value`` always
    caps the magnitude, so that no metric accepts absurd values such as 1e300.
    """

    min: float | None = None
    max: float | None = None
    mostly: float = Field(1.0, gt=0, le=1)

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"a bound must be a finite number, got {value}; leave it out for no explicit bound")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RangeConfig:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


DEFAULT_MAX_ABS_VALUE = 1e15
"""Largest magnitude a value may have where no range rule sets a bound (``validation.max_abs_value``)."""


def _default_ranges() -> dict[str, RangeConfig]:
    """The ranges of include/foresight.yaml (where each limit is explained)."""
    return {
        "*cpu_utilization*": RangeConfig(min=0, max=100, mostly=0.99),
        "*cpu*percent*": RangeConfig(min=0, max=1e5),
        "*_percent": RangeConfig(min=0, max=100, mostly=0.99),
        "*_ratio": RangeConfig(min=0, max=1, mostly=0.99),
        "*_total": RangeConfig(min=0, max=1.9e19),
        "*_cores": RangeConfig(min=0, max=1e6),
        "*_mhz": RangeConfig(min=0, max=1e10),
        "*bytes_per_second": RangeConfig(min=0, max=1e14),
        "*_kbps": RangeConfig(min=0, max=1e11),
        "*_bytes": RangeConfig(min=0, max=1e16),
        "*_kb": RangeConfig(min=0, max=1e13),
        "*": RangeConfig(min=0),
    }


class ValidationConfig(_Section):
    """Data validation thresholds (Great Expectations suites in ``suite_dir``)."""

    max_failed_share: float = Field(0.3, ge=0, le=1)
    min_completeness: float = Field(0.8, ge=0, le=1)
    max_null_share: float = Field(0.2, ge=0, le=1)
    max_non_finite_share: float = Field(0.0, ge=0, le=1)
    """Share of +inf/-inf values a series may have; tolerated ones become NaN (0: any quarantines it)."""
    max_abs_value: float = Field(DEFAULT_MAX_ABS_VALUE, gt=0)
    """Absurd magnitude: any value beyond it quarantines its series, unless its range rule allows more;
    also the bound of a metric whose rule has no ``max`` (or ``min``)."""
    min_relative_std: float = Field(1e-6, ge=0)
    """A series whose standard deviation is at most this share of its mean absolute value is
    quarantined as constant (nothing to forecast, MASE undefined); 0: exactly constant only."""
    ranges: dict[str, RangeConfig] = Field(default_factory=_default_ranges)
    suite_dir: str = "include/gx"
    chunk_rows: int = Field(2_000_000, ge=1)
    """The suites run on chunks of whole series of about this many rows, so validation's
    memory stays that of one chunk however many series there are; the outcome is the same."""
    max_staleness: str | None = None
    """A series whose last point is older than this at the run's data interval end is quarantined
    as stale; null: three steps of the series or 15 minutes, whichever is longer."""
    max_stale_share: float = Field(0.5, ge=0, le=1)
    """The run fails, before training, when more than this share of series is stale."""

    @field_validator("max_staleness")
    @classmethod
    def _staleness(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return format_duration(parse_duration(value))
        except ForesightError as exc:
            raise _as_error(exc) from None

    @field_validator("max_abs_value", "min_relative_std")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///var/mlflow/mlflow.db"
    artifact_location: str = "var/mlflow/artifacts"
    experiment: str = Field("foresight-nightly", min_length=1)
    model_name_prefix: str = "foresight-"
    check_timeout_s: float = Field(10.0, gt=0, le=300)
    """Seconds the tracking store may take to answer the check at extract (fail fast, before training)."""
    http_timeout_s: int = Field(30, ge=1, le=600)
    """Seconds MLflow's HTTP client waits per try on a tracking server (``MLFLOW_HTTP_REQUEST_TIMEOUT``)."""
    http_max_retries: int = Field(2, ge=0, le=10)
    """Retries of a failed request to a tracking server (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``)."""


class PublishConfig(_Section):
    pushgateway_url: str | None = None
    forecast_horizon_steps: int | None = Field(None, ge=1)
    exposition_models: Literal["champion", "all"] = "champion"
    """Whose forecasts ``/foresight/metrics`` exposes: each metric's champion, or every model (a series per
    model x horizon x value type: mind the scrape's cardinality)."""
    exposition_max_series: int | None = Field(10_000, ge=1)
    """The most series ``/foresight/metrics`` exposes (the first by id, with their actuals and recommendations);
    ``foresight_exposition_left_out`` counts the rest; null: every series (see docs/prometheus.md)."""
    latest: Literal["auto", "always", "never"] = "auto"
    """Whether a run moves ``latest/`` and the champion aliases: ``auto`` only when it is the newest
    run with the configured models; ``always`` / ``never`` for one run (the DAG's ``publish`` parameter)."""
    lock_timeout: str = "12h"
    """After how long a run's lock of its date is taken over by another run (its holder presumed dead)."""
    wait: str = "10m"
    """How long a publish waits for another publish under the same data root to end."""
    keep_failed_attempts: str = "7d"
    """How long the folder of a failed attempt is kept (for a look) when its date is not run again."""

    @field_validator("lock_timeout", "wait", "keep_failed_attempts")
    @classmethod
    def _duration(cls, value: str) -> str:
        return _checked(duration_seconds, value)


class ChampionConfig(_Section):
    """The one champion rule (``foresight_lib.forecasting.metrics.ChampionCriterion``)."""

    criterion: str = "mean_mase"
    """How a model is scored over the horizons; lower wins (one of ``metrics.CRITERIA``)."""
    horizon_weights: dict[str, float] = Field(default_factory=dict)
    """horizon -> weight in the mean (horizons not named weigh 1); empty: the plain mean."""

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, value: str) -> str:
        from foresight_lib.forecasting.metrics import CRITERIA

        if value not in CRITERIA:
            raise ValueError(f"unknown champion criterion {value!r}; choose one of {list(CRITERIA)}")
        return value

    @field_validator("horizon_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {h: w for h, w in value.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"horizon weights must be finite and at least 0, got {bad}")
        try:
            labels = {h: parse_horizons([h])[0] for h in value}
        except ForesightError as exc:
            raise _as_error(exc) from None
        return {labels[h]: float(w) for h, w in value.items()}

    def criterion_obj(self):
        """The ``ChampionCriterion`` these settings describe."""
        from foresight_lib.forecasting.metrics import ChampionCriterion

        return ChampionCriterion.from_setting(self.model_dump())


class RightsizingConfig(_Section):
    profile: Literal["cost", "balanced", "performance"] = "balanced"
    daily_model: str = "seasonal_naive"
    """Model behind the daily sizes (the one the rightsizing replay measures by default)."""
    window_model: str = "naive"
    """Model behind the 30-minute window plan."""
    plan_windows: int = Field(4, ge=1, le=48)
    """How many 30-minute windows after the end of the data the plan covers."""
    plan_schedule: str | None = "*/30 * * * *"
    """When the ``foresight_scaling_plan`` DAG re-sizes the next windows from the latest data
    (cron, a preset, or null for manual runs only)."""
    plan_keep_runs: int = Field(48, ge=1)
    """Scaling-plan run folders kept under ``<data_root>/plans`` (48: a day of half hours)."""
    replica_capacity: dict[Literal["cpu", "memory"], float] = Field(default_factory=dict)
    """What one replica can use, per resource, in the series' unit (e.g. ``cpu: 2`` cores):
    the replica count keeps each at the profile's utilisation at the forecast peak."""

    @field_validator("plan_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _check_cron(value)

    @field_validator("replica_capacity")
    @classmethod
    def _positive_capacity(cls, value: dict) -> dict:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"replica_capacity must be positive, got {bad}")
        return value


class ForesightConfig(_Section):
    """The whole configuration; see ``include/foresight.yaml`` for every setting explained."""

    schedule: str | None = "0 2 * * *"
    retries: int = Field(2, ge=0, le=10)
    """Airflow retries of a failed task (errors that a retry cannot fix are never retried)."""
    retry_delay: str = "2m"
    """Delay before the first retry; it doubles at each further retry, up to 30 minutes."""
    data_root: str = "var/data"
    source: SourceConfig = Field(default_factory=SourceConfig)
    freq: str = "5min"
    horizons: list[str] = Field(default_factory=lambda: ["5m", "15m", "30m"])
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    model_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    test_days: int = Field(1, ge=1)
    history_days: int = Field(14, ge=1)
    stride: str = "30m"
    levels: list[int] = Field(default_factory=lambda: [80, 95])
    ensemble_selection: bool = False
    """Choose the ensemble's members per metric on the validation day (forward selection);
    false: every base model, the best three per step."""
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    champion: ChampionConfig = Field(default_factory=ChampionConfig)
    rightsizing: RightsizingConfig = Field(default_factory=RightsizingConfig)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _check_cron(value)

    @field_validator("freq")
    @classmethod
    def _freq(cls, value: str) -> str:
        return _checked(to_timedelta, value)

    @field_validator("retry_delay")
    @classmethod
    def _retry_delay(cls, value: str) -> str:
        """The grammar the DAG file reads at parse time (``foresight_lib.durations``)."""
        return _checked(duration_seconds, value)

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        try:
            return check_model_names(value)
        except ForesightError as exc:
            raise _as_error(exc) from None

    @field_validator("train")
    @classmethod
    def _mapping_fits(cls, value: TrainConfig, info: ValidationInfo) -> TrainConfig:
        """Even one shard maps a train task per model (but the ensemble) and a rightsize task."""
        models = [m for m in info.data.get("models") or [] if m != ENSEMBLE]
        need = len(models) + 1
        if value.max_mapped_tasks < need:
            raise ValueError(f"train.max_mapped_tasks is {value.max_mapped_tasks}, but even with one shard a run maps "
                             f"{need} tasks: a train task per model but the ensemble ({', '.join(models)}) and a "
                             f"rightsize task; raise train.max_mapped_tasks to at least {need} or configure fewer "
                             "models")
        return value

    @field_validator("model_params")
    @classmethod
    def _model_params(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = [name for name in value if name not in ALL_MODELS]
        if unknown:
            raise ValueError(f"parameters for unknown model(s) {unknown}; choose from {ALL_MODELS}")
        return value

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        bad = [level for level in value if not 0 < level < 100]
        if bad or not value:
            raise ValueError(f"interval levels must be percentages between 1 and 99, got {value}")
        return sorted(set(value))

    @field_validator("horizons", "stride", mode="before")
    @classmethod
    def _whole_steps(cls, value: Any, info: ValidationInfo) -> Any:
        """Horizons and the stride must be whole numbers of ``freq`` steps (``freq`` is checked first)."""
        freq = info.data.get("freq")
        try:
            if info.field_name == "horizons":
                labels = parse_horizons(value if isinstance(value, (str, list, tuple)) else [value])
                steps = labels
            else:
                labels = format_duration(parse_duration(str(value)))
                steps = [labels]
            if freq is not None:
                for label in steps:
                    horizon_steps(label, freq)
        except ForesightError as exc:
            message = str(exc)
            if info.field_name == "stride":
                message = message.replace("horizon ", "stride ", 1)
            if freq is not None and "steps" in message:
                message += f" (freq is {freq})"
            raise ValueError(message) from None
        return labels

    @field_validator("test_days")
    @classmethod
    def _horizons_fit(cls, value: int, info: ValidationInfo) -> int:
        """The longest horizon fits in the held-out part, so a run never fails on it after extract."""
        horizons = info.data.get("horizons")
        if horizons:
            longest = max(parse_duration(h) for h in horizons)
            if longest > to_timedelta(f"{value}D"):
                raise ValueError(f"the longest of horizons ({format_duration(longest)}) is longer than the "
                                 f"held-out part, test_days ({value} day(s)); shorten horizons or raise test_days")
        return value

    @model_validator(mode="after")
    def _champion_horizons(self) -> ForesightConfig:
        """``champion.horizon_weights`` names only configured horizons and leaves one of them a weight."""
        weights = self.champion.horizon_weights
        unknown = sorted(set(weights) - set(self.horizons))
        if unknown:
            raise ValueError(f"champion.horizon_weights names horizon(s) {unknown} that are not among the configured "
                             f"horizons {self.horizons}; weigh only those")
        if weights and not any(weights.get(h, 1.0) > 0 for h in self.horizons):
            raise ValueError(f"champion.horizon_weights gives every horizon a weight of 0 ({weights}); "
                             "leave at least one horizon a positive weight")
        return self

    @property
    def horizon_steps(self) -> dict[str, int]:
        """Each horizon label and its number of steps at ``freq``."""
        return {h: horizon_steps(h, self.freq) for h in self.horizons}

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able data (nested)."""
        return self.model_dump(mode="json")

    def to_params(self) -> dict[str, str]:
        """Flat ``section.key -> text`` pairs, e.g. to log as MLflow run parameters."""
        flat: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), item)
            elif isinstance(value, list):
                flat[prefix] = ",".join(str(v) for v in value)
            else:
                flat[prefix] = "" if value is None or value == {} else str(value)

        walk("", self.to_dict())
        return flat


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``base``: nested dicts merge, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def config_path(path: str | os.PathLike | None = None) -> Path:
    """The config file to read: ``path``, else ``$FORESIGHT_CONFIG``, else ``include/foresight.yaml``."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get("FORESIGHT_CONFIG")
    return Path(env).expanduser() if env else DEFAULT_CONFIG_PATH


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; pass an existing file, set FORESIGHT_CONFIG, "
            f"or restore the default {DEFAULT_CONFIG_PATH}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{at}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(loaded).__name__}")
    return loaded


def _env_overrides() -> dict[str, Any]:
    out: dict[str, Any] = {}
    if os.environ.get("FORESIGHT_DATA_ROOT"):
        out["data_root"] = os.environ["FORESIGHT_DATA_ROOT"]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        out["mlflow"] = {"tracking_uri": os.environ["MLFLOW_TRACKING_URI"]}
    return out


def _normalise_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """DAG parameters name ``metrics`` at the top level; it belongs to ``source``."""
    out = dict(overrides)
    if "metrics" in out:
        metrics = out.pop("metrics")
        source = dict(out.get("source") or {})
        source["metrics"] = metrics
        out["source"] = source
    return out


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> ForesightConfig:
    """Read, merge and check the configuration.

    Args:
        path: a YAML file; default ``$FORESIGHT_CONFIG`` or ``include/foresight.yaml``.
        overrides: nested settings merged on top, e.g. a DAG run's ``{"models": [...],
            "horizons": [...], "metrics": [...]}`` (``metrics`` goes to ``source.metrics``).

    Raises:
        ConfigError: the file is missing or not YAML, or settings are invalid; lists every
            bad key with its location and the allowed values.
    """
    file = config_path(path)
    raw = read_yaml(file)
    merged = deep_merge(raw, _env_overrides())
    given: dict = {}
    if overrides:
        if not isinstance(overrides, dict):
            raise ConfigError(f"overrides must be a mapping of settings, not {type(overrides).__name__}")
        given = _normalise_overrides(overrides)
        merged = deep_merge(merged, given)
    try:
        cfg = ForesightConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, file, given)) from None
    return _resolve_paths(cfg)


def _set_in(settings: dict, loc: tuple) -> bool:
    """Whether ``settings`` (nested dicts) gives a value at ``loc`` or above it."""
    node: Any = settings
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return bool(loc)


def _resolve_paths(cfg: ForesightConfig) -> ForesightConfig:
    home = foresight_home()
    cfg.__dict__["data_root"] = resolve_path(cfg.data_root, home)
    if cfg.source.path:
        cfg.source.__dict__["path"] = resolve_path(cfg.source.path, home)
    cfg.validation.__dict__["suite_dir"] = resolve_path(cfg.validation.suite_dir, home)
    cfg.mlflow.__dict__["tracking_uri"] = resolve_tracking_uri(cfg.mlflow.tracking_uri, home)
    cfg.mlflow.__dict__["artifact_location"] = resolve_path(cfg.mlflow.artifact_location, home)
    return cfg


def _section_of(loc: tuple) -> type[BaseModel] | None:
    """The settings section a pydantic error location points into (None inside free-form mappings)."""
    model: type[BaseModel] = ForesightConfig
    parts = list(loc)
    i = 0
    while i < len(parts):
        field = model.model_fields.get(parts[i]) if isinstance(parts[i], str) else None
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model, i = annotation, i + 1
        elif model is ValidationConfig and parts[i] == "ranges" and i + 1 < len(parts):
            model, i = RangeConfig, i + 2  # skip the metric name
        else:
            return None
    return model


_BY_RUN = " [set by the run's parameters]"
_DEPENDS_ON = {"horizons": ("freq",), "stride": ("freq",), "test_days": ("horizons",), "train": ("models",)}
"""Settings judged against another: an error at one (its dotted location; ``train`` is the mapping's
check against the models) may come from the other, set elsewhere."""


def format_errors(exc: ValidationError, source: Path | str, overrides: dict | None = None) -> str:
    """One line per bad setting: its dotted location, what is wrong, what is allowed, and who set it.

    ``overrides``: the settings a run's parameters gave; a bad setting among them is said
    to come from there, not from the file.
    """
    lines = []
    from_run = 0
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        by_run = bool(overrides) and _set_in(overrides, loc)
        others = [other for other in _DEPENDS_ON.get(where, ())
                  if overrides and _set_in(overrides, (other,))]
        by_run = by_run or bool(others)
        from_run += by_run
        kind = err["type"]
        if kind == "extra_forbidden":
            section = _section_of(loc[:-1])
            allowed = ", ".join(section.model_fields) if section else "see include/foresight.yaml"
            lines.append(f"{where}: unknown setting; allowed here: {allowed}" + (_BY_RUN if by_run else ""))
            continue
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if kind.startswith("value_error") or isinstance(got, dict) else f" (got {got!r})"
        who = _BY_RUN if by_run and not others else (
            f" [{', '.join(others)} set by the run's parameters]" if others else "")
        lines.append(f"{where}: {message}{shown}" + who)
    count = len(lines)
    body = "\n".join(f"  - {line}" for line in lines)
    origin = "the run's parameters" if from_run == count else f"config {source}" + (
        " and the run's parameters" if from_run else "")
    return f"{origin}: {count} invalid setting{'s' if count != 1 else ''}:\n{body}"
