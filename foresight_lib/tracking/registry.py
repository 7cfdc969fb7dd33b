"""The champion registry: one registered model per metric, its versions and its aliases.

- ``register_champion`` registers a ``ChampionBundle`` as a pyfunc model version of
  ``<prefix>-<metric>`` (logged in the nightly parent run) and moves the ``champion``
  alias only when the new model is at least as good (by the champion criterion, mean MASE
  by default) as the current champion
  on the same backtest; otherwise the new version gets ``challenger``.
- The publish transaction: ``snapshot_aliases`` before registering, then on failure
  ``restore_aliases`` and ``discard_versions`` (with ``versions_from_run`` to find what a
  killed attempt registered), so that a failed or killed publish leaves the aliases as
  they were and no orphan version. ``champion_versions`` says what is published.
- ``source_versions``: the registered versions logged in given runs; a run that is the
  source of one is never deleted (``foresight_lib.tracking.mlflow_runs.retire_earlier_runs``).

Every MLflow call here runs under ``quiet_mlflow``: a successful publish writes no
progress bar and no MLflow chatter to stderr (which Airflow shows as ERROR lines).
"""
from __future__ import annotations

import logging
import math
import pickle
import shutil
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from foresight_lib.errors import ConfigError, ForesightError
from foresight_lib.forecasting.champion import CHECK_MODES, MAX_GAP_POINTS, ChampionBundle
from foresight_lib.scratch import scratch_dir
from foresight_lib.tracking.mlflow_store import mlflow_client, mlflow_name, quiet_mlflow, resolve_experiment_id

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "foresight"
METRIC_TAG = "foresight.metric"
MODEL_TAG = "foresight.model"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
ALIASES = (CHAMPION_ALIAS, CHALLENGER_ALIAS)
"""The aliases a publish moves, and so the ones a snapshot keeps."""
BUNDLE_ARTIFACT = "bundle"
EXTRA_REQUIREMENTS = {"arima": ["statsmodels"], "ets": ["statsmodels"], "prophet": ["prophet"], "lstm": ["torch"],
                      "lightgbm": ["lightgbm"]}
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
"""Error codes of a registered model, version or alias that does not exist (anything else is a failure)."""
_RUN_IDS_PER_SEARCH = 50


def is_missing(exc: Exception) -> bool:
    """Whether an MLflow error says the registered model, version or alias does not exist."""
    return getattr(exc, "error_code", None) in _MISSING


class RegistryError(ForesightError):
    """The model registry could not be brought to the state a publish needs."""


