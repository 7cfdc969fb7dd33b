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


def test_a_pyfunc_model_pickled_under_an_old_path_loads():
    """MLflow pickles the champion's pyfunc model by its class's module: every path it had still loads."""
    from foresight_lib.tracking.registry import ForesightPyfunc

    pickled = pickle.dumps(ForesightPyfunc(), protocol=0)
    for old in (b"foresight_lib.publishing.registry", b"foresight_lib.registry", b"foresight_lib.tracking"):
        assert type(pickle.loads(pickled.replace(b"foresight_lib.tracking.registry", old))) is ForesightPyfunc


def test_no_flat_pile_of_modules():
    flat = [m.name for m in pkgutil.iter_modules(foresight_lib.__path__) if not m.ispkg]
    assert len(flat) <= 12, f"group these by concern into the sub-packages: {flat}"


# --- Layering: imports run one way -------------------------------------------------------------

LAYERS = [
    "errors", "durations", "redaction", "scratch", "horizons", "frames", "locations", "orchestration",
    "forecasting", "config", "sources", "quality", "runs", "rightsizing", "tracking", "serving", "publishing",
    "pipeline", "scaling_plan", "commands", "cli",
]
"""The top-level parts of ``foresight_lib``, lowest first: a module imports only from its own part or
from parts listed before it; within a part, modules import one another without a circle."""


def _library_imports() -> dict[str, set[str]]:
    """Every ``foresight_lib`` module -> the library modules it imports, at any depth of its code."""
    import ast
    from pathlib import Path

    root = Path(foresight_lib.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(("foresight_lib",) + path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = imports.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + [node.module] if node.module else base) if node.level else node.module
                if not target or not target.startswith("foresight_lib"):
                    continue
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    found.add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("foresight_lib."))
        found.discard(name)
    return imports


def _part(module: str) -> str:
    return module.split(".")[1] if module != "foresight_lib" else ""


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _library_imports()} - {""}
    placed = set(LAYERS)
    assert parts <= placed, f"give these parts of foresight_lib a layer: {sorted(parts - placed)}"


def test_imports_run_downward_between_parts():
    layer = {part: n for n, part in enumerate(LAYERS)}
    upward = sorted(f"{m} -> {t}" for m, targets in _library_imports().items() for t in targets
                    if _part(m) and _part(t) and _part(m) != _part(t)
                    and layer.get(_part(t), -1) >= layer.get(_part(m), -1))
    assert not upward, "imports that climb up or sideways:\n" + "\n".join(upward)


def test_no_import_circle_between_modules():
    imports = _library_imports()
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(imports.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(imports):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_private_name_imported_across_modules():
    import ast
    from pathlib import Path

    root = Path(foresight_lib.__file__).parent
    crossing = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("foresight_lib", ".")) or (
                    isinstance(node, ast.ImportFrom) and node.level):
                crossing += [f"{path.relative_to(root)}: {a.name} from {node.module}"
                             for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert not crossing, "private names imported across modules:\n" + "\n".join(sorted(crossing))
