"""The ensemble's members: forward selection on hand-made validation errors, and in the backtest."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_daily_series

from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.ensemble import (
    MIN_SELECTION_SERIES,
    TOP_MODELS,
    choose_members,
    fit_ensemble_weights,
    member_subsets,
    step_weights,
    subset_losses,
)

H, ORIGINS = 6, list(range(0, 288 - 6 + 1, 6))


def _validation_day(rng, n_series: int) -> tuple[list[str], np.ndarray]:
    """Validation errors of four models on ``n_series`` series: ``good`` and ``other`` (independent
    errors of the same size), ``dup`` (``good``'s forecasts again) and ``biased`` (far off)."""
    models = ["good", "biased", "dup", "other"]
    subsets = member_subsets(len(models))
    rows = []
    for _ in range(n_series):
        y = 10 + np.sin(np.arange(288) / 20) + rng.normal(0, 0.1, 288)
        actual = np.stack([y[o:o + H] for o in ORIGINS])
        good = actual + rng.normal(0, 1.0, actual.shape)
        fc = {"good": good, "biased": good + 4 + rng.normal(0, 0.1, actual.shape), "dup": good.copy(),
              "other": actual + rng.normal(0, 1.0, actual.shape)}
        rows.append(subset_losses({m: {"mean": v} for m, v in fc.items()}, y, ORIGINS, H, 1.0, subsets))
    return models, np.stack(rows)


def test_forward_selection_leaves_out_a_useless_and_a_duplicate_member():
    models, losses = _validation_day(np.random.default_rng(0), 12)
    choice = choose_members(models, losses, n_series=12)
    assert choice.rule == "forward_selection"
    assert sorted(choice.members) == ["good", "other"]  # the biased one and the copy add nothing
    assert choice.steps[0]["add"] in ("good", "dup", "other") and len(choice.steps) == 2
    assert choice.validation_mase < choice.steps[0]["validation_mase"]
    assert choice.validation_mase <= choice.all_models_validation_mase


def test_the_best_single_model_stays_alone_when_nothing_helps():
    models, losses = _validation_day(np.random.default_rng(1), 8)
    keep = [0, 1]  # good and biased only
    subsets = member_subsets(4)
    columns = [subsets.index(s) for s in member_subsets(2)]
    choice = choose_members([models[i] for i in keep], losses[:, columns], n_series=8)
    assert choice.members == ["good"] and choice.rule == "forward_selection"


def test_too_few_series_with_a_validation_day_fall_back_to_every_model():
    models, losses = _validation_day(np.random.default_rng(2), MIN_SELECTION_SERIES - 1)
    choice = choose_members(models, losses, n_series=MIN_SELECTION_SERIES - 1)
    assert choice.members == models and choice.rule == "all_models"
    assert "validation day" in choice.reason and f"best {TOP_MODELS} per step" in choice.reason


def test_a_validation_day_with_gaps_falls_back_to_every_model():
    models, losses = _validation_day(np.random.default_rng(3), 10)
    losses[:6] = np.nan  # six of ten series have no usable validation day
    choice = choose_members(models, losses, n_series=10)
    assert choice.rule == "all_models" and choice.members == models and "4 of 10 series" in choice.reason
    # series missing altogether count the same way
    choice = choose_members(models, losses[6:], n_series=10)
    assert choice.rule == "all_models"


def test_weights_among_members_are_those_of_the_members_alone():
    rng = np.random.default_rng(4)
    y = rng.normal(10, 1, 288)
    actual = np.stack([y[o:o + H] for o in ORIGINS])
    fc = {m: {"mean": actual + rng.normal(0, s, actual.shape)} for m, s in zip("abcde", (1, 2, 0.5, 3, 1.5),
                                                                                  strict=True)}
    fc["e"]["mean"][:, 2] = np.inf  # not finite at one step
    alone = fit_ensemble_weights({m: fc[m] for m in "bde"}, y, ORIGINS, H, (80,))
    among = fit_ensemble_weights(fc, y, ORIGINS, H, (80,), members=["b", "d", "e"])
    assert among.models == ["b", "d", "e"]
    np.testing.assert_array_equal(among.weights, alone.weights)
    np.testing.assert_array_equal(among.half_widths[80], alone.half_widths[80])
    mae = np.stack([np.mean(np.abs(fc[m]["mean"] - actual), axis=0) for m in "abcde"], axis=-1)
    mae = np.where(np.isfinite(mae), mae, np.inf)
    masked = step_weights(mae, np.array([False, True, False, True, True]))
    np.testing.assert_array_equal(masked[:, [1, 3, 4]], alone.weights)
    assert (masked[:, [0, 2]] == 0).all()


def test_every_model_keeps_todays_weights():
    mae = np.array([[1.0, 2.0, 4.0, 8.0], [0.0, 0.0, 1.0, 2.0], [np.inf, np.inf, np.inf, np.inf]])
    weights = step_weights(mae)
    np.testing.assert_allclose(weights[0], np.array([1, 1 / 4, 1 / 16, 0]) / (1 + 1 / 4 + 1 / 16))
    np.testing.assert_array_equal(weights[1], [0.5, 0.5, 0, 0])  # exact models share the weight
    np.testing.assert_allclose(weights[2], [1 / 3, 1 / 3, 1 / 3, 0])  # none finite: the first TOP_MODELS equally


def _frame():
    frame = make_daily_series(days=5, n_series=4, noise=0.3, seed=5)
    other = make_daily_series(days=5, n_series=2, noise=0.3, seed=6)
    other["unique_id"] = other["unique_id"].str.replace("cpu_cores/", "mem_bytes/")
    return __import__("pandas").concat([frame, other], ignore_index=True)


def _spec(**kw):
    return BacktestSpec(**{"models": ["naive", "seasonal_naive", "fourier", "ensemble"], "history_days": 4,
                           "n_jobs": 1, "select_members": True, **kw})


def test_the_backtest_records_each_metrics_members_chosen_on_the_validation_day_only():
    frame = _frame()
    result = run_backtest(frame, _spec())
    members = result.report()["ensemble_members"]
    assert set(members) == {"cpu_cores", "mem_bytes"}
    assert members["cpu_cores"]["rule"] == "forward_selection" and members["cpu_cores"]["series"] == 4
    assert members["mem_bytes"]["rule"] == "all_models" and "2 of 2 series" in members["mem_bytes"]["reason"]
    for uid, ens in result.ensemble_weights.items():
        assert ens.models == members[uid.split("/")[0]]["members"]
    # the held-out day's actuals play no part in the choice nor in the weights
    perturbed = frame.copy()
    held_out = perturbed["ds"] > perturbed["ds"].max() - __import__("pandas").Timedelta("1D")
    perturbed.loc[held_out, "y"] = perturbed.loc[held_out, "y"] * 3 + 7
    again = run_backtest(perturbed, _spec())
    assert again.report()["ensemble_members"] == members
    for uid, ens in result.ensemble_weights.items():
        np.testing.assert_array_equal(again.ensemble_weights[uid].weights, ens.weights)
    assert not again.per_series.equals(result.per_series)  # the held-out scores did change


def test_selection_off_takes_every_base_model():
    result = run_backtest(_frame(), _spec(select_members=False))
    for choice in result.ensemble_members.values():
        assert choice.rule == "all_models" and choice.members == ["naive", "seasonal_naive", "fourier"]


@pytest.mark.parametrize("n_models", [3, 7])
def test_member_subsets_are_fixed_and_hold_the_set_of_all(n_models):
    subsets = member_subsets(n_models)
    assert subsets == member_subsets(n_models) and tuple(range(n_models)) in subsets
