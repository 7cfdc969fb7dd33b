"""The library's layout: sub-packages by concern, and the old module paths that pickles name still load."""
from __future__ import annotations

import importlib
import pickle
import pkgutil

import foresight_lib
from foresight_lib import MOVED_MODULES
from foresight_lib.forecasting.champion import ChampionBundle


def test_every_module_imports_on_its_own():
    for info in pkgutil.walk_packages(foresight_lib.__path__, "foresight_lib."):
        assert importlib.import_module(info.name).__name__ == info.name


def test_old_module_paths_are_the_moved_modules():
    for old, new in MOVED_MODULES.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module("foresight_lib.models.naive") is importlib.import_module(
        "foresight_lib.forecasting.models.naive")


def test_a_bundle_pickled_under_the_old_path_loads():
    old = pickle.dumps(ChampionBundle, protocol=0).replace(b"foresight_lib.forecasting.champion",
                                                           b"foresight_lib.champion")
    assert b"foresight_lib.champion" in old
    assert pickle.loads(old) is ChampionBundle


def test_no_flat_pile_of_modules():
    flat = [m.name for m in pkgutil.iter_modules(foresight_lib.__path__) if not m.ispkg]
    assert len(flat) <= 12, f"group these by concern into the sub-packages: {flat}"
