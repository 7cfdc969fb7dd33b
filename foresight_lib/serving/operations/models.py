"""The registered champions: versions, aliases, backtest scores, and manual activation.

``activate`` moves a metric's ``champion`` alias to a chosen version. What is published
is the aliases together with ``latest/summary.json`` (``champion_versions``), so an
activation changes both as one step of the publish protocol
(``foresight_lib.runs.transaction``): under the data root's publish lock, after
finishing or undoing any interrupted publish, with a publish journal written first. The
journal keeps the aliases as they were; the new ``summary.json`` is staged beside the run
folder's copy and ``latest/``'s and renamed over both once the alias has moved. A failure
before the renames puts the alias back; a process killed on the way is finished or undone
by the next publish's ``recover``, like an interrupted publish. The nightly run then
compares its new model against the activated champion, as against any other.

After the switch, ``previous_champion`` points at the version that was champion, and the
activated version is tagged with who activated it, when and what it replaced.
"""
from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from foresight_lib.serving.operations import OperationError, Settings
from foresight_lib.serving.operations.predict import CACHE, ModelCache, model_or_404, version_or_404

log = logging.getLogger(__name__)

PREVIOUS_ALIAS = "previous_champion"
ACTIVATED_BY_TAG = "foresight.activated_by"
ACTIVATED_AT_TAG = "foresight.activated_at"
REPLACED_TAG = "foresight.activated_replacing"
ACTIVATION_WAIT_S = 30.0
"""How long an activation waits for a publish in progress before answering 409."""
MAX_VERSIONS = 50
_HORIZON_KEY = re.compile(r"^(?P<score>[a-z]+(?:_\d+)?)_(?P<horizon>\d+[a-z]+)$")


class HorizonScores(BaseModel):
    mae: float | None = None
    rmse: float | None = None
    mase: float | None = None
    smape: float | None = None
    coverage_80: float | None = None
    coverage_95: float | None = None
    width_80: float | None = None
    width_95: float | None = None


class Backtest(BaseModel):
    """A version's scores on the backtest of the run that registered it."""

    mean_mase: float | None = None
    criterion: str = Field("mean_mase", description="The champion criterion ``score`` was made by")
    score: float | None = Field(None, description="The score the registry's gate compared (lower wins); "
                                                  "the mean MASE under the default criterion")
    horizons: dict[str, HorizonScores] = Field(default_factory=dict, description="horizon (5m, 15m…) -> scores")
    source_run: str | None = Field(None, description="The MLflow run the scores were read from")


class VersionInfo(BaseModel):
    version: int
    aliases: list[str]
    model: str | None = Field(None, description="The model class (naive, arima, ensemble…)")
    created_at: datetime | None = None
    airflow_run: str | None = Field(None, description="The Airflow run (data interval key) that registered it")
    mlflow_run_id: str | None = Field(None, description="The MLflow run it was logged in")
    backtest: Backtest
    tags: dict[str, str] = Field(default_factory=dict)


class MetricModels(BaseModel):
    metric: str
    registered_model: str
    aliases: dict[str, int]
    versions: list[VersionInfo]


class ModelsResponse(BaseModel):
    models: list[MetricModels]


class ActivationResponse(BaseModel):
    metric: str
    registered_model: str
    version: int
    previous_version: int | None
    changed: bool = Field(description="False when the version was already the champion")
    activated_by: str
    activated_at: datetime
    summary: str = Field(description="Where the new champion_versions were recorded")


# ---------------------------------------------------------------------------
# Reading


def _client():
    from foresight_lib.tracking.mlflow_store import mlflow_client

    return mlflow_client()


def list_models(settings: Settings, metric: str | None = None, max_versions: int = MAX_VERSIONS) -> ModelsResponse:
    """Every registered model of the prefix (or one metric's), its aliases and newest versions."""
    from mlflow.exceptions import MlflowException

    from foresight_lib.tracking.registry import METRIC_TAG, registered_model_name

    prefix = f"{settings.name_prefix}-"
    client = _client()
    try:
        if metric is not None:
            found = [model_or_404(registered_model_name(metric, settings.name_prefix), metric)]
        else:
            found = list(client.search_registered_models(f"name LIKE '{prefix}%'", max_results=1000))
        out = []
        for model in sorted(found, key=lambda m: m.name):
            versions = client.search_model_versions(f"name = '{model.name}'", max_results=max_versions,
                                                    order_by=["version_number DESC"])
            this_metric = (model.tags or {}).get(METRIC_TAG) or model.name[len(prefix):]  # the exact name
            out.append(MetricModels(
                metric=this_metric, registered_model=model.name,
                aliases={a: int(v) for a, v in (model.aliases or {}).items()},
                versions=[version_info(mv, this_metric, model.aliases or {}) for mv in versions],
            ))
    except MlflowException as exc:
        raise OperationError(503, f"cannot read the MLflow registry ({str(exc)[:300]})") from exc
    return ModelsResponse(models=out)


