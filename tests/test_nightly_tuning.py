"""Tuning in the nightly: tuned once, logged to the model's MLflow child run, reused, never leaked to a backfill."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from foresight_lib import pipeline
from foresight_lib.tracking.mlflow_runs import RUN_KEY_TAG
from foresight_lib.tracking.registry import MODEL_TAG

pytestmark = pytest.mark.slow

NEW, LATER, OLD = "2024-03-15T02:00:00", "2024-03-16T02:00:00", "2024-03-13T02:00:00"
SMALL = {"lags": 6, "short_window": 6, "lookback_days": 2, "num_leaves": 8, "n_estimators": 30,
         "learning_rate": 0.1, "min_data_in_leaf": 10}


def _settings(root: Path) -> dict:
    return {"history_days": 3, "data_root": str(root / "data"),
            "models": ["naive", "seasonal_naive", "lightgbm", "ensemble"], "model_params": {"lightgbm": SMALL},
            "tuning": {"enabled": True, "models": ["lightgbm"], "trials": 2, "timeout_s": 300},
            "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "art")}}


def _lightgbm_run(root: Path, run_key_date: str):
    """The ``lightgbm`` child run of the parent run of ``run_key_date``."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_key = pipeline.run_key_for(run_key_date)
    experiment = client.get_experiment_by_name("foresight-nightly")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{MODEL_TAG}` = 'lightgbm'")
    (run,) = [r for r in runs if run_key in r.data.tags.get(RUN_KEY_TAG, "")]
    return client, run


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("nightly-tuning")
    pipeline.run_nightly(NEW, _settings(root))
    return root


def test_the_first_nightly_tunes_and_logs_before_and_after_to_the_child_run(tuned):
    stored = json.loads((tuned / "data" / "tuning" / "lightgbm.json").read_text())
    assert stored["base_params"] == SMALL and stored["n_trials"] == 2
    assert stored["mase_after"] <= stored["mase_before"]
    client, run = _lightgbm_run(tuned, NEW)
    assert run.data.tags["foresight.tuning"] == "tuned" and run.data.params["tuning.why"] == "never tuned"
    assert run.data.metrics["tuning_validation_mase_after"] == pytest.approx(stored["mase_after"])
    assert run.data.metrics["tuning_validation_mase_before"] == pytest.approx(stored["mase_before"])
    for key, value in stored["best_params"].items():  # the run used (and logged) the tuned parameters
        assert run.data.params[f"model.{key}"] == str(value), key
    record = json.loads(Path(client.download_artifacts(run.info.run_id, "tuning/tuning.json")).read_text())
    assert len(record["trials"]) == 2


def test_the_next_nightly_reuses_and_a_backfill_never_takes_later_parameters(tuned):
    path = tuned / "data" / "tuning" / "lightgbm.json"
    before = path.read_bytes()
    pipeline.run_nightly(LATER, _settings(tuned))
    _, later = _lightgbm_run(tuned, LATER)
    assert later.data.tags["foresight.tuning"] == "reused"
    assert path.read_bytes() == before

    pipeline.run_nightly(OLD, _settings(tuned))
    _, old = _lightgbm_run(tuned, OLD)
    assert old.data.tags["foresight.tuning"] == "tuned"
    assert "after this run's validation split" in old.data.params["tuning.why"]
    assert path.read_bytes() == before, "a backfill keeps the parameters the nightly reuses"
