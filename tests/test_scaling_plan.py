"""The scaling plan between two nightly runs: the next windows from the latest data, beside the nightly's."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from prom_server import ScriptedServer
from prometheus_client.parser import text_string_to_metric_families

from foresight_lib import pipeline, scaling_plan
from foresight_lib.config import load_config
from foresight_lib.errors import SourceError, ValidationFailed
from foresight_lib.rightsizing import plan
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.runs.storage import DataRoot, RunStore
from foresight_lib.serving import dashboard, exposition

END = pd.Timestamp("2024-03-15T10:30:00Z")
HALF_HOUR = pd.Timedelta("30min")


def _settings(root: Path, **extra) -> dict:
    """The demo source, three days of history, everything under ``root``."""
    return {"data_root": str(root / "data"), "history_days": 3, **extra}


def _latest_bytes(root: Path, name: str) -> bytes:
    return (root / "data" / "latest" / name).read_bytes()


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    return root, scaling_plan.run_plan(END, _settings(root))


def test_the_plan_sizes_the_next_windows_from_the_interval_end(planned):
    root, out = planned
    data = DataRoot(str(root / "data"))
    windows = data.read_latest(scaling_plan.SCALING_PLAN)
    assert list(windows.columns) == rs.RECOMMENDATION_COLUMNS
    assert set(windows["kind"]) == {"window"}
    sized = windows[windows["request"].notna()]
    assert len(sized) == out["sized"] > 0 and out["windows"] == len(windows)
    assert sorted(sized["lead"].unique()) == ["0m", "30m", "60m", "90m"]  # rightsizing.plan_windows: 4
    leads = sized["lead"].str.rstrip("m").astype(int) * pd.Timedelta("1min")
    assert (sized["period_start"] == END + leads).all()
    assert (sized["period_end"] - sized["period_start"] == HALF_HOUR).all()
    assert (sized["request"] > 0).all() and (sized["limit"] >= sized["request"]).all()
    assert out["first_window"] == END.isoformat()
    # the demo's broken exporter was quarantined by validation, so every series that reached the plan is sized
    assert windows["reason"].isna().all()


def test_the_plan_leaves_the_nightly_publish_alone(planned):
    root, out = planned
    data = DataRoot(str(root / "data"))
    assert data.latest_manifest() is None  # no nightly manifest appeared
    assert not (root / "data" / "runs").exists()
    manifest = data.latest_manifest(scaling_plan.PLAN_MANIFEST)
    assert manifest["run_id"] == out["run_key"] == pipeline.run_key_for(END)
    assert manifest["names"] == [scaling_plan.SCALING_PLAN]
    assert (root / "data" / "plans" / out["run_key"] / "validation" / "report.html").exists()


def test_the_plan_sizes_what_the_nightly_would_at_the_same_time(planned, tmp_path):
    """Same source, window of history, checks and features: the nightly's windows at that time, row for row."""
    root, _ = planned
    run = pipeline.build_features(pipeline.validate(pipeline.extract("nightly", None, END,
                                                                     overrides=_settings(tmp_path))))
    cfg, store = pipeline.open_run(run)
    nightly = pipeline.recommend(cfg, store.read_frame(pipeline.FEATURES), store.read_frame(pipeline.FEATURE_SERIES))
    expected = nightly[nightly["kind"] == "window"].reset_index(drop=True)
    got = DataRoot(str(root / "data")).read_latest(scaling_plan.SCALING_PLAN)
    pd.testing.assert_frame_equal(got.astype({"unique_id": str}), expected.astype({"unique_id": str}),
                                  check_dtype=False)


