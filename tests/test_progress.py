"""Progress lines of a long train task: throttled, with time left, and one at the end."""
from __future__ import annotations

import logging

from foresight_lib.forecasting.progress import ProgressLog, format_seconds


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_and_say_how_long_is_left(caplog):
    clock = Clock()
    progress = ProgressLog("arima · shard 2/4", logging.getLogger("test.progress"), every_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress.start(100)
        for _ in range(10):  # 10 series in 10 s: no line yet
            clock.now += 1
            progress.update()
        clock.now += 30  # 11 series after 40 s
        progress.update()
        for _ in range(89):
            progress.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "arima · shard 2/4: backtesting 100 series",
        "arima · shard 2/4: 11/100 series (11 %), 40s elapsed, about 5m24s left",
        "arima · shard 2/4: 100/100 series (100 %), 40s elapsed, about 0s left",
    ]


def test_a_second_pass_never_counts_past_the_total(caplog):
    progress = ProgressLog("ets", logging.getLogger("test.progress"), every_s=0, clock=Clock())
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress.start(2)
        for _ in range(4):
            progress.update()
    assert progress.done == 2
    assert "2/2 series (100 %)" in caplog.records[-1].getMessage()


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]


def test_a_train_task_logs_its_progress(tmp_path, caplog):
    from foresight_lib import pipeline

    overrides = {"data_root": str(tmp_path / "data"), "history_days": 3, "models": ["naive", "seasonal_naive"],
                 "source": {"metrics": ["container_cpu_usage_seconds_total"]},
                 "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    run = pipeline.extract("test__progress", None, "2024-03-20T02:00:00Z", overrides=overrides)
    try:
        run = pipeline.build_features(pipeline.validate(run))
        with caplog.at_level(logging.INFO, logger="foresight_lib.pipeline"):
            out = pipeline.train(run, "naive", tasks_at_once=1)
    finally:
        pipeline.release(run)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("naive: backtesting ") for m in messages), messages
    assert any(" series (100 %)" in m and "left" in m for m in messages), messages
    # what the task needed, for sizing workers (benchmarks/scale.py reads this line from the task logs)
    assert out["peak_rss_mb"] > 50 and out["children_peak_rss_mb"] >= 0
    assert any(m.startswith("naive: peak RSS ") and m.endswith(" MB)") for m in messages), messages
