"""Memory per entity-day (Autopilot's definitions) on tiny hand-made periods."""
import numpy as np
import pandas as pd
import pytest

from foresight_lib.rightsizing import entity_days as ed

DAY = ed.DAY_NS


def test_one_row_per_day_with_slack_oom_and_changes():
    usage = [np.full(4, 50.0), np.array([50.0, 50.0, 120.0, 50.0]), np.full(4, 50.0)]
    rows = ed.entity_day_rows("memory", "vpa", "vm1", [0, DAY // 2, DAY], [100.0, 100.0, 150.0], usage)
    assert [r["day"] for r in rows] == ["1970-01-01", "1970-01-02"]
    first, second = rows
    assert first["limit"] == pytest.approx(100.0)
    assert first["oom"] and not second["oom"]
    assert first["relative_slack"] == pytest.approx((100 - np.percentile(np.r_[usage[0], usage[1]], 95)) / 100)
    assert (first["changes"], second["changes"]) == (0, 1)
    assert second["relative_slack"] == pytest.approx(100 / 150)


def test_window_limits_are_averaged_over_the_points():
    rows = ed.entity_day_rows("m", "x", "e", [0, 10], [100.0, 200.0], [np.full(1, 1.0), np.full(3, 1.0)])
    assert rows[0]["limit"] == pytest.approx(175.0)
    assert rows[0]["changes"] == 1


def test_summary_keeps_young_entities_apart():
    rows = []
    rows += ed.entity_day_rows("m", "plan", "old", [0, DAY, 2 * DAY, 3 * DAY], [10.0] * 4,
                               [np.full(2, 5.0), np.full(2, 11.0), np.full(2, 11.0), np.full(2, 11.0)])
    rows += ed.entity_day_rows("m", "plan", "ok", [0, DAY], [10.0, 10.0], [np.full(2, 5.0)] * 2)
    rows += ed.entity_day_rows("m", "plan", "young", [0], [10.0], [np.full(2, 20.0)])
    (s,) = ed.entity_day_summary(pd.DataFrame(rows))
    assert s["entities"] == 2 and s["entity_days"] == 6
    assert s["oom_free"] == pytest.approx(3 / 6)
    assert s["oom_days_per_entity"] == {"0": 0.5, "1": 0.0, "2": 0.0, "3+": 0.5}
    assert s["young_entities"] == ["young"]
    assert s["young"]["entity_days"] == 1 and s["young"]["oom_free"] == 0.0


def test_empty_table():
    assert ed.entity_day_summary(pd.DataFrame()) == []