def test_a_rerun_is_idempotent_and_only_the_newest_folders_are_kept(tmp_path):
    settings = _settings(tmp_path, rightsizing={"plan_keep_runs": 2})
    for when in (END, END + HALF_HOUR, END + 2 * HALF_HOUR):
        out = scaling_plan.run_plan(when, settings)
    first = DataRoot(str(tmp_path / "data")).read_latest(scaling_plan.SCALING_PLAN)
    assert first["period_start"].min() == END + 2 * HALF_HOUR
    assert out["pruned"] == 1
    again = scaling_plan.run_plan(END + 2 * HALF_HOUR, settings)
    assert again["pruned"] == 0
    pd.testing.assert_frame_equal(DataRoot(str(tmp_path / "data")).read_latest(scaling_plan.SCALING_PLAN), first)
    folders = sorted(p.name for p in (tmp_path / "data" / "plans").iterdir())
    assert folders == [pipeline.run_key_for(END + HALF_HOUR), pipeline.run_key_for(END + 2 * HALF_HOUR)]


def test_a_failed_plan_run_leaves_the_previous_plan(tmp_path):
    scaling_plan.run_plan(END, _settings(tmp_path))
    before = (_latest_bytes(tmp_path, "scaling_plan.parquet"), _latest_bytes(tmp_path, scaling_plan.PLAN_MANIFEST))
    impossible = {"min": 1e15, "max": 1e16, "mostly": 1.0}
    every_rule = [*load_config().validation.ranges, "*"]
    failing = _settings(tmp_path, validation={"max_failed_share": 0.3,
                                              "ranges": {k: impossible for k in every_rule}})
    with pytest.raises(ValidationFailed):
        scaling_plan.run_plan(END + HALF_HOUR, failing)
    after = (_latest_bytes(tmp_path, "scaling_plan.parquet"), _latest_bytes(tmp_path, scaling_plan.PLAN_MANIFEST))
    assert after == before


def test_a_prometheus_that_is_down_fails_the_plan_and_keeps_the_previous_one(tmp_path):
    scaling_plan.run_plan(END, _settings(tmp_path))
    before = (_latest_bytes(tmp_path, "scaling_plan.parquet"), _latest_bytes(tmp_path, scaling_plan.PLAN_MANIFEST))
    with ScriptedServer(lambda path, params: (503, "service unavailable")) as down:
        source = {"kind": "prometheus", "prometheus": {"url": down.url, "retries": 1, "timeout_s": 5}}
        with pytest.raises(SourceError, match="503"):
            scaling_plan.run_plan(END + HALF_HOUR, _settings(tmp_path, source=source))
    after = (_latest_bytes(tmp_path, "scaling_plan.parquet"), _latest_bytes(tmp_path, scaling_plan.PLAN_MANIFEST))
    assert after == before


# ---------------------------------------------------------------------------
# What is served: the newer window plan beside the nightly's daily sizes


def _recommendation(kind: str, start: pd.Timestamp, request: float, lead: str = "0m") -> dict:
    row = dict.fromkeys(rs.RECOMMENDATION_COLUMNS)
    length = pd.Timedelta("1D") if kind == "daily" else HALF_HOUR
    row.update({"unique_id": "container_cpu_usage_cores/shop/web", "entity": "shop/web",
                "metric": "container_cpu_usage_cores", "resource": "cpu", "unit": "cores", "model": "naive",
                "profile": "balanced", "kind": kind, "lead": lead, "period_start": start,
                "period_end": start + length, "request": request, "limit": 2 * request, "replicas": 1})
    return row


def _frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=rs.RECOMMENDATION_COLUMNS)


NIGHT = pd.Timestamp("2024-03-15T02:00:00Z")
NIGHTLY = _frame(_recommendation("daily", NIGHT, 1.5), _recommendation("window", NIGHT, 0.5),
                 _recommendation("window", NIGHT + HALF_HOUR, 0.6, "30m"))


