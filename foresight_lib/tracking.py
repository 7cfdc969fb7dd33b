"""MLflow: one parent run per nightly run, a child per model, and the champion registry.

- ``configure`` points MLflow at a tracking store (embedded default: a SQLite file with
  a local artifact folder) and an experiment.
- ``log_nightly`` logs a parent run per DAG run (tag ``foresight.run_id``) with the
  leaderboard, report, config and validation report, and a nested child run per model
  with its params, per-horizon metrics (``mase_15m``, ``coverage_80_30m``…) and a plot of
  forecasts against actuals. Logging the same run key again replaces the earlier runs.
- ``register_champion`` registers a ``ChampionBundle`` as a pyfunc model version of
  ``foresight-<metric>`` and moves the ``champion`` alias only when the new model is at
  least as good (mean MASE) as the current champion on the same backtest; otherwise the
  new version gets ``challenger``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, ViewType
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from foresight_lib.backtest import TOP_MODELS, BacktestResult, BacktestSpec, finish_backtest
from foresight_lib.champion import ChampionBundle
from foresight_lib.errors import ConfigError, DataError, ForesightError
from foresight_lib.frames import split_unique_id
from foresight_lib.models import ENSEMBLE
from foresight_lib.plots import pick_series, plot_forecasts, plot_leaderboard

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "foresight"
DEFAULT_DIR_ENV = "FORESIGHT_MLFLOW_DIR"
"""Folder of the embedded default (SQLite file + artifacts); ``./mlflow`` when unset."""
RUN_KEY_TAG = "foresight.run_id"
LOGICAL_DATE_TAG = "foresight.logical_date"
METRIC_TAG = "foresight.metric"
MODEL_TAG = "foresight.model"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
BUNDLE_ARTIFACT = "bundle"
HORIZON_METRICS = ("mae", "rmse", "smape", "mase", "coverage_80", "coverage_95", "width_80", "width_95")
MAX_PARAM_CHARS = 500
EXTRA_REQUIREMENTS = {"arima": ["statsmodels"], "ets": ["statsmodels"], "prophet": ["prophet"], "lstm": ["torch"]}

_state: dict[str, str] = {}


# ---------------------------------------------------------------------------
# Configuration


def configure(tracking_uri: str | None = None, artifact_location: str | None = None,
              experiment: str = DEFAULT_EXPERIMENT, root: str | Path | None = None) -> str:
    """Point MLflow (tracking and registry) at a store and an experiment; create what is missing.

    Args:
        tracking_uri: ``sqlite:///path.db``, ``postgresql://…``, ``http(s)://server``, or a
            plain path to a ``.db`` file. Default: ``MLFLOW_TRACKING_URI`` if set, else a
            SQLite file under ``root``.
        artifact_location: where a new experiment keeps artifacts: a folder, ``file://``
            or ``s3://`` URI. Default: ``<root>/artifacts`` for a local store.
        experiment: experiment name.
        root: folder of the embedded default (``$FORESIGHT_MLFLOW_DIR`` or ``./mlflow``).

    Returns:
        The experiment id.

    Raises:
        ConfigError: the store cannot be reached or the experiment not created.
    """
    root_dir = Path(root or os.environ.get(DEFAULT_DIR_ENV) or "mlflow").expanduser().resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root_dir / 'mlflow.db'}"
    uri = _normalise_tracking_uri(uri)
    local_store = uri.startswith("sqlite:")
    if artifact_location is None and local_store:
        artifact_location = str(root_dir / "artifacts")
    location = _normalise_artifact_location(artifact_location) if artifact_location else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            experiment_id = client.create_experiment(experiment, artifact_location=location)
            log.info("created MLflow experiment %s (%s) at %s, artifacts %s", experiment, experiment_id, uri, location)
        else:
            experiment_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)
                log.info("restored deleted MLflow experiment %s", experiment)
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow tracking store {_redact(uri)} is not usable ({exc.message}); "
            "check mlflow.tracking_uri in the config (or MLFLOW_TRACKING_URI)"
        ) from exc
    mlflow.set_experiment(experiment_id=experiment_id)
    _state.update(tracking_uri=uri, experiment_id=experiment_id, experiment=experiment)
    return experiment_id


def _normalise_tracking_uri(uri: str) -> str:
    if "://" not in uri and not uri.startswith("sqlite:"):
        path = Path(uri).expanduser().resolve()
        if path.suffix not in (".db", ".sqlite", ".sqlite3"):
            path = path / "mlflow.db"
        uri = f"sqlite:///{path}"
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):]
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return uri


def _normalise_artifact_location(location: str) -> str:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else location).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()
    return location


def _redact(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri


def _experiment_id(experiment_id: str | None) -> str:
    if experiment_id:
        return experiment_id
    if "experiment_id" not in _state:
        configure()
    return _state["experiment_id"]


def _client() -> MlflowClient:
    return MlflowClient(mlflow.get_tracking_uri(), mlflow.get_registry_uri())


# ---------------------------------------------------------------------------
# Nightly runs


def log_nightly(
    run_key: str, result_or_parts: BacktestResult | Sequence, config_dict: dict | None = None,
    artifacts: dict[str, str | Path] | None = None, validation_html: str | None = None, *,
    logical_date: str | None = None, metric: str | None = None, spec: BacktestSpec | None = None,
    experiment_id: str | None = None, plot_series: int = 3,
) -> dict:
    """Log one nightly run: a parent run and a nested child run per model.

    The earlier runs logged under the same ``run_key`` are deleted once the new ones are
    complete, so one DAG run keeps exactly one parent run.

    Args:
        run_key: the DAG run's key (Airflow run id or date key); tag ``foresight.run_id``.
        result_or_parts: a ``BacktestResult``, or the ``BacktestPart``s of one backtest
            (then ``spec`` is required).
        config_dict: the run's settings, logged as params (``config.*``) and ``config.json``.
        artifacts: name -> local path (file or folder) or URI, logged on the parent;
            remote URIs (``s3://``) are listed in ``links.json``.
        validation_html: the validation report's HTML, or a path to it.
        logical_date: the run's logical date (tag ``foresight.logical_date``).
        metric: resource metric(s) of the run; default: those in the series ids.

    Returns:
        ``{"parent_run_id": …, "child_run_ids": {model: run_id}}``.
    """
    if "'" in run_key or not run_key.strip():
        raise ConfigError(f"run key {run_key!r} must be non-empty and free of quotes")
    result = _as_result(result_or_parts, spec)
    client = _client()
    exp_id = _experiment_id(experiment_id)
    earlier = _runs_of(client, exp_id, run_key)
    metric = metric or ",".join(sorted({split_unique_id(uid)[0] for uid in result.series}))
    base_tags = {RUN_KEY_TAG: run_key, METRIC_TAG: metric}
    if logical_date:
        base_tags[LOGICAL_DATE_TAG] = str(logical_date)
    board = result.leaderboard
    models = list(dict.fromkeys(board["model"])) or list(result.spec.models)
    name = f"nightly {metric} {logical_date or run_key}"
    parent = client.create_run(exp_id, run_name=name, tags={**base_tags, "foresight.champion": result.champion})
    parent_id = parent.info.run_id
    children: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="foresight-mlflow-") as tmp:
            _log_parent(client, parent_id, result, config_dict or {}, artifacts or {}, validation_html, Path(tmp))
            for model in models:
                children[model] = _log_child(client, exp_id, parent_id, base_tags, result, model,
                                             Path(tmp) / model, plot_series)
    except BaseException:
        for run_id in [*children.values(), parent_id]:
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED")
    for run in earlier:
        client.delete_run(run.info.run_id)
    if earlier:
        log.info("replaced %d earlier MLflow run(s) of run key %s", len(earlier), run_key)
    log.info("logged MLflow parent run %s with %d child run(s) for %s", parent_id, len(children), run_key)
    return {"parent_run_id": parent_id, "child_run_ids": children}


def _as_result(result_or_parts, spec: BacktestSpec | None) -> BacktestResult:
    if isinstance(result_or_parts, BacktestResult):
        return result_or_parts
    parts = list(result_or_parts)
    if not parts:
        raise DataError("nothing to log: no backtest result and no backtest parts")
    if spec is None:
        raise ConfigError("logging backtest parts needs the BacktestSpec they ran with (spec=…)")
    return finish_backtest(parts, spec)


def _runs_of(client: MlflowClient, experiment_id: str, run_key: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
            run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _log_parent(client: MlflowClient, run_id: str, result: BacktestResult, config: dict,
                artifacts: dict, validation_html: str | None, tmp: Path) -> None:
    spec = result.spec
    board = result.leaderboard
    means = board.groupby("model", sort=False)["mase"].mean()
    params = {**_protocol_params(result), **{f"config.{k}": v for k, v in _flatten(config).items()},
              "champion": result.champion}
    metrics = {
        "series": len(result.series), "skipped_series": len(result.skipped), "fallbacks": len(result.fallbacks),
        "seconds": result.seconds,
        **{f"mean_mase_{m}": v for m, v in means.items()},
    }
    if result.champion in means:
        metrics["champion_mean_mase"] = means[result.champion]
    _log_batch(client, run_id, params, metrics)
    board.to_csv(tmp / "leaderboard.csv", index=False)
    client.log_artifact(run_id, str(tmp / "leaderboard.csv"))
    client.log_dict(run_id, {"horizons": spec.horizons, "rows": _records(board)}, "leaderboard.json")
    client.log_dict(run_id, json.loads(json.dumps(result.report(), default=str)), "backtest_report.json")
    client.log_dict(run_id, json.loads(json.dumps(config, default=str)), "config.json")
    if not board.empty:
        client.log_artifact(run_id, str(plot_leaderboard(board, tmp / "leaderboard.png")), "plots")
    if validation_html:
        _log_validation(client, run_id, validation_html)
    links = {}
    for name, where in artifacts.items():
        local = _local_path(str(where))
        if local is None:
            links[name] = str(where)
        elif local.is_dir():
            client.log_artifacts(run_id, str(local), f"run/{name}")
        elif local.is_file():
            client.log_artifact(run_id, str(local), "run")
        else:
            log.warning("artifact %s not found at %s; not logged", name, where)
    if links:
        client.log_dict(run_id, links, "links.json")


def _log_validation(client: MlflowClient, run_id: str, validation_html: str) -> None:
    text = validation_html.lstrip()
    if text.startswith("<"):
        client.log_text(run_id, validation_html, "validation/validation_report.html")
        return
    path = _local_path(validation_html)
    if path is None or not path.is_file():
        raise DataError(f"validation report {validation_html!r} is neither HTML nor a readable file")
    client.log_artifact(run_id, str(path), "validation")


def _local_path(where: str) -> Path | None:
    parsed = urlparse(where)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(where)
    return None


def _log_child(client: MlflowClient, experiment_id: str, parent_id: str, base_tags: dict, result: BacktestResult,
               model: str, tmp: Path, plot_series: int) -> str:
    tags = {**base_tags, MODEL_TAG: model, "mlflow.parentRunId": parent_id,
            "foresight.is_champion": str(model == result.champion).lower()}
    run = client.create_run(experiment_id, run_name=model, tags=tags)
    run_id = run.info.run_id
    board = result.leaderboard[result.leaderboard["model"] == model]
    params = {**{f"model.{k}": v for k, v in model_params(result, model).items()}, **_protocol_params(result)}
    metrics: dict[str, float] = {}
    for row in board.itertuples(index=False):
        for col in HORIZON_METRICS:
            if hasattr(row, col):
                metrics[f"{col}_{row.horizon}"] = getattr(row, col)
    if not board.empty:
        metrics["mean_mase"] = board["mase"].mean()
        for col in ("mae", "rmse", "smape"):
            metrics[f"mean_{col}"] = board[col].mean()
    metrics["fit_seconds"] = result.fit_seconds.get(model, 0.0)
    metrics["predict_seconds"] = result.predict_seconds.get(model, 0.0)
    metrics["fallbacks"] = sum(1 for f in result.fallbacks if f.get("model") == model)
    _log_batch(client, run_id, params, metrics)
    tmp.mkdir(parents=True, exist_ok=True)
    per_series = result.per_series[result.per_series["model"] == model] if not result.per_series.empty else None
    if per_series is not None and not per_series.empty:
        per_series.to_csv(tmp / "per_series.csv", index=False)
        client.log_artifact(run_id, str(tmp / "per_series.csv"))
    series = pick_series(result.per_series, model, result.series, plot_series)
    if series and not result.forecasts.empty:
        png = plot_forecasts(result.forecasts, model, tmp / "forecasts_vs_actuals.png", series,
                             result.spec.horizon_steps, future=result.future_forecasts)
        client.log_artifact(run_id, str(png), "plots")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def model_params(result: BacktestResult, model: str) -> dict:
    """The model's constructor parameters (from a fitted instance when kept) and config overrides."""
    params: dict[str, Any] = {}
    if model == ENSEMBLE:
        params.update(members=",".join(result.spec.base_models), top_models=TOP_MODELS)
    fitted = result.models.get(model)
    if fitted is None:
        fitted = next((m for k, m in result.models.items() if isinstance(k, tuple) and k[0] == model), None)
    if fitted is not None and hasattr(fitted, "get_params"):
        params.update(fitted.get_params())
    params.update(result.spec.model_params.get(model, {}))
    params["name"] = model
    return params


def _protocol_params(result: BacktestResult) -> dict:
    spec = result.spec
    return {
        "protocol.freq": spec.freq, "protocol.horizons": ",".join(spec.horizons),
        "protocol.test_days": spec.test_days, "protocol.history_days": spec.history_days,
        "protocol.stride": spec.stride, "protocol.season_length": spec.season_length,
        "protocol.levels": ",".join(str(level) for level in spec.levels),
        "protocol.cutoffs_per_series": len(spec.origins), "protocol.series": len(result.series),
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value} if prefix else {}


def _log_batch(client: MlflowClient, run_id: str, params: dict, metrics: dict) -> None:
    stamp = int(time.time() * 1000)
    param_rows = [Param(k[:250], _param_value(v)) for k, v in params.items()]
    metric_rows = []
    for key, value in metrics.items():
        value = float(value)
        if math.isfinite(value):
            metric_rows.append(Metric(key, value, stamp, 0))
        else:
            log.debug("metric %s is %s; not logged", key, value)
    for i in range(0, len(param_rows), 100):
        client.log_batch(run_id, params=param_rows[i:i + 100])
    for i in range(0, len(metric_rows), 1000):
        client.log_batch(run_id, metrics=metric_rows[i:i + 1000])


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def _records(board: pd.DataFrame) -> list[dict]:
    return json.loads(board.to_json(orient="records"))


# ---------------------------------------------------------------------------
# The registered champion


class ForesightPyfunc(mlflow.pyfunc.PythonModel):
    """The champion as an MLflow pyfunc model: recent history in, forecasts with intervals out.

    ``predict(model_input, params={"horizons": "5m,15m,30m"})``: ``model_input`` is a long
    frame ``unique_id, ds, y`` (timestamps as UTC, naive or aware, or ISO strings); the
    result is a forecast frame with every step up to the longest horizon.
    """

    def __init__(self) -> None:
        self.bundle: ChampionBundle | None = None

    def load_context(self, context) -> None:
        with open(context.artifacts[BUNDLE_ARTIFACT], "rb") as fh:
            self.bundle = pickle.load(fh)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.bundle is None:
            raise ConfigError("the champion bundle is not loaded; load the model with mlflow.pyfunc.load_model")
        params = params or {}
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        horizons = params.get("horizons") or None
        return self.bundle.forecast(model_input, horizons=horizons)


def registered_model_name(metric: str, name_prefix: str = "foresight") -> str:
    return f"{name_prefix}-{metric}"


def load_bundle(model_uri: str) -> ChampionBundle:
    """The ``ChampionBundle`` inside a registered pyfunc model (e.g. ``models:/foresight-cpu@champion``)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().bundle


def load_champion(metric: str, name_prefix: str = "foresight", alias: str = CHAMPION_ALIAS) -> ChampionBundle | None:
    """The bundle the alias points at, or None when there is none yet."""
    name = registered_model_name(metric, name_prefix)
    if _alias_version(_client(), name, alias) is None:
        return None
    return load_bundle(f"models:/{name}@{alias}")


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


def register_champion(
    bundle: ChampionBundle, metric: str, new_score: float | None = None,
    current_score_fn: Callable[[ChampionBundle], float] | None = None, *,
    name_prefix: str = "foresight", run_key: str | None = None, parent_run_id: str | None = None,
    experiment_id: str | None = None,
) -> dict:
    """Register ``bundle`` as a new version of ``<name_prefix>-<metric>`` and set its alias.

    The ``champion`` alias moves to the new version when there is no champion yet, or when
    ``new_score`` <= the current champion's mean MASE on the same backtest
    (``current_score_fn(current_bundle)``); otherwise the new version becomes the
    ``challenger``. When the current champion cannot be scored on this backtest (another
    frequency, an unloadable model), the new version takes over and the reason is tagged.

    Args:
        bundle: the new champion candidate.
        metric: the resource metric (``cpu``, ``memory``…), part of the model's name.
        new_score: its mean MASE on this backtest (default: ``bundle.mean_mase``).
        current_score_fn: scores the current champion's bundle on this backtest (default:
            ``score_on`` the frame and spec ``bundle`` was built from).
        run_key: the DAG run's key, tagged on the version.
        parent_run_id: the nightly parent run to log the model in (default: a new run).

    Returns:
        ``version``, ``alias``, ``previous_version``, ``new_mean_mase``, ``champion_mean_mase``,
        ``registered_model``, ``model`` and ``reason``.
    """
    client = _client()
    name = registered_model_name(metric, name_prefix)
    score = float(bundle.mean_mase if new_score is None else new_score)
    if current_score_fn is None:
        if bundle._eval_frame is None or bundle.spec is None:
            raise ConfigError(
                "no way to score the current champion: pass current_score_fn, or build the bundle with "
                "ChampionBundle.from_result(result, model, frame) in this process"
            )
        frame, spec = bundle._eval_frame, bundle.spec
        current_score_fn = lambda champ: champ.score_on(frame, spec)  # noqa: E731
    previous = _alias_version(client, name, CHAMPION_ALIAS)
    current_score, reason = None, None
    if previous is None:
        reason = "first registration"
    else:
        current_score, reason = _score_current(name, current_score_fn)
    if previous is None:
        alias = CHAMPION_ALIAS
    elif current_score is not None and math.isfinite(current_score):
        alias = CHAMPION_ALIAS if math.isfinite(score) and score <= current_score else CHALLENGER_ALIAS
        reason = (f"mean MASE {score:.6g} {'<=' if alias == CHAMPION_ALIAS else '>'} "
                  f"champion v{previous}'s {current_score:.6g} on the same backtest")
    else:
        alias = CHAMPION_ALIAS if math.isfinite(score) else CHALLENGER_ALIAS

    info, run_id = _log_model(bundle, metric, parent_run_id, experiment_id)
    tags = {
        "mean_mase": _fmt(score), "model": bundle.model, "run_id": run_key or "", "mlflow_run_id": run_id,
        "champion_mean_mase": _fmt(current_score), "previous_champion": previous or "", "decision": alias,
        "reason": reason or "", "series": str(len(bundle.series)), "horizons": ",".join(bundle.horizons),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, alias, mv.version)
    if not client.get_registered_model(name).description:
        client.update_registered_model(
            name, description=f"Foresight champion for {metric}: given recent history (unique_id, ds, y), "
                              "forecasts with intervals. Alias 'champion' = best by mean MASE; 'challenger' = "
                              "the latest that did not beat it.",
        )
    log.info("registered %s v%s (%s, mean MASE %s) as %s: %s", name, mv.version, bundle.model, _fmt(score),
             alias, reason)
    return {
        "registered_model": name, "version": int(mv.version), "alias": alias,
        "previous_version": int(previous) if previous is not None else None,
        "new_mean_mase": _finite(score), "champion_mean_mase": _finite(current_score),
        "model": bundle.model, "reason": reason,
    }


def _score_current(name: str, current_score_fn: Callable[[ChampionBundle], float]) -> tuple[float | None, str]:
    try:
        champion = load_bundle(f"models:/{name}@{CHAMPION_ALIAS}")
    except Exception as exc:  # noqa: BLE001 - an unloadable champion is replaced, with the reason kept
        log.warning("current champion of %s cannot be loaded (%s); the new version takes over", name, exc)
        return None, f"current champion could not be loaded: {type(exc).__name__}: {exc}"[:500]
    try:
        value = float(current_score_fn(champion))
    except ForesightError as exc:
        log.warning("current champion of %s cannot be scored on this backtest (%s); the new version takes over",
                    name, exc)
        return None, f"current champion not comparable: {exc}"[:500]
    if not math.isfinite(value):
        return None, "current champion's score on this backtest is not finite"
    return value, ""


def _log_model(bundle: ChampionBundle, metric: str, parent_run_id: str | None, experiment_id: str | None):
    with tempfile.TemporaryDirectory(prefix="foresight-champion-") as tmp:
        path = Path(tmp) / "bundle.pkl"
        with open(path, "wb") as fh:
            pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)
        code = Path(tmp) / "code" / "foresight_lib"
        shutil.copytree(Path(__file__).resolve().parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        example = bundle.example if bundle.example is not None else None
        nested = mlflow.active_run() is not None
        if parent_run_id:
            run_ctx = mlflow.start_run(run_id=parent_run_id, nested=nested)
        else:
            run_ctx = mlflow.start_run(experiment_id=_experiment_id(experiment_id), nested=nested,
                                       run_name=f"register {metric}")
        with run_ctx as run, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(
                name=f"champion-{metric}", python_model=ForesightPyfunc(), artifacts={BUNDLE_ARTIFACT: str(path)},
                signature=_signature(bundle, example), input_example=example,
                pip_requirements=_requirements(bundle), code_paths=[str(code)],
                tags={MODEL_TAG: bundle.model, METRIC_TAG: metric},
            )
            return info, run.info.run_id


def _signature(bundle: ChampionBundle, example: pd.DataFrame | None) -> ModelSignature:
    inputs = Schema([ColSpec("string", "unique_id"), ColSpec(AnyType(), "ds"), ColSpec("double", "y")])
    params = ParamSchema([ParamSpec("horizons", "string", ",".join(bundle.horizons))])
    outputs = None
    if example is not None and not example.empty:
        outputs = infer_signature(example, bundle.forecast(example)).outputs
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _requirements(bundle: ChampionBundle) -> list[str]:
    names = ["mlflow", "numpy", "pandas", "scipy", "cloudpickle"]
    for member in bundle.members:
        names.extend(EXTRA_REQUIREMENTS.get(member, []))
    pins = []
    for pkg in dict.fromkeys(names):
        try:
            pins.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pins.append(pkg)
    return pins


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
