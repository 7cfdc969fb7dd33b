"""Everything MLflow: the store, the runs of each nightly, the champion registry.

- ``mlflow_store``: where MLflow lives (``configure``, ``check_tracking_server``), its client
  and bounded HTTP waits;
- ``mlflow_runs``: one parent run per nightly run, a child per model, retired once replaced;
- ``registry``: one registered model per metric, its champion and challenger aliases, and
  what a publish undoes (``snapshot_aliases``, ``restore_aliases``, ``discard_versions``).

Importing this package imports no MLflow; its modules do.
"""
from __future__ import annotations

from types import ModuleType


def model_registry() -> ModuleType:
    """The champion registry (``foresight_lib.tracking.registry``), imported on first use: it imports MLflow.

    What ``foresight_lib.runs.transaction`` is given to undo a publish's registrations.
    """
    from foresight_lib.tracking import registry

    return registry


def __getattr__(name: str):
    # Champions registered before the registry had its own module pickled their pyfunc model as
    # foresight_lib.tracking.ForesightPyfunc; like foresight_lib.MOVED_MODULES, this goes once
    # every champion has been registered again.
    if name == "ForesightPyfunc":
        from foresight_lib.tracking.registry import ForesightPyfunc

        return ForesightPyfunc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