def version_info(mv, metric: str, aliases: dict[str, Any] | None = None) -> VersionInfo:
    tags = dict(mv.tags or {})
    names = sorted(a for a, v in (aliases or {}).items() if str(v) == str(mv.version)) if aliases is not None \
        else sorted(getattr(mv, "aliases", []) or [])
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC) if mv.creation_timestamp else None
    return VersionInfo(
        version=int(mv.version), aliases=names, model=tags.get("model"), created_at=created,
        airflow_run=tags.get("run_id") or None, mlflow_run_id=tags.get("mlflow_run_id") or mv.run_id or None,
        backtest=backtest_of(mv, metric), tags=tags,
    )


def version_metrics(settings: Settings, metric: str, version: int) -> VersionInfo:
    """One version's details and backtest scores; 404 for an unknown metric or version."""
    name = f"{settings.name_prefix}-{metric}"
    model_or_404(name, metric)
    mv = version_or_404(name, version)
    _check_metric(mv, name, metric)
    return version_info(mv, metric, None)


def backtest_of(mv, metric: str) -> Backtest:
    """Scores per horizon from the version's source run: the nightly parent and its model's child run."""
    from mlflow.exceptions import MlflowException

    from foresight_lib.tracking.mlflow_runs import PARENT_TAG, metric_key
    from foresight_lib.tracking.registry import MODEL_TAG, is_missing

    tags = dict(mv.tags or {})
    run_id = mv.run_id or tags.get("mlflow_run_id")
    out = Backtest(mean_mase=_float(tags.get("mean_mase")), criterion=tags.get("criterion") or "mean_mase",
                   score=_float(tags.get("score")), source_run=run_id)
    if not run_id:
        return _with_score(out)
    client = _client()
    key = f"{metric_key(metric)}/"
    values: dict[str, float] = {}
    try:
        parent = client.get_run(run_id)
        values.update({k[len(key):]: v for k, v in parent.data.metrics.items() if k.startswith(key)})
        model = tags.get("model")
        if model:
            children = client.search_runs([parent.info.experiment_id], max_results=1,
                                          filter_string=f"tags.`{PARENT_TAG}` = '{run_id}' and "
                                                        f"tags.`{MODEL_TAG}` = '{model}'")
            for child in children:
                values.update({k[len(key):]: v for k, v in child.data.metrics.items() if k.startswith(key)})
    except MlflowException as exc:
        if not is_missing(exc):
            raise OperationError(503, f"cannot read MLflow run {run_id} ({str(exc)[:300]})") from exc
        return _with_score(out)
    horizons: dict[str, dict[str, float]] = {}
    for name, value in values.items():
        match = _HORIZON_KEY.match(name)
        if match and match["score"] in HorizonScores.model_fields:
            horizons.setdefault(match["horizon"], {})[match["score"]] = _float(value)
    if out.mean_mase is None:
        out.mean_mase = _float(values.get("mean_mase", values.get("champion_mean_mase")))
    out.horizons = {h: HorizonScores(**s) for h, s in sorted(horizons.items(), key=lambda kv: _minutes(kv[0]))}
    return _with_score(out)


def _with_score(out: Backtest) -> Backtest:
    """A version registered before scores were tagged: under the default criterion its score is its mean MASE."""
    if out.score is None and out.criterion == "mean_mase":
        out.score = out.mean_mase
    return out


def _check_metric(mv, name: str, metric: str) -> None:
    """409 when the version was trained for another metric than the registered model's."""
    from foresight_lib.tracking.registry import METRIC_TAG

    trained = (mv.tags or {}).get(METRIC_TAG)
    source = mv.source or ""
    if trained is None and source.startswith("models:/m-"):
        try:
            trained = (_client().get_logged_model(source[len("models:/"):].split("/", 1)[0]).tags or {}).get(METRIC_TAG)
        except Exception:  # noqa: BLE001 - no logged model: nothing to check against
            trained = None
    if trained and trained != metric:
        raise OperationError(409, f"{name} v{mv.version} was trained for metric {trained!r}, not {metric!r}: it "
                                  f"cannot be the champion of {metric}")


# ---------------------------------------------------------------------------
# Activation


