"""Compare what two nightly runs published: the leaderboard, champions, forecasts and recommendations.

Used to check that a change leaves the nightly's choices unchanged (e.g. the champion rule
moved to one home): run the demo nightly once on each version of the code, each under its
own data root, then compare the two roots' ``latest/``. Run ids, attempts, MLflow ids and
paths are left out; every value must be identical (no tolerance).

    python -m foresight_lib.pipeline run 2024-03-15T02:00:00 --set '{"data_root": "/tmp/a/data",
        "mlflow": {"tracking_uri": "sqlite:////tmp/a/mlflow.db", "artifact_location": "/tmp/a/artifacts"},
        "models": ["naive", "seasonal_naive", "ets", "fourier", "ensemble"]}'
    (the same with /tmp/b on the other version; run each twice to exercise the registry's gate)
    python benchmarks/published_unchanged.py /tmp/a/data /tmp/b/data \
        [sqlite:////tmp/a/mlflow.db sqlite:////tmp/b/mlflow.db]

With the two MLflow stores, the registered versions' scores and decisions and the nightly
parent runs' champion tags and MASE metrics are compared too.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

FRAMES = ("leaderboard", "forecasts", "recommendations")
REGISTRATION_KEYS = ("registered_model", "version", "alias", "previous_version", "new_mean_mase",
                     "champion_mean_mase", "model", "reason")
"""The registration fields that existed before the champion rule had a setting (values, not ids)."""


def published(data_root: str | Path) -> dict:
    """The values a run published under ``data_root``'s ``latest/``."""
    latest = Path(data_root) / "latest"
    summary = json.loads((latest / "summary.json").read_text())
    return {
        "frames": {name: pd.read_parquet(latest / f"{name}.parquet") for name in FRAMES},
        "summary": {
            "champion": summary["champion"],
            "leaderboard": summary["leaderboard"],
            "metric_leaderboard": summary["metric_leaderboard"],
            "registrations": {m: {k: r.get(k) for k in REGISTRATION_KEYS}
                              for m, r in (summary.get("registrations") or {}).items()},
            "champion_versions": summary.get("champion_versions"),
            "series": summary["series"], "forecast_rows": summary["forecast_rows"],
        },
    }


VERSION_TAGS = ("mean_mase", "champion_mean_mase", "model", "decision", "reason", "previous_champion", "series")
PARENT_TAG_PREFIX = "foresight.champion"


def mlflow_values(tracking_uri: str) -> dict:
    """Registered versions' scores and decisions, and each nightly parent's champion tags and MASE metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions = {}
    for model in client.search_registered_models():
        for mv in client.search_model_versions(f"name = '{model.name}'"):
            versions[f"{model.name} v{mv.version}"] = {k: mv.tags.get(k) for k in VERSION_TAGS}
        versions[f"{model.name} aliases"] = dict(model.aliases or {})
    parents = []
    for experiment in client.search_experiments():
        runs = client.search_runs([experiment.experiment_id], "tags.`foresight.run_id` = '2024-03-15T020000Z'",
                                  order_by=["attributes.start_time ASC"])
        for run in runs:
            if run.data.tags.get("mlflow.parentRunId"):
                continue
            parents.append({
                "tags": {k: v for k, v in run.data.tags.items()
                         if k.startswith(PARENT_TAG_PREFIX) and k != "foresight.champion_criterion"},
                "metrics": {k: v for k, v in run.data.metrics.items() if "mase" in k},
            })
    return {"versions": versions, "parents": parents}


def differences(before: dict, after: dict) -> list[str]:
    """What differs between two ``published`` values (empty: identical)."""
    out = []
    for name in FRAMES:
        try:
            pd.testing.assert_frame_equal(before["frames"][name], after["frames"][name], check_exact=True)
        except AssertionError as exc:
            out.append(f"{name}: {str(exc).splitlines()[0:3]}")
    for key, value in before["summary"].items():
        if after["summary"].get(key) != value:
            out.append(f"summary.json {key}: {value!r} != {after['summary'].get(key)!r}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4):
        print(__doc__)
        return 2
    before, after = published(argv[0]), published(argv[1])
    found = differences(before, after)
    if len(argv) == 4:
        old, new = mlflow_values(argv[2]), mlflow_values(argv[3])
        found += [f"MLflow {key}: {old[key]!r} != {new[key]!r}" for key in old if old[key] != new[key]]
        print(f"MLflow: {len(old['versions'])} version/alias entries, {len(old['parents'])} parent runs compared")
    for line in found:
        print("DIFFERENT", line)
    if not found:
        champions = {m: r["model"] for m, r in before["summary"]["registrations"].items()}
        rows = {name: len(frame) for name, frame in before["frames"].items()}
        print(f"identical: champion {before['summary']['champion']}, per metric {champions}, rows {rows}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
