"""Foresight: batch forecasting of container and server resource usage.

The library every pipeline task calls. It never imports Airflow. Sub-packages by concern:
``sources``, ``quality``, ``forecasting``, ``rightsizing``, ``runs``, ``tracking``,
``serving``, ``publishing``; the task functions are ``pipeline`` and ``scaling_plan``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

MOVED_MODULES = {
    f"foresight_lib.{old}": f"foresight_lib.{new}" for old, new in {
        "champion": "forecasting.champion", "backtest": "forecasting.backtest",
        "backtest_runner": "forecasting.backtest_runner", "ensemble": "forecasting.ensemble",
        "metrics": "forecasting.metrics", "models": "forecasting.models",
        "registry": "tracking.registry", "publishing.registry": "tracking.registry",
    }.items()
}
"""Where modules that pickled objects name moved to, so that what was pickled before a move still
loads: a registered champion's bundle (``ChampionBundle``, its models, ensemble weights, backtest
spec and criterion) and its MLflow pyfunc model (``ForesightPyfunc``, pickled by MLflow under the
registry's module), and the backtest parts and results in run folders.

Only module paths go here, never a path kept for imports. The hook (and the ``ForesightPyfunc``
lookup in ``foresight_lib.tracking``) can go once every version that may still be loaded (the
aliases' and any an activation may pick) has been registered again under the current paths, and
no run begun before a move is still in flight."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path (and what lies below it) as the module at its new place."""

    @staticmethod
    def _target(name: str) -> str | None:
        for old, new in MOVED_MODULES.items():
            if name == old or name.startswith(old + "."):
                return new + name[len(old):]
        return None

    def find_spec(self, name, path=None, target=None):
        moved = self._target(name)
        return importlib.util.spec_from_loader(name, self) if moved else None

    def create_module(self, spec):
        return importlib.import_module(self._target(spec.name))

    def exec_module(self, module) -> None:
        """The module at the new place is already executed."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
