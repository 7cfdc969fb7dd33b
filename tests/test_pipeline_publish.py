"""Who may move what is published: only the newest complete run, and only as a whole."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from foresight_lib import pipeline
from foresight_lib.errors import SourceError
from foresight_lib.runs.storage import DataRoot, RunStore

pytestmark = pytest.mark.slow

NEW, OLD, LATER = "2024-03-15T02:00:00", "2024-03-14T02:00:00", "2024-03-16T02:00:00"
MODELS = ["naive", "seasonal_naive", "ensemble"]


def _settings(root: Path) -> dict:
    return {"history_days": 3, "data_root": str(root / "data"), "models": MODELS,
            "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "art")}}


def _latest(root: Path) -> dict[str, bytes]:
    folder = root / "data" / "latest"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _registry(root: Path) -> dict[str, dict]:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {m.name: {"aliases": dict(m.aliases or {}),
                     "versions": sorted(int(v.version) for v in client.search_model_versions(f"name='{m.name}'"))}
            for m in client.search_registered_models()}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish-rules")
    first = pipeline.run_nightly(NEW, _settings(root))
    return {"root": root, "first": first, "latest": _latest(root), "registry": _registry(root)}


def test_the_first_run_publishes_and_records_the_champions(published):
    root = published["root"]
    assert published["first"]["published"] is True
    summary = pipeline.latest_summary(_settings(root))
    champions = {name: int(v["aliases"]["champion"]) for name, v in published["registry"].items()}
    assert {f"foresight-{m}": v for m, v in summary["champion_versions"].items()} == champions
    assert set(published["latest"]) >= {"forecasts.parquet", "actuals.parquet", "summary.json", "_manifest.json"}
    forecasts = DataRoot(str(root / "data")).read_latest("forecasts")
    marked = forecasts[forecasts["champion"]]
    metric = marked["unique_id"].str.split("/").str[0]
    assert marked.assign(metric=metric).groupby("metric")["model"].nunique().eq(1).all(), "one champion per metric"
    assert set(metric) == set(forecasts["unique_id"].str.split("/").str[0])


def test_a_backfill_of_an_older_date_leaves_latest_and_the_aliases(published, caplog):
    root = published["root"]
    with caplog.at_level("INFO", logger="foresight_lib.runs.transaction"):
        out = pipeline.run_nightly(OLD, _settings(root))
    assert out["published"] is False and "holds a newer run" in out["publish_reason"]
    assert "switching latest/ to the publish of" not in caplog.text, "its log says what it does"
    assert "not switching latest/" in caplog.text
    assert out["registrations"] == {}
    assert _latest(root) == published["latest"]
    assert _registry(root) == published["registry"]
    assert RunStore(str(root / "data"), pipeline.run_key_for(OLD)).exists("forecasts"), "its own run folder is kept"


def test_an_ad_hoc_run_stays_out_of_production_unless_asked(published):
    root = published["root"]
    out = pipeline.run_nightly(LATER, _settings(root), params={"models": ["naive", "ensemble"]})
    assert out["published"] is False and "ad-hoc run" in out["publish_reason"]
    assert _latest(root) == published["latest"]
    assert _registry(root) == published["registry"]

    forced = pipeline.run_nightly(LATER, _settings(root), params={"models": ["naive", "ensemble"],
                                                                  "publish": "always"})
    assert forced["published"] is True
    assert DataRoot(str(root / "data")).latest_manifest()["data_interval_end"].startswith("2024-03-16")


def test_a_publish_that_fails_after_registering_rolls_the_aliases_back(tmp_path, monkeypatch):
    pipeline.run_nightly(NEW, _settings(tmp_path))
    before = {"latest": _latest(tmp_path), "registry": _registry(tmp_path),
              "run": RunStore(str(tmp_path / "data"), pipeline.run_key_for(NEW)).read_bytes("summary.json")}

    def disk_full(self, names):
        raise SourceError("cannot stage the published files: [Errno 28] No space left on device")

    monkeypatch.setattr(RunStore, "stage_latest", disk_full)
    with pytest.raises(SourceError, match="No space left"):
        pipeline.run_nightly(LATER, _settings(tmp_path))
    assert _latest(tmp_path) == before["latest"]
    assert _registry(tmp_path) == before["registry"], "aliases restored and the new versions deleted"
    assert RunStore(str(tmp_path / "data"), pipeline.run_key_for(NEW)).read_bytes("summary.json") == before["run"]
    assert not RunStore(str(tmp_path / "data"), pipeline.run_key_for(LATER)).exists("summary.json")
    assert not (tmp_path / "data" / "locks" / "publish_journal.json").exists()
    assert not list((tmp_path / "data").rglob(".tmp-*"))
