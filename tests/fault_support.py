"""What every fault-injection case checks once its fault has struck: what is published moved whole or not at all.

What teams act on is three things that must agree: the files under ``latest/`` with
their manifest, the run folder the manifest names, and the ``champion`` aliases of the
registered models ``foresight-<metric>``. After any fault the data root must hold either
exactly what was published before or the whole new run, with the aliases matching
``latest/summary.json``, no half-written (``.tmp-*``) file, no publish journal or run lock
left by a process that did not die, and no planted secret in any stored byte.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from foresight_lib.runs.lock import LOCKS
from foresight_lib.runs.storage import LATEST, MANIFEST, PREVIOUS, STAGING, TMP_PREFIX
from foresight_lib.runs.transaction import JOURNAL
from foresight_lib.tracking.registry import registered_model_name

MODEL_PREFIX = "foresight-"
CHAMPION = "champion"
PLAN_FILES = frozenset({"scaling_plan.parquet", "_plan_manifest.json"})
"""``latest/`` files of the scaling plan, published by its own DAG and manifest, not by a nightly run."""


@dataclass(frozen=True)
class Published:
    """What is published at one moment: every file of ``latest/`` and the registry's aliases."""

    latest: dict[str, bytes]
    champions: dict[str, str]
    """Registered model name -> version the ``champion`` alias points at."""
    versions: dict[str, tuple[str, ...]]
    """Registered model name -> every version it holds (a rolled-back publish leaves none of its own)."""

    def summary(self) -> dict:
        """``latest/summary.json`` as a dict (empty when nothing is published)."""
        data = self.latest.get("summary.json")
        return json.loads(data) if data else {}

    def manifest(self) -> dict:
        data = self.latest.get(MANIFEST)
        return json.loads(data) if data else {}