def test_the_windows_come_from_whichever_plan_reaches_further():
    later = _frame(_recommendation("window", END, 0.9), _recommendation("window", END + HALF_HOUR, 1.1, "30m"))
    merged = plan.current_windows(NIGHTLY, later)
    assert merged.loc[merged["kind"] == "daily", "request"].tolist() == [1.5]
    assert merged.loc[merged["kind"] == "window", "request"].tolist() == [0.9, 1.1]
    older = _frame(_recommendation("window", NIGHT - 4 * HALF_HOUR, 9.0))
    assert plan.current_windows(NIGHTLY, older) is NIGHTLY  # a stale plan: the nightly ran since
    assert plan.current_windows(NIGHTLY, NIGHTLY.iloc[1:]) is NIGHTLY  # a tie goes to the nightly
    assert plan.current_windows(NIGHTLY, None) is NIGHTLY
    assert plan.current_windows(None, later).equals(later)


def _gauges(root: Path) -> dict[tuple, float]:
    body, _ = exposition.metrics_response(str(root))
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "foresight_recommendation":
                labels = sample.labels
                out[(labels["kind"], labels["lead"], labels["value_type"])] = sample.value
    return out


def test_the_gauges_follow_the_scaling_plan_between_two_nightly_runs(tmp_path):
    root = tmp_path / "data"
    nightly = RunStore(str(root), "2024-03-15T020000Z")
    nightly.write_frame(pipeline.RECOMMENDATIONS, NIGHTLY)
    nightly.publish_latest([pipeline.RECOMMENDATIONS])
    assert _gauges(root)[("window", "0m", "request")] == 0.5

    half_past_ten = RunStore(str(root), "2024-03-15T103000Z", folder=scaling_plan.PLAN_FOLDER)
    half_past_ten.write_frame(scaling_plan.SCALING_PLAN, _frame(_recommendation("window", END, 0.9)))
    half_past_ten.publish_latest([scaling_plan.SCALING_PLAN], manifest_name=scaling_plan.PLAN_MANIFEST)
    gauges = _gauges(root)
    body, _ = exposition.metrics_response(str(root))
    published = [s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples
                 if s.name == "foresight_scaling_plan_published_timestamp_seconds"]
    manifest = DataRoot(str(root)).latest_manifest(scaling_plan.PLAN_MANIFEST)
    assert published == [pd.Timestamp(manifest["published_at"]).timestamp()]  # for an alert on a stale plan
    state = dashboard.overview(str(root))["plan"]  # what the dashboard says of the plan
    assert state["published"] and state["published_at"] == pd.Timestamp(manifest["published_at"]).isoformat()
    assert state["entities"] == 1 and state["stale"] is False
    assert gauges[("window", "0m", "request")] == 0.9
    assert gauges[("window", "0m", "period_start_timestamp_seconds")] == END.timestamp()
    assert ("window", "30m", "request") not in gauges  # the nightly's windows are replaced, not mixed in
    assert gauges[("daily", "0m", "request")] == 1.5
    assert DataRoot(str(root)).latest_manifest()["run_id"] == "2024-03-15T020000Z"

    next_night = RunStore(str(root), "2024-03-16T020000Z")
    next_night.write_frame(pipeline.RECOMMENDATIONS, _frame(_recommendation("window", NIGHT + pd.Timedelta("1D"), 0.7)))
    next_night.publish_latest([pipeline.RECOMMENDATIONS])
    assert _gauges(root)[("window", "0m", "request")] == 0.7


def test_the_command_runs_a_plan_and_prints_it(tmp_path, capsys):
    settings = json.dumps(_settings(tmp_path))
    assert scaling_plan.main(["run", END.isoformat(), "--set", settings]) == 0
    out = capsys.readouterr().out
    assert f"Scaling plan of run {pipeline.run_key_for(END)}" in out and "4 windows" in out
    assert scaling_plan.main(["summary", "--set", settings]) == 0
    assert pipeline.run_key_for(END) in capsys.readouterr().out
    assert scaling_plan.main(["run", END.isoformat(), "--set", "{not json"]) == 2
    assert "is not a JSON object" in capsys.readouterr().err