def activate(settings: Settings, metric: str, version: int, user: str, cache: ModelCache = CACHE,
             wait_s: float = ACTIVATION_WAIT_S) -> ActivationResponse:
    """Make ``version`` the champion of ``metric``, recorded in ``latest/summary.json`` (see the module).

    Raises:
        OperationError: 404 unknown metric or version; 409 a version of another metric, one
            without backtest scores, nothing published yet, or a publish holding the lock.
    """
    import pandas as pd

    from foresight_lib.errors import RunLocked
    from foresight_lib.runs import duration
    from foresight_lib.runs import transaction as publishing
    from foresight_lib.runs.storage import DataRoot
    from foresight_lib.tracking import model_registry, registry

    name = registry.registered_model_name(metric, settings.name_prefix)
    model_or_404(name, metric)
    mv = version_or_404(name, version)
    _check_metric(mv, name, metric)
    scores = backtest_of(mv, metric)
    if not scores.horizons:
        raise OperationError(409, f"{name} v{version} has no backtest scores (none in its source run "
                                  f"{scores.source_run or '-'}); only a version registered by a nightly run can be "
                                  "the champion")
    root = DataRoot(settings.data_root)
    try:
        lock, token = publishing.publish_lock(root, duration(settings.lock_timeout), pd.Timedelta(seconds=wait_s),
                                              f"activate {name} v{version} by {user}")
    except RunLocked as exc:
        raise OperationError(409, f"a publish is in progress; try the activation again later ({exc})") from exc
    try:
        publishing.recover(root, registry=model_registry)
        publishing.remove_temp_files(root)
        result = _activate_locked(root, settings, metric, name, version, user, (mv.tags or {}).get("model"))
    finally:
        lock.release(token)
    cache.forget_aliases(name)
    return result


def _activate_locked(root, settings: Settings, metric: str, name: str, version: int, user: str,
                     model: str | None = None) -> ActivationResponse:
    from foresight_lib.runs import transaction as publishing
    from foresight_lib.runs.storage import RunStore
    from foresight_lib.tracking import model_registry, registry

    summary = root.read_latest_json("summary.json")
    if not summary or not summary.get("run_key"):
        raise OperationError(409, f"nothing is published under {settings.data_root} yet: an activation is recorded "
                                  "in latest/summary.json beside the published forecasts; let a nightly run publish "
                                  "first")
    client = _client()
    snapshot = registry.snapshot_aliases([metric], settings.name_prefix)
    previous = snapshot[name].get(registry.CHAMPION_ALIAS)
    now = datetime.now(UTC)
    if previous == version:
        return ActivationResponse(metric=metric, registered_model=name, version=version, previous_version=previous,
                                  changed=False, activated_by=user, activated_at=now,
                                  summary=root.latest_uri("summary.json"))
    record = {"metric": metric, "version": version, "model": model, "previous_version": previous, "by": user,
              "at": now.isoformat()}
    summary = {**summary, "champion_versions": {**(summary.get("champion_versions") or {}), metric: version},
               "activations": [*(summary.get("activations") or []), record]}
    data = json.dumps(summary, indent=2, default=str).encode("utf-8")
    run_folder = RunStore(root.data_root, str(summary["run_key"]), filesystem=root.fs)
    targets = [run_folder.path("summary.json"), root._join("latest", "summary.json")]
    journal = publishing.Journal(root=root, run_key=f"activate-{name}-v{version}", attempt="", aliases=snapshot,
                                 name_prefix=settings.name_prefix)
    journal.save()
    try:
        client.set_registered_model_alias(name, registry.CHAMPION_ALIAS, str(version))
        journal.staged = [["summary.json", _stage(root, target, data), target] for target in targets]
        journal.phase = "switching"
        journal.save()
    except BaseException as exc:
        if journal.phase != "switching":
            try:
                publishing.undo(journal, registry=model_registry)
            except Exception as undo_exc:  # noqa: BLE001 - the journal stays for the next publish's recover
                log.error("could not undo the activation of %s v%s: %s", name, version, undo_exc)
        if isinstance(exc, OperationError):
            raise
        raise OperationError(503, f"activating {name} v{version} failed and was undone: {exc}") from exc
    publishing.finish(journal)
    try:
        if previous is not None:
            client.set_registered_model_alias(name, PREVIOUS_ALIAS, str(previous))
        client.set_model_version_tag(name, str(version), ACTIVATED_BY_TAG, user)
        client.set_model_version_tag(name, str(version), ACTIVATED_AT_TAG, now.isoformat())
        client.set_model_version_tag(name, str(version), REPLACED_TAG, "" if previous is None else str(previous))
    except Exception as exc:  # noqa: BLE001 - the activation stands; the record is best effort
        log.warning("activated %s v%s but could not record it on the version: %s", name, version, exc)
    log.info("%s activated %s v%s as champion (was v%s)", user, name, version, previous)
    return ActivationResponse(metric=metric, registered_model=name, version=version, previous_version=previous,
                              changed=True, activated_by=user, activated_at=now,
                              summary=root.latest_uri("summary.json"))


def _stage(root, target: str, data: bytes) -> str:
    """Write ``data`` beside ``target`` under a temporary name (renamed over it by the switch)."""
    import uuid

    from foresight_lib.runs.storage import TMP_PREFIX

    folder, base = target.rsplit("/", 1)
    tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}-{base}"
    root.fs.create_dir(folder, recursive=True)
    with root.fs.open_output_stream(tmp) as out:
        out.write(data)
    return tmp


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and out not in (float("inf"), float("-inf")) else None


def _minutes(horizon: str) -> float:
    from foresight_lib.horizons import parse_duration

    try:
        return parse_duration(horizon).total_seconds()
    except Exception:  # noqa: BLE001 - an odd label sorts last
        return float("inf")