def latest_files(data_root: str | Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``<data_root>/latest``."""
    folder = Path(data_root) / LATEST
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def registry_state(tracking_uri: str) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """``(champion alias per registered model, versions per registered model)`` of Foresight's models."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champions: dict[str, str] = {}
    versions: dict[str, tuple[str, ...]] = {}
    for model in client.search_registered_models(max_results=1000):
        if not model.name.startswith(MODEL_PREFIX):
            continue
        if CHAMPION in (model.aliases or {}):
            champions[model.name] = str(model.aliases[CHAMPION])
        found = client.search_model_versions(f"name='{model.name}'", max_results=1000)
        versions[model.name] = tuple(sorted((str(v.version) for v in found), key=int))
    return champions, versions


def snapshot(data_root: str | Path, tracking_uri: str) -> Published:
    """What is published now under ``data_root`` and in the registry at ``tracking_uri`` (a real store)."""
    champions, versions = registry_state(tracking_uri)
    return Published(latest=latest_files(data_root), champions=champions, versions=versions)


def temp_files(folder: str | Path) -> list[Path]:
    """Every ``.tmp-*`` file or folder below ``folder``: a write that did not finish."""
    root = Path(folder)
    return sorted(p for p in root.rglob(f"{TMP_PREFIX}*")) if root.is_dir() else []


def files_with(folders: Iterable[str | Path], secret: str) -> list[Path]:
    """Every file below ``folders`` whose bytes contain ``secret`` (as UTF-8 or URL-encoded), binary ones too."""
    from urllib.parse import quote

    needles = {secret.encode("utf-8"), quote(secret, safe="").encode("utf-8")}
    hits = []
    for folder in folders:
        root = Path(folder)
        candidates = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in candidates:
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if any(needle in data for needle in needles):
                    hits.append(path)
    return hits


def _relative(paths: Iterable[Path], root: Path) -> list[str]:
    out = []
    for path in paths:
        try:
            out.append(str(path.relative_to(root)))
        except ValueError:
            out.append(str(path))
    return out


def assert_published_consistent(data_root: str | Path, tracking_uri: str, before: Published,
                                secret: str | None = None, *, killed: bool = False,
                                search: Iterable[str | Path] = ()) -> str:
    """Fail unless what is published is ``before``, whole, or the whole new run; returns which.

    Args:
        data_root: the local data root the runs wrote.
        tracking_uri: the real MLflow store holding the registry (not a dead URI a case used).
        before: ``snapshot`` taken before the fault.
        secret: a planted password that must appear in no file under the data root or ``search``.
        killed: a process was killed with SIGKILL and nothing has recovered since: its publish
            journal and its date's lock may stay, and so may half-written files of its attempt
            under ``staging/`` (never under ``latest/`` or ``runs/``).
        search: further folders or files to search for ``secret`` (the MLflow database and artifacts).

    Returns:
        ``"unchanged"`` or ``"new run <run folder>"``.
    """
    root = Path(data_root)
    problems: list[str] = []
    now = snapshot(root, tracking_uri)

    # latest/: byte-identical to before, or every file the new run's own
    if now.latest == before.latest:
        outcome = "unchanged"
        if now.champions != before.champions:
            problems.append(f"latest/ is unchanged but the champion aliases moved: {before.champions} -> "
                            f"{now.champions}")
    else:
        manifest = now.manifest()
        run_folder = Path(manifest.get("run_folder") or "")
        outcome = f"new run {run_folder}"
        if not manifest:
            problems.append(f"latest/ changed but has no {MANIFEST}: {sorted(now.latest)}")
        elif not run_folder.is_dir():
            problems.append(f"the manifest names run folder {run_folder}, which does not exist")
        else:
            listed = {str(name) for name in manifest.get("names") or []}
            for name, data in now.latest.items():
                if name == MANIFEST or name in PLAN_FILES:
                    continue
                source = run_folder / name
                if not source.is_file():
                    problems.append(f"latest/{name} is not in the run folder {run_folder}")
                elif source.read_bytes() != data:
                    problems.append(f"latest/{name} differs from {source}: a mix of two runs")
            published = {n for n in now.latest if n not in PLAN_FILES and n != MANIFEST}
            expected = {n if "." in n else f"{n}.parquet" for n in listed}
            if expected and expected != published:
                problems.append(f"the manifest lists {sorted(expected)} but latest/ holds {sorted(published)}")
    # the aliases agree with what latest/ says it published
    summary = now.summary()
    if summary:
        recorded = {registered_model_name(metric): None if version is None else str(version)
                    for metric, version in (summary.get("champion_versions") or {}).items()}
        actual = {name: now.champions.get(name) for name in recorded}
        if recorded != actual:
            problems.append(f"champion aliases {actual} differ from latest/summary.json's champion_versions "
                            f"{recorded}")
        if not recorded and now.champions:
            problems.append(f"latest/summary.json records no champion_versions, the registry has {now.champions}")
    elif now.champions:
        problems.append(f"nothing is published in latest/ but the registry has champions {now.champions}")
    # nothing half-done left behind
    leftovers = temp_files(root)
    if killed:
        leftovers = [p for p in leftovers if STAGING not in p.relative_to(root).parts[:1]]
    if leftovers:
        problems.append(f"temporary files left: {_relative(leftovers, root)}")
    if not killed:
        journal = root / LOCKS / JOURNAL
        if journal.exists():
            problems.append(f"publish journal left: {journal}: {journal.read_text(errors='replace')[:500]}")
        locks = sorted(p for p in (root / LOCKS).rglob("*.json") if p.name != JOURNAL) if (root / LOCKS).is_dir() \
            else []
        if locks:
            problems.append(f"locks left by runs that ended: {_relative(locks, root)}")
        aside = sorted(p for p in (root / STAGING).rglob(f"{PREVIOUS}*")) if (root / STAGING).is_dir() else []
        if aside:
            problems.append(f"run folders left aside by a promotion: {_relative(aside, root)}")
    if secret:
        leaked = files_with([root, *search], secret)
        if leaked:
            problems.append(f"the planted secret is stored in: {[str(p) for p in leaked]}")
    assert not problems, "published state is inconsistent:\n- " + "\n- ".join(problems)
    return outcome


def fill_disk(folder: Path, leave_bytes: int) -> None:
    """Fill the file system of ``folder``, then give ``leave_bytes`` back."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        for block in (65536, 4096):
            with contextlib.suppress(OSError):  # written until the disk is full
                while True:
                    out.write(b"\0" * block)
    os.truncate(filler, max(filler.stat().st_size - leave_bytes, 0))
