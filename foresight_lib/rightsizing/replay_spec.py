"""What a rightsizing replay runs and keeps: its spec, the walked series and their tracks, the result.

Shared by the walk (``replay``) and the sizing and scoring of what it walked (``replay_scoring``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.models import GLOBAL_MODELS, MODEL_PATHS, check_model_names
from foresight_lib.horizons import horizon_steps, season_length, to_timedelta
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing.entity_days import entity_day_summary
from foresight_lib.rightsizing.replay_report import CRANE, FORECAST, REACTIVE, VPA, compare, frontier_comparison

log = logging.getLogger(__name__)

MODES = ("daily", "window")
LOCAL_MODELS = [m for m in MODEL_PATHS if m not in GLOBAL_MODELS]
"""Models fitted one series at a time (the LSTM and LightGBM are fitted across all series at once)."""
METHODS = {"daily": (FORECAST, VPA, CRANE), "window": (FORECAST, REACTIVE)}
DEFAULT_MODEL = {"daily": "seasonal_naive", "window": "naive"}
"""Model per mode when none is named: a static daily size needs the day's shape (seasonal
naive repeats yesterday's); a window plan is conditioned on the latest actuals, whose
best level forecast over 30 minutes is the latest value (naive). Both are the fast models
that measured best on the Bitbrains replay (benchmarks/results/rightsizing.md)."""
DEFAULT_MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
"""Fixed margins every method's base is rescored with: wide enough (up to 5× the base on
top of it) for the reactive scaler's memory violations to come down to the plan's."""
TARGETS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15)
"""Target violation rates the forecast-driven plan is rerun with for its trade-off curve."""
LEVELS = (80, 95)
PEAK_RATIO_DAYS = 7
"""Window mode: previous days whose same-time window gives the peak-to-level ratio (one
week, so that every weekday is in it, as for the daily factor's ``calibration_days``)."""


@dataclass
class ReplaySpec:
    """How to replay a trace."""

    mode: str = "daily"
    profile: str = "balanced"
    model: str = "seasonal_naive"
    """Forecasting model of the forecast-driven method (any local model of the registry)."""
    freq: str = "5min"
    window: str = "30m"
    min_history_days: float = rs.MIN_HISTORY_DAYS
    history_days: float = 7.0
    """History the model is fitted on before each day."""
    calibration_days: float = 7.0
    """Daily mode: previous days the factor is learnt from."""
    calibration_windows: int = 96
    """Window mode: previous windows (96 = two days) the factor is learnt from."""
    lead_windows: int = 0
    """Window mode: how many windows ahead each window is set (0: at its start, from the
    latest actuals; 3: an hour and a half before it starts, from the data known then)."""
    memory_peak_days: int = rs.MEMORY_PEAK_DAYS
    """Daily mode: whole days whose highest peak is the memory base (``rightsizing.daily_peak_base``)."""
    memory_min_factor: float = rs.MEMORY_MIN_FACTOR
    """Daily mode: least learnt factor over the memory base."""
    memory_step_change: tuple[float, int, int] = (rs.STEP_CHANGE_RATIO, rs.STEP_CHANGE_HOURS,
                                                   rs.STEP_CHANGE_MIN_HOURS)
    """Daily mode: ratio, hours before and least hours after of a memory step change
    (``rightsizing.last_step_change``)."""
    window_memory_floor_days: int = rs.WINDOW_MEMORY_FLOOR_DAYS
    """Window mode, memory: the base is never below the highest peak of this many whole days
    before the window's day (since the last step change) nor below the day's peak so far;
    0: no floor (``rightsizing.WINDOW_MEMORY_FLOOR_DAYS``)."""
    window_target_scale: float | None = None
    """Window mode: the learnt factors of every resource but memory aim at this many times
    the profile's target (``rightsizing.learnt_target``); None: the multiple chosen for
    the lead (``rightsizing.window_target_scale``)."""
    daily_base_days: int = 0
    """Daily mode, every resource but memory: 0, the base is the profile's quantile of the
    model's mean forecast of the day; ``k`` > 0, the same quantile of the last ``k`` days'
    usage (the VPA's histogram, without its decay). A candidate of
    ``tuning.tune_daily_base``; 0 is shipped."""
    daily_pooled_resources: tuple[str, ...] = rs.DAILY_POOLED_RESOURCES
    """Daily mode: the resources whose learnt factor is shrunk toward the metric's fleet
    factor, as window mode does for all (``rightsizing.shrink_factor``)."""
    margins: Sequence[float] = DEFAULT_MARGINS
    max_days: int | None = None
    """Score at most this many days per series (the first ones after the minimum history)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown replay mode '{self.mode}'; choose from {list(MODES)}")
        self.profile_ = rs.get_profile(self.profile)
        check_model_names([self.model])
        if self.model not in LOCAL_MODELS:
            raise ConfigError(f"model '{self.model}' cannot size one series at a time; choose from {LOCAL_MODELS}")
        self.steps_per_day = season_length(self.freq)
        self.window_steps = horizon_steps(self.window, self.freq)
        if self.steps_per_day % self.window_steps:
            raise ConfigError(f"window {self.window} does not divide a day; use e.g. 15m, 30m, 1h")
        if self.min_history_days < 1:
            raise ConfigError(f"min_history_days must be at least 1 (one daily season), got {self.min_history_days}")
        if self.history_days <= 0 or self.calibration_days <= 0 or self.calibration_windows < 1:
            raise ConfigError("history_days, calibration_days and calibration_windows must be positive")
        if self.lead_windows and self.mode != "window":
            raise ConfigError("lead_windows applies to window mode only: a daily size is made at the day's start")
        if not 0 <= self.lead_windows < self.steps_per_day // self.window_steps:
            raise ConfigError(f"lead_windows must be between 0 and {self.steps_per_day // self.window_steps - 1} "
                              f"(less than a day of {self.window} windows), got {self.lead_windows}")
        if self.memory_peak_days < 1 or self.memory_min_factor <= 0:
            raise ConfigError(f"memory_peak_days must be at least 1 and memory_min_factor positive, got "
                              f"{self.memory_peak_days} and {self.memory_min_factor}")
        if self.daily_base_days < 0:
            raise ConfigError(f"daily_base_days must be 0 or more, got {self.daily_base_days}")
        if self.window_memory_floor_days < 0:
            raise ConfigError(f"window_memory_floor_days must be 0 or more, got {self.window_memory_floor_days}")
        if self.window_target_scale is not None and not 0 < self.window_target_scale <= 50:
            raise ConfigError(f"window_target_scale must be in (0, 50], got {self.window_target_scale}")
        if not self.margins or any(m < 0 for m in self.margins):
            raise ConfigError(f"margins must be a non-empty list of non-negative numbers, got {list(self.margins)}")
        self.margins = tuple(sorted(float(m) for m in self.margins))

    @property
    def window_scale(self) -> float:
        """The multiple of the target window factors aim at: the one set, else the lead's."""
        if self.window_target_scale is not None:
            return self.window_target_scale
        return rs.window_target_scale(self.lead_windows)

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS[self.mode]

    @property
    def period_steps(self) -> int:
        return self.steps_per_day if self.mode == "daily" else self.window_steps

    @property
    def step_ns(self) -> int:
        """One grid step in nanoseconds."""
        return to_timedelta(self.freq).value

    @property
    def lead_steps(self) -> int:
        """Steps between the moment a period is sized and its start."""
        return self.lead_windows * self.window_steps if self.mode == "window" else 0


@dataclass
class Track:
    """One method's bases (before any margin), requests and limits over a series' periods."""

    bases: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    limits: list[float] = field(default_factory=list)
    factors: list[float] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    """The forecast-driven request before rounding (base × factor, capped)."""
    targets: list[float] = field(default_factory=list)
    """The violation target the forecast-driven request aims at (per resource)."""
    floors: list[float] = field(default_factory=list)
    """Per period: the least size the method gives whatever its margin (the VPA's least
    memory per pod and its OOM bump; 0 elsewhere)."""

    def add(self, base: float, request: float, limit: float, factor: float, conf: float | None,
            floor: float = 0.0) -> None:
        """One more period's recommendation."""
        self.floors.append(floor)
        self.bases.append(base)
        self.requests.append(request)
        self.limits.append(limit)
        self.factors.append(factor)
        self.confidences.append(conf)

    def skip(self) -> None:
        """A period walked only to learn from: no recommendation."""
        self.add(float("nan"), float("nan"), float("nan"), float("nan"), None)


@dataclass
class SeriesReplay:
    """One walked series: its periods, their actuals and bases, and every method's track."""

    unique_id: str
    metric: str
    entity: str
    resource: str
    unit: str
    first_ns: int = 0
    starts: list[int] = field(default_factory=list)
    """Every walked period's first index; ``scored`` says which ones are scored."""
    actuals: list[np.ndarray] = field(default_factory=list)
    scored: list[bool] = field(default_factory=list)
    bases: list[float] = field(default_factory=list)
    """The forecast-driven method's calibrated base per period."""
    first_bases: list[float] = field(default_factory=list)
    """The base used with the fixed margin while no past period is known."""
    means: list[np.ndarray | None] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    tracks: dict[str, Track] = field(default_factory=dict)
    fallbacks: int = 0
    notes: list[str | None] = field(default_factory=list)
    """Per period: why the fallback estimator sized it (None when the main one did)."""
    level_starts: list[int] = field(default_factory=list)
    """Per period: where the latest level known when it was sized began (daily memory:
    after the last step change; 0 elsewhere). Its factor learns only from periods since."""

    def __getstate__(self) -> dict:
        """Pickled with each period's actuals and means in one array: a walk has hundreds of
        periods, and as many small arrays pickle and load several times slower."""
        return {**self.__dict__, "actuals": _packed(self.actuals), "means": _packed(self.means)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, actuals=_unpacked(state["actuals"]), means=_unpacked(state["means"]))

    def sized(self, value: float, prof: rs.Profile) -> tuple[float, float]:
        """The request and limit this series' resource gets for ``value`` (rounded; NaN for a non-finite one)."""
        if not np.isfinite(value):
            return float("nan"), float("nan")
        sizing = rs.size(value, self.resource, self.unit, prof)
        return sizing.request, sizing.limit


_Track, _SeriesReplay = Track, SeriesReplay
"""The names walks pickled before they were public give the classes (``plan_step`` stores walks): they still load."""


def _packed(arrays: list[np.ndarray | None]) -> object:
    """``(values, lengths)``, a length of -1 for None; the list itself when its arrays differ in kind."""
    present = [a for a in arrays if a is not None]
    if not present or any(not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype != present[0].dtype
                          for a in present):
        return arrays
    lengths = np.asarray([-1 if a is None else a.size for a in arrays], dtype=np.int64)
    return ("packed", np.concatenate(present), lengths)


def _unpacked(packed: object) -> list[np.ndarray | None]:
    if not (isinstance(packed, tuple) and len(packed) == 3 and packed[0] == "packed"):
        return packed
    _, values, lengths = packed
    ends = np.cumsum(np.maximum(lengths, 0))
    return [None if n < 0 else values[end - n:end] for n, end in zip(lengths.tolist(), ends.tolist(), strict=True)]


@dataclass
class ReplayResult:
    """Everything a replay found."""

    spec: ReplaySpec
    records: pd.DataFrame
    """One row per series, period and method: the recommendation and its scores."""
    totals: pd.DataFrame
    """Per metric and method: slack, violations (and above the limit), points, periods."""
    sweep: pd.DataFrame
    """Per metric, method and fixed margin: slack and violations."""
    skipped: list[dict]
    seconds: float
    fallbacks: dict[str, int] = field(default_factory=dict)
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per metric and target violation rate: the forecast-driven plan's slack and violations."""
    entity_days: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Memory: one row per entity, UTC day and method (``entity_days.entity_day_rows``)."""

    def report(self) -> dict:
        """The JSON-ready summary, with every record."""
        records = self.records.copy()
        for col in ("period_start", "period_end"):
            records[col] = records[col].map(lambda t: t.isoformat())
        return {
            "mode": self.spec.mode, "profile": self.spec.profile, "model": self.spec.model,
            "settings": {
                "freq": self.spec.freq, "window": self.spec.window, "min_history_days": self.spec.min_history_days,
                "history_days": self.spec.history_days, "calibration_days": self.spec.calibration_days,
                "calibration_windows": self.spec.calibration_windows, "lead_windows": self.spec.lead_windows,
                "memory_peak_days": self.spec.memory_peak_days, "memory_min_factor": self.spec.memory_min_factor,
                "memory_step_change": list(self.spec.memory_step_change),
                "window_target_scale": self.spec.window_scale,
                "window_memory_floor_days": self.spec.window_memory_floor_days,
                "daily_pooled_resources": list(self.spec.daily_pooled_resources),
                "daily_base_days": self.spec.daily_base_days,
                "margins": list(self.spec.margins),
                "profile": vars(self.spec.profile_).copy(),
            },
            "methods": list(self.spec.methods),
            "totals": self.totals.to_dict(orient="records"),
            "comparison": compare(self.totals, self.spec.mode, self.targets),
            "frontiers": frontier_comparison(self.totals, self.sweep, self.targets),
            "entity_days": entity_day_summary(self.entity_days),
            "sweep": self.sweep.to_dict(orient="records"),
            "targets": self.targets.to_dict(orient="records"),
            "series": int(self.records["unique_id"].nunique()) if len(self.records) else 0,
            "skipped": self.skipped,
            "fallbacks": self.fallbacks,
            "seconds": round(self.seconds, 2),
            "records": records.to_dict(orient="records"),
        }
