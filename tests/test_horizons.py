from __future__ import annotations

import pandas as pd
import pytest

from foresight_lib.errors import HorizonError
from foresight_lib.horizons import horizon_steps, parse_duration, parse_horizons, season_length


def test_durations_and_steps():
    assert parse_duration("15m") == pd.Timedelta(minutes=15)
    assert parse_duration("1h") == pd.Timedelta(hours=1)
    assert parse_horizons("30m, 5m,15m,5min") == ["5m", "15m", "30m"]
    assert horizon_steps("30m", "5min") == 6
    assert horizon_steps("1h", "5m") == 12
    assert season_length("5min") == 288


@pytest.mark.parametrize("horizon", ["7m", "2m"])
def test_horizon_not_whole_number_of_steps_is_a_clear_error(horizon):
    with pytest.raises(HorizonError, match="not a whole number of 5m steps"):
        horizon_steps(horizon, "5min")


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "-5m", "0m", ""])
def test_bad_durations(text):
    with pytest.raises(HorizonError):
        parse_duration(text) if text else parse_horizons(text)