class ForesightPyfunc(mlflow.pyfunc.PythonModel):
    """The champion as an MLflow pyfunc model: recent history in, forecasts with intervals out.

    ``predict(model_input, params={"horizons": "5m,15m,30m"})``: ``model_input`` is a long
    frame ``unique_id, ds, y`` (timestamps as UTC, naive or aware, or ISO strings); the
    result is a forecast frame with every step up to the longest horizon, never below 0
    for a metric that was never negative in training.

    History unlike the training data (another metric, a raw counter, a level 100 times
    off, negative values) is refused with ``HistoryMismatchError``; with
    ``params={"check_history": "warn"}`` it is logged and forecast anyway, and
    ``history_scale_factor`` sets how far off a level may be.

    History the model cannot be conditioned on is refused with ``HistoryRefused`` and the
    messages of ``POST /foresight/predict`` (the same checks, ``ChampionBundle.refuse_unusable``):
    NaN or infinite values, duplicate timestamps, timestamps off the grid, a known series
    not following on from the model's last actual, a new series shorter than one season,
    and more than ``max_gap_points`` (12) missing points. ``allow_new_series`` (true) set
    to false refuses series the model was not trained on, as the REST API does by default.
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
        factor = params.get("history_scale_factor")
        allow_new = params.get("allow_new_series")
        gap = params.get("max_gap_points")
        model_input = self.bundle.refuse_unusable(
            model_input, allow_new_series=True if allow_new is None else _flag(allow_new),
            max_gap_points=MAX_GAP_POINTS if gap is None else int(gap))
        return self.bundle.forecast(model_input, horizons=horizons,
                                    check_history=params.get("check_history") or CHECK_MODES[0],
                                    scale_factor=float(factor) if factor else None)


def _flag(value: Any) -> bool:
    """A boolean param as MLflow may pass it (a bool, or text from a served model's JSON)."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def registered_model_name(metric: str, name_prefix: str = DEFAULT_PREFIX) -> str:
    """``<prefix>-<mlflow_name(metric)>``; a prefix given with its dash (``foresight-``, as in the config) is the same.

    ``foresight-container_cpu_usage_seconds_total`` keeps the metric's name; a name MLflow
    would refuse (``namespace:container_cpu:sum_rate``, ``system.cpu.utilization``) is
    escaped by ``mlflow_name``, and the exact name is on the model's ``foresight.metric`` tag.
    """
    return f"{name_prefix.rstrip('-')}-{mlflow_name(metric)}"


def load_bundle(model_uri: str) -> ChampionBundle:
    """The ``ChampionBundle`` inside a registered pyfunc model (e.g. ``models:/foresight-cpu@champion``)."""
    with quiet_mlflow():
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().bundle


def load_champion(metric: str, name_prefix: str = DEFAULT_PREFIX, alias: str = CHAMPION_ALIAS) -> ChampionBundle | None:
    """The bundle the alias points at, or None when there is none yet."""
    name = registered_model_name(metric, name_prefix)
    if _alias_version(mlflow_client(), name, alias) is None:
        return None
    return load_bundle(f"models:/{name}@{alias}")


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at; None when the model or the alias does not exist.

    Any other failure (a server that is down) is raised: taking it for "no champion" would
    let any new model take over.
    """
    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise


def register_champion(
    bundle: ChampionBundle, metric: str, new_score: float | None = None,
    current_score_fn: Callable[[ChampionBundle], float] | None = None, *,
    name_prefix: str = DEFAULT_PREFIX, run_key: str | None = None, parent_run_id: str | None = None,
    experiment_id: str | None = None,
) -> dict:
    """Register ``bundle`` as a new version of ``<name_prefix>-<metric>`` and set its alias.

    The ``champion`` alias moves to the new version when there is no champion yet, or when
    ``new_score`` <= the current champion's score on the same backtest under the same
    champion criterion (``current_score_fn(current_bundle)``; by default ``score_on`` with
    the new bundle's spec, so both are scored by the new run's rule); otherwise the new version becomes the
    ``challenger``. When the current champion cannot be scored on this backtest (another
    frequency, an unloadable model), the new version takes over and the reason is tagged.

    Args:
        bundle: the new champion candidate.
        metric: the resource metric (``cpu``, ``memory``…), part of the model's name.
        new_score: its criterion score on this backtest (default: ``bundle.score``).
        current_score_fn: scores the current champion's bundle on this backtest (default:
            ``score_on`` the frame and spec ``bundle`` was built from).
        run_key: the DAG run's key, tagged on the version.
        parent_run_id: the nightly parent run to log the model in (default: a new run).

    Returns:
        ``version``, ``alias``, ``previous_version``, ``new_mean_mase``, ``champion_mean_mase``,
        ``registered_model``, ``model`` and ``reason``; ``criterion``, ``score`` and
        ``champion_score`` (the ``*_mean_mase`` keys hold the same scores under the default
        criterion, and only the new version's mean MASE under another one).
    """
    with quiet_mlflow():
        return _register(bundle, metric, new_score, current_score_fn, name_prefix, run_key, parent_run_id,
                         experiment_id)


def _register(bundle: ChampionBundle, metric: str, new_score: float | None,
              current_score_fn: Callable[[ChampionBundle], float] | None, name_prefix: str, run_key: str | None,
              parent_run_id: str | None, experiment_id: str | None) -> dict:
    client = mlflow_client()
    name = registered_model_name(metric, name_prefix)
    score = float(bundle.score_value() if new_score is None else new_score)
    criterion = str(getattr(bundle, "criterion", "") or "mean_mase")
    plain = criterion == "mean_mase"
    what = "mean MASE" if plain else f"score ({criterion})"
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
        reason = (f"{what} {score:.6g} {'<=' if alias == CHAMPION_ALIAS else '>'} "
                  f"champion v{previous}'s {current_score:.6g} on the same backtest")
    else:
        alias = CHAMPION_ALIAS if math.isfinite(score) else CHALLENGER_ALIAS

    info, run_id = _log_model(bundle, metric, parent_run_id, experiment_id)
    profile = bundle.profile_for(f"{metric}/") if bundle.profiles else None
    tags = {
        "mean_mase": _fmt(score if plain else bundle.mean_mase), "model": bundle.model, "run_id": run_key or "",
        "mlflow_run_id": run_id, "champion_mean_mase": _fmt(current_score if plain else None),
        "criterion": criterion, "score": _fmt(score), "champion_score": _fmt(current_score),
        "previous_champion": previous or "", "decision": alias,
        "reason": reason or "", "series": str(len(bundle.series)), "horizons": ",".join(bundle.horizons),
        METRIC_TAG: metric,
    }
    if profile is not None:
        tags.update(unit=profile.unit or "", trained_median=_fmt(profile.median), trained_p99=_fmt(profile.high),
                    nonnegative=str(profile.nonnegative).lower(), counter=str(profile.counter).lower())
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, alias, mv.version)
    registered = client.get_registered_model(name)
    if (registered.tags or {}).get(METRIC_TAG) != metric:
        client.set_registered_model_tag(name, METRIC_TAG, metric)
    if not registered.description:
        unit = f" ({profile.unit})" if profile is not None and profile.unit else ""
        client.update_registered_model(
            name, description=f"Foresight champion for {metric}{unit}: given recent history (unique_id, ds, y) of "
                              "that metric, forecasts with intervals; history unlike the training data is refused "
                              "unless predict gets params={'check_history': 'warn'}. Alias 'champion' = best by the "
                              "champion criterion (mean MASE by default); 'challenger' = the latest that did not "
                              "beat it.",
        )
    log.info("registered %s v%s (%s, %s %s) as %s: %s", name, mv.version, bundle.model, what, _fmt(score),
             alias, reason)
    return {
        "registered_model": name, "version": int(mv.version), "alias": alias,
        "previous_version": int(previous) if previous is not None else None,
        "new_mean_mase": _finite(score if plain else bundle.mean_mase),
        "champion_mean_mase": _finite(current_score if plain else None),
        "criterion": criterion, "score": _finite(score), "champion_score": _finite(current_score),
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
    """Log the bundle as an MLflow logged model whose source run is ``parent_run_id`` (or a new run).

    The logged model is created first and filled outside any active run: logged inside the
    parent run, MLflow would copy the history of every metric of that run onto the model,
    one request per metric (a nightly's parent holds hundreds), for each metric's champion.
    The registered version still names the parent as its run, through the model's source run.
    """
    client = mlflow_client()
    if parent_run_id:
        source_run_id = parent_run_id
        experiment = client.get_run(parent_run_id).info.experiment_id
    else:
        experiment = resolve_experiment_id(experiment_id)
        with mlflow.start_run(experiment_id=experiment, nested=mlflow.active_run() is not None,
                              run_name=f"register {metric}") as run:
            source_run_id = run.info.run_id
    with scratch_dir("champion") as tmp:
        path = Path(tmp) / "bundle.pkl"
        with open(path, "wb") as fh:
            pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)
        code = Path(tmp) / "code" / "foresight_lib"
        shutil.copytree(Path(__file__).resolve().parents[1], code,  # the whole foresight_lib package
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        example = bundle.example if bundle.example is not None else None
        tags = {MODEL_TAG: bundle.model, METRIC_TAG: metric}
        logged_name = f"champion-{mlflow_name(metric)}"
        model = mlflow.initialize_logged_model(name=logged_name, source_run_id=source_run_id, tags=tags,
                                               experiment_id=experiment)
        info = mlflow.pyfunc.log_model(
            name=logged_name, python_model=ForesightPyfunc(), artifacts={BUNDLE_ARTIFACT: str(path)},
            signature=_signature(bundle, example), input_example=example,
            pip_requirements=_requirements(bundle), code_paths=[str(code)], model_id=model.model_id,
        )
        return info, source_run_id


def _signature(bundle: ChampionBundle, example: pd.DataFrame | None) -> ModelSignature:
    # unique_id: text, or categorical as a run's frames read from Parquet hold it (MLflow's
    # "string" refuses a categorical column); the bundle takes either.
    inputs = Schema([ColSpec(AnyType(), "unique_id"), ColSpec(AnyType(), "ds"), ColSpec("double", "y")])
    params = ParamSchema([
        ParamSpec("horizons", "string", ",".join(bundle.horizons)),
        ParamSpec("check_history", "string", CHECK_MODES[0]),
        ParamSpec("history_scale_factor", "double", float(bundle.scale_factor)),
        ParamSpec("allow_new_series", "boolean", True),
        ParamSpec("max_gap_points", "long", MAX_GAP_POINTS),
    ])
    outputs = None
    if example is not None and not example.empty:
        outputs = infer_signature(example, bundle.forecast(example, check_history="off")).outputs
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


# ---------------------------------------------------------------------------
# The publish transaction


def snapshot_aliases(metrics: Iterable[str], name_prefix: str = DEFAULT_PREFIX) -> dict[str, dict[str, int | None]]:
    """The ``champion`` and ``challenger`` versions of each metric's registered model, before a publish.

    JSON-serialisable, so a publish can keep it in its journal and ``restore_aliases`` can
    put the aliases back after a failure, even from another process.

    Returns:
        ``{"<prefix>-<metric>": {"champion": version or None, "challenger": version or None}}``.

    Raises:
        RegistryError: the registry cannot be read (a snapshot that guessed would let a
            restore delete live aliases).
    """
    client = mlflow_client()
    out: dict[str, dict[str, int | None]] = {}
    for metric in sorted(set(metrics)):
        name = registered_model_name(metric, name_prefix)
        current = _aliases_of(client, name)
        out[name] = {alias: current.get(alias) for alias in ALIASES}
    return out


def restore_aliases(snapshot: dict[str, dict[str, int | None]]) -> None:
    """Put the aliases back exactly as ``snapshot_aliases`` saw them.

    An alias that did not exist then is deleted; one that pointed at a version points at
    it again. Every alias is attempted before failing.

    Raises:
        RegistryError: some alias could not be restored; the message lists them.
    """
    client = mlflow_client()
    problems = []
    for name, wanted in snapshot.items():
        try:
            current = _aliases_of(client, name)
        except RegistryError as exc:
            problems.append(str(exc))
            continue
        for alias, version_ in wanted.items():
            target = None if version_ is None else int(version_)
            if current.get(alias) == target:
                continue
            try:
                if target is None:
                    client.delete_registered_model_alias(name, alias)
                else:
                    client.set_registered_model_alias(name, alias, str(target))
            except MlflowException as exc:
                problems.append(f"{name}@{alias} -> {target}: {exc.message}")
                continue
            log.info("restored %s@%s to %s (was %s)", name, alias, target or "unset", current.get(alias) or "unset")
    if problems:
        raise RegistryError(
            f"could not restore {len(problems)} alias(es) of the MLflow registry: {'; '.join(problems)[:1500]}; "
            "once the registry is reachable, run the publish recovery again (or set them by hand with "
            "MlflowClient().set_registered_model_alias)"
        )


def discard_versions(versions: Iterable[tuple[str, int] | list]) -> dict[str, list]:
    """Delete the model versions a failed publish registered, so that none is left orphaned.

    Call it after ``restore_aliases``: a version an alias points at is never deleted (it is
    kept and reported); a version already gone is skipped. The MLflow logged model behind a
    deleted version goes with it.

    Args:
        versions: ``(registered model, version)`` pairs (lists, as read back from JSON, too).

    Returns:
        ``{"deleted": [[name, version], …], "kept": [[name, version, aliases], …]}``.

    Raises:
        RegistryError: the registry failed on a version (not for one that does not exist).
    """
    client = mlflow_client()
    deleted: list[list] = []
    kept: list[list] = []
    for name, number in versions:
        number = int(number)
        try:
            mv = client.get_model_version(name, str(number))
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                continue
            raise RegistryError(f"cannot read {name} v{number} to discard it ({exc.message}); run the publish "
                                "recovery again once the registry is reachable") from exc
        if mv.aliases:
            log.warning("%s v%s is kept: aliases %s point at it", name, number, sorted(mv.aliases))
            kept.append([name, number, sorted(mv.aliases)])
            continue
        try:
            client.delete_model_version(name, str(number))
        except MlflowException as exc:
            raise RegistryError(f"cannot delete {name} v{number} ({exc.message}); run the publish recovery again "
                                "once the registry is reachable") from exc
        deleted.append([name, number])
        _delete_logged_model(client, mv.source)
        log.info("discarded %s v%s (registered by a publish that did not complete)", name, number)
    return {"deleted": deleted, "kept": kept}


def versions_from_run(run_id: str, name_prefix: str | None = DEFAULT_PREFIX) -> list[tuple[str, int]]:
    """The registered versions logged in the MLflow run ``run_id`` (e.g. a killed publish's parent run).

    Args:
        run_id: the run the models were logged in.
        name_prefix: only the registered models ``<prefix>-…``; None: all.
    """
    return source_versions([run_id], name_prefix).get(run_id, [])


def source_versions(run_ids: Iterable[str], name_prefix: str | None = None) -> dict[str, list[tuple[str, int]]]:
    """For each run, the registered model versions it is the source of (runs with none are left out).

    Raises:
        RegistryError: the registry cannot be searched.
    """
    client = mlflow_client()
    ids = sorted(set(run_ids))
    prefix = f"{name_prefix.rstrip('-')}-" if name_prefix else None
    out: dict[str, list[tuple[str, int]]] = {}
    for i in range(0, len(ids), _RUN_IDS_PER_SEARCH):
        chunk = ids[i:i + _RUN_IDS_PER_SEARCH]
        listed = ", ".join(f"'{run_id}'" for run_id in chunk)
        token = None
        while True:
            try:
                page = client.search_model_versions(f"run_id IN ({listed})", page_token=token)
            except MlflowException as exc:
                raise RegistryError(f"cannot search the MLflow registry for versions of runs {chunk[:3]}… "
                                    f"({exc.message}); check that the tracking server is up") from exc
            for mv in page:
                if prefix is None or mv.name.startswith(prefix):
                    out.setdefault(mv.run_id, []).append((mv.name, int(mv.version)))
            token = page.token
            if not token:
                break
    return {run_id: sorted(found) for run_id, found in out.items()}


def champion_versions(metrics: Iterable[str], name_prefix: str = DEFAULT_PREFIX) -> dict[str, int | None]:
    """Per metric, the version the ``champion`` alias points at (None: no champion yet).

    What a publish records in its summary, so that the registry and the published files
    can be checked against each other.
    """
    client = mlflow_client()
    out: dict[str, int | None] = {}
    for metric in sorted(set(metrics)):
        out[metric] = _aliases_of(client, registered_model_name(metric, name_prefix)).get(CHAMPION_ALIAS)
    return out


def _aliases_of(client: MlflowClient, name: str) -> dict[str, int]:
    """alias -> version of a registered model; empty when the model does not exist."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return {}
        raise RegistryError(f"cannot read the aliases of registered model {name} ({exc.message}); check that "
                            "the MLflow tracking server is up") from exc
    return {alias: int(number) for alias, number in (model.aliases or {}).items()}


def _delete_logged_model(client: MlflowClient, source: str | None) -> None:
    """Delete the MLflow logged model a discarded version came from (``models:/m-…``), best effort."""
    if not source or not source.startswith("models:/m-"):
        return
    model_id = source[len("models:/"):].split("/", 1)[0]
    try:
        client.delete_logged_model(model_id)
    except MlflowException as exc:
        log.warning("logged model %s of a discarded version not deleted: %s", model_id, exc.message)
