"""The model registry: every name resolves to a model class, and what is listed by name agrees with the classes."""
from __future__ import annotations

import pytest

from foresight_lib.forecasting import models
from foresight_lib.forecasting.models.base import Forecaster, GlobalForecaster


@pytest.mark.parametrize("name", list(models.MODEL_PATHS))
def test_every_registered_name_is_a_model_class(name):
    cls = models.model_class(name)
    assert issubclass(cls, (Forecaster, GlobalForecaster))
    assert getattr(cls, "alias", name) == name, "a model's alias is its registered name"


def test_global_models_are_the_registered_global_forecasters():
    found = [name for name in models.MODEL_PATHS if issubclass(models.model_class(name), GlobalForecaster)]
    assert found == [m for m in models.MODEL_PATHS if m in models.GLOBAL_MODELS]
    assert set(models.GLOBAL_MODELS) <= set(models.MODEL_PATHS)


def test_every_registered_model_can_be_chosen():
    assert models.ALL_MODELS == [*models.MODEL_PATHS, models.ENSEMBLE]
    assert set(models.DEFAULT_MODELS) <= set(models.ALL_MODELS)
    assert set(models.TUNABLE_MODELS) <= set(models.MODEL_PATHS)
