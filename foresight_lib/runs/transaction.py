"""Publishing as one transaction: what teams act on only ever moves forward, whole.

What is published is three things that must agree: the date's run folder
(``runs/<date>``), the files under ``latest/`` with their manifest, and the ``champion``
aliases of the registered models. ``publish_run`` changes them in this order, under a
lock that serialises publishes of one data root:

1. write a journal (``locks/publish_journal.json``): the aliases as they were, and then
   each model version this publish registers;
2. register the champions (aliases move);
3. make the attempt the date's run folder (``RunStore.promote``), the old one kept aside;
4. stage every file for ``latest/`` and its manifest under temporary names, record them in
   the journal (phase ``switching``), then rename them over ``latest/``, the manifest last
   (renames only: a full disk cannot stop the switch half-way);
5. drop the old run folder and the journal.

A failure before step 4's renames rolls everything back: aliases restored, the new
versions deleted, the old run folder put back, staged files removed. A process killed on
the way leaves the journal, and ``recover`` finishes the job the same way: back before
the switch, forward once it had started (every staged file is complete by then).

Who sees what after a kill, before anything recovers:

- Foresight's own readers (``DataRoot.read_latest`` and the rest: the dashboard, the JSON
  views, ``/foresight/metrics``, the summary) follow the journal: once its phase is
  ``switching`` they read each file not renamed yet from its staged copy. So from the
  first read after a kill they see the previous publish whole or the new one whole. The
  predict endpoint serves the champion versions ``latest/summary.json`` names, so it
  agrees with them too.
- The MLflow aliases are read by clients that run no Foresight code, and several cannot
  move in one step: killed between the first registration and the end of the switch, an
  alias may be ahead of ``latest/`` (rolled back) or behind it (completed). That window
  ends at the DAG's ``release`` teardown, which runs however the run ended and calls
  ``recover_ended`` (the next publish, an activation and the scaling plan recover first too).

The registry is MLflow's, and this package sits below it: whoever moves aliases passes
what undoes them (a function returning ``Registrations``, such as
``foresight_lib.tracking.model_registry``) to ``run_transaction``, ``recover`` and
``recover_ended``.

Whether a run may reach ``latest/`` and the aliases at all is ``decide``: only a run that
is at least as new as what is published and ran the full configured model set, unless
its ``publish.latest`` setting says ``always`` (or ``never``).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import pyarrow.fs as pafs

from foresight_lib.errors import ForesightError, RunLocked, SourceError
from foresight_lib.runs.lock import LOCKS, RunLock
from foresight_lib.runs.storage import (
    JOURNAL,
    LATEST,
    MANIFEST,
    PREVIOUS,
    STAGING,
    SWITCHING,
    TMP_PREFIX,
    DataRoot,
    RunStore,
)

log = logging.getLogger(__name__)

PUBLISH_LOCK = ("publish", "latest")


class Registrations(Protocol):
    """What undoes a publish's registrations: the model registry (``foresight_lib.tracking.registry``).

    The caller gives a function that returns it (``foresight_lib.tracking.model_registry``),
    called only when there is something to undo: the registry imports MLflow.
    """

    def versions_from_run(self, run_id: str, name_prefix: str | None) -> list[tuple[str, int]]:
        """The registered versions logged in MLflow run ``run_id`` under models named ``<name_prefix>-…``."""

    def restore_aliases(self, snapshot: dict[str, dict[str, int | None]]) -> None:
        """Put the aliases back as ``snapshot`` had them."""

    def discard_versions(self, versions: Iterable[tuple[str, int] | list]) -> Any:
        """Delete these registered versions."""


# ---------------------------------------------------------------------------
# Which runs may move what is published


def ad_hoc_differences(params: dict | None, base) -> list[str]:
    """How a run's trigger parameters depart from the configured production run (empty: they don't).

    Args:
        params: the DAG run's parameters (``metrics``, ``models``, ``horizons``, ``overrides``).
        base: the settings without the run's parameters.
    """
    params = dict(params or {})
    out = []
    if params.get("models") and sorted(params["models"]) != sorted(base.models):
        out.append(f"models {list(params['models'])} instead of {list(base.models)}")
    if params.get("horizons") and list(params["horizons"]) != list(base.horizons):
        out.append(f"horizons {list(params['horizons'])} instead of {list(base.horizons)}")
    configured = sorted(base.source.metrics or [])
    if params.get("metrics") and sorted(params["metrics"]) != configured:
        out.append(f"metrics {list(params['metrics'])} instead of {configured or 'all'}")
    extra = {k: v for k, v in (params.get("overrides") or {}).items() if k != "publish"}
    if extra:
        out.append(f"settings overridden: {sorted(extra)}")
    return out


def decide(mode: str, data_interval_end: str, differences: list[str], root: DataRoot) -> tuple[bool, str]:
    """``(publish to latest and move aliases?, why)`` for a run that has succeeded.

    Args:
        mode: the run's ``publish.latest`` setting: ``auto``, ``always`` or ``never``.
        data_interval_end: the run's data interval end (ISO 8601).
        differences: ``ad_hoc_differences`` of the run.
    """
    if mode == "never":
        return False, "publish.latest is 'never' for this run: its run folder and MLflow runs only"
    if mode == "always":
        return True, "publish.latest is 'always' for this run"
    manifest = root.latest_manifest()
    published_end = (manifest or {}).get("data_interval_end")
    if published_end and pd.Timestamp(data_interval_end) < pd.Timestamp(published_end):
        return False, (f"latest/ holds a newer run (data up to {published_end}); this run of {data_interval_end} "
                       "publishes to its run folder and MLflow only. Trigger it with publish 'always' to replace "
                       "what is published")
    if differences:
        return False, ("an ad-hoc run (" + "; ".join(differences) + ") publishes to its run folder and MLflow only. "
                       "Trigger it with publish 'always' to replace what is published")
    return True, "the newest run with the configured models"


# ---------------------------------------------------------------------------
# The journal


@dataclass
class Journal:
    """What an unfinished publish changed, so that it can be undone or finished."""

    root: DataRoot
    run_key: str
    attempt: str
    aliases: dict = field(default_factory=dict)
    versions: list[list] = field(default_factory=list)
    source_run_id: str | None = None
    """The MLflow run the new versions are logged from: a version registered but not yet
    journalled when the process died is found through it."""
    name_prefix: str | None = None
    phase: str = "registering"
    promoted: dict | None = None
    staged: list[list[str]] = field(default_factory=list)

    @staticmethod
    def path(root: DataRoot) -> str:
        return root._join(LOCKS, JOURNAL)

    def save(self) -> None:
        data = {k: getattr(self, k) for k in ("run_key", "attempt", "aliases", "versions", "source_run_id",
                                               "name_prefix", "phase", "promoted", "staged")}
        self.root._write_atomic(self.path(self.root), json.dumps(data, indent=2, default=str).encode("utf-8"))

    @classmethod
    def load(cls, root: DataRoot) -> Journal | None:
        path = cls.path(root)
        if not root._exists(path):
            return None
        data = json.loads(root._read(path, "publish journal"))
        return cls(root=root, **data)

    def delete(self) -> None:
        """Remove the journal, and make sure it is gone: a journal left behind would be undone later.

        Raises:
            SourceError: it could not be deleted.
        """
        path = self.path(self.root)
        try:
            self.root.fs.delete_file(path)
        except FileNotFoundError:
            return  # already gone: nothing left to undo or finish
        except OSError as exc:
            raise SourceError(f"cannot delete the publish journal {self.root._uri(path)} of {self.run_key}: {exc}; "
                              "the next publish finishes or undoes it again (phase "
                              f"{self.phase}), or delete it by hand") from exc
        if self.root._exists(path):
            raise SourceError(f"the publish journal {self.root._uri(path)} of {self.run_key} is still there after its "
                              f"deletion; the next publish finishes or undoes it again (phase {self.phase}), or "
                              "delete it by hand")


def who() -> str:
    """This process, for the log of whoever changes what is published: host, pid and Airflow task if any."""
    task = "/".join(os.environ[k] for k in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TASK_ID",
                                            "AIRFLOW_CTX_TRY_NUMBER") if os.environ.get(k))
    return f"{socket.gethostname()} pid {os.getpid()}" + (f" task {task}" if task else "")


def undo(journal: Journal, registry: Callable[[], Registrations] | None = None) -> None:
    """Put aliases, versions, the run folder and ``latest/`` back as they were before the publish.

    ``registry`` returns the model registry that restores the aliases and deletes the
    versions; it is called only when the journal names some.

    Raises:
        ForesightError: the journal names registrations and no ``registry`` was given to undo
            them (nothing is undone then; the journal stays).
    """
    root = journal.root
    versions = [(name, int(version)) for name, version in journal.versions]
    if registry is None and (versions or journal.aliases or (journal.source_run_id and journal.name_prefix)):
        raise ForesightError(f"the publish journal of {journal.run_key} names model registrations; undo it with "
                             "the model registry (pass foresight_lib.tracking.model_registry)")
    if journal.source_run_id and journal.name_prefix:
        versions += registry().versions_from_run(journal.source_run_id, journal.name_prefix)
    log.warning("undoing the publish of %s (attempt %s, phase %s) from %s: aliases back to %s, discarding %s",
                journal.run_key, journal.attempt or "-", journal.phase, who(), journal.aliases or "-",
                sorted(set(versions)) or "-")
    if journal.aliases:
        registry().restore_aliases(journal.aliases)
    if versions:
        registry().discard_versions(list(dict.fromkeys(versions)))
    for _name, tmp, _target in journal.staged:
        root._delete_quietly(tmp)
    if journal.promoted and root.scheme != "s3":
        target, attempt_path, previous = (journal.promoted[k] for k in ("target", "attempt", "previous"))
        fs = root.fs
        if fs.get_file_info(target).type == pafs.FileType.Directory and \
                fs.get_file_info(attempt_path).type == pafs.FileType.NotFound:
            fs.move(target, attempt_path)
        if previous and fs.get_file_info(previous).type == pafs.FileType.Directory:
            fs.move(previous, target)
    journal.delete()


def finish(journal: Journal) -> None:
    """Complete a publish whose switch of ``latest/`` had begun (every staged file is whole)."""
    root = journal.root
    if journal.staged:
        log.info("switching latest/ to the publish of %s (attempt %s) from %s", journal.run_key,
                 journal.attempt or "-", who())
    else:
        log.info("not switching latest/: the run folder of %s (attempt %s) is kept without publishing it, from %s",
                 journal.run_key, journal.attempt or "-", who())
    root.switch_latest(journal.staged)
    previous = (journal.promoted or {}).get("previous")
    if previous and root.scheme != "s3" and root.fs.get_file_info(previous).type == pafs.FileType.Directory:
        root.fs.delete_dir(previous)
    journal.delete()


def recover(root: DataRoot, registry: Callable[[], Registrations] | None = None) -> str | None:
    """Finish or undo a publish that was interrupted; call it holding the publish lock.

    ``registry`` returns what undoes the registrations the journal names (see ``undo``).

    Returns:
        ``"rolled back"``, ``"completed"`` or None when there was nothing to do.
    """
    journal = Journal.load(root)
    if journal is None:
        return None
    if journal.phase == SWITCHING:
        finish(journal)
        log.warning("completed the publish of %s (attempt %s) that was interrupted while switching latest/",
                    journal.run_key, journal.attempt)
        return "completed"
    undo(journal, registry)
    log.warning("rolled back the publish of %s (attempt %s) that was interrupted before switching latest/",
                journal.run_key, journal.attempt)
    return "rolled back"


def recover_ended(root: DataRoot, run_id: str, timeout: pd.Timedelta, prepare: Callable[[], Any] | None = None,
                  registry: Callable[[], Registrations] | None = None) -> str | None:
    """Finish or undo an interrupted publish once the run that made it has ended (the ``release`` teardown).

    The publish lock of ``run_id``'s own publish is taken over (the teardown runs after the
    publish task, so that process has ended however it ended); a lock of another live
    publish is left alone (that publish recovers first itself). Stray ``.tmp-*`` files in
    ``latest/`` go too. ``prepare`` (pointing MLflow at the run's store) is called only when
    there is something to recover; ``registry`` returns what undoes registrations (see ``undo``).

    Returns:
        What ``recover`` returned; None when there was nothing to do or another publish holds the lock.
    """
    if Journal.load(root) is None:
        return None
    if prepare is not None:
        prepare()
    lock = RunLock(root, PUBLISH_LOCK[0], PUBLISH_LOCK[1], timeout)
    owner = lock.owner()
    if owner is not None and owner.run_id == run_id:
        log.warning("taking over the publish lock of %s, whose publish has ended: %s", run_id, owner.describe())
        lock.release(owner.attempt)
    token = f"recover-{uuid.uuid4().hex[:12]}"
    try:
        lock.acquire(run_id, token, owner_pid=os.getpid())
    except RunLocked as exc:
        log.info("not recovering the interrupted publish now: %s", exc)
        return None
    try:
        outcome = recover(root, registry)
        remove_temp_files(root)
    finally:
        lock.release(token)
    return outcome


# ---------------------------------------------------------------------------
# The transaction


def publish_lock(root: DataRoot, timeout: pd.Timedelta, wait: pd.Timedelta, owner: str) -> tuple[RunLock, str]:
    """Take the data root's publish lock, waiting up to ``wait`` for another publish to end.

    A publish lives in one process, so the lock names that process (host and pid): it is
    taken over only when that process is gone, or after ``timeout``, never because the
    same Airflow run tries again while an earlier try may still be publishing.
    """
    lock = RunLock(root, PUBLISH_LOCK[0], PUBLISH_LOCK[1], timeout)
    token = f"publish-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        try:
            lock.acquire(owner, token, owner_pid=os.getpid())
            return lock, token
        except RunLocked as exc:
            if time.monotonic() >= deadline:
                raise RunLocked(f"another publish under {root.data_root} did not end within {wait}: {exc}") from None
            time.sleep(1.0)


@dataclass
class Transaction:
    """One publish in progress (see the module's docstring); use ``run`` for the whole sequence."""

    attempt: RunStore
    journal: Journal
    registry: Callable[[], Registrations] | None = None
    """Returns what undoes the registrations on ``abort`` (see ``undo``)."""

    @classmethod
    def begin(cls, attempt: RunStore, aliases: dict, source_run_id: str | None = None,
              name_prefix: str | None = None, registry: Callable[[], Registrations] | None = None) -> Transaction:
        journal = Journal(root=attempt, run_key=attempt.run_id, attempt=attempt.attempt or "", aliases=aliases,
                          source_run_id=source_run_id, name_prefix=name_prefix)
        journal.save()
        return cls(attempt, journal, registry)

    def registered(self, name: str, version: int) -> None:
        self.journal.versions.append([name, int(version)])
        self.journal.save()

    def promote(self):
        """Make the attempt the date's run folder, recorded first so that a kill half-way can be undone."""
        target = self.attempt.committed()
        self.journal.promoted = {"target": target.root, "attempt": self.attempt.root,
                                 "previous": previous_path(self.attempt)}
        self.journal.save()
        return self.attempt.promote()

    def switch(self, committed: RunStore, names: list[str], manifest: dict | None,
               manifest_name: str = MANIFEST) -> None:
        """Stage ``names`` into ``latest/``, then rename them in and write the manifest (no-op without names)."""
        if names:
            self.journal.staged = committed.stage_latest(names)
            self.journal.staged.append(committed.stage_manifest(manifest, manifest_name))
            self.journal.phase = SWITCHING
            try:
                self.journal.save()
            except BaseException:
                self.journal.phase = "registering"  # the journal on disk still says so: undo, not finish
                raise
        finish(self.journal)

    def abort(self) -> None:
        undo(self.journal, self.registry)


def run_transaction(attempt: RunStore, aliases: dict, register: Callable[[Transaction], Any],
                    latest_names: list[str], manifest_extra: dict | None,
                    manifest_name: str = MANIFEST, source_run_id: str | None = None,
                    name_prefix: str | None = None, still_holding: Callable[[], None] | None = None,
                    registry: Callable[[], Registrations] | None = None) -> Any:
    """Register, promote and switch ``latest/`` as one transaction; returns what ``register`` returned.

    ``register(tx)`` moves the aliases and reports each new version with ``tx.registered``;
    ``source_run_id`` (the MLflow run the versions are logged from) lets an undo find a
    version registered just before the process died. ``latest_names`` empty: the run
    folder is promoted but ``latest/`` is left alone. ``still_holding`` (e.g. the publish
    lock's ``check``) raises when another publish took the lock over; it is called before
    anything moves and again before the switch, so an overtaken publish rolls back.
    ``registry`` returns what undoes the registrations on a rollback (see ``undo``).
    """
    check = still_holding or (lambda: None)
    check()
    tx = Transaction.begin(attempt, aliases, source_run_id, name_prefix, registry)
    try:
        registered = register(tx)
        check()
        tx.promote()
        committed = attempt.committed()
        manifest = committed.manifest_record(latest_names, manifest_extra) if latest_names else None
        tx.switch(committed, latest_names, manifest, manifest_name)
    except BaseException as exc:
        if tx.journal.phase == SWITCHING:
            raise  # killed or failed mid-switch: ``recover`` finishes it from the journal
        try:
            tx.abort()
        except Exception as undo_exc:  # noqa: BLE001 - report both; the journal stays for ``recover``
            log.error("could not roll back the publish of %s: %s", attempt.run_id, undo_exc)
        if isinstance(exc, OSError):
            raise SourceError(f"publishing run {attempt.run_id} failed and was rolled back: {exc}") from exc
        raise
    return registered


def remove_temp_files(root: DataRoot) -> list[str]:
    """Delete ``.tmp-*`` files left in ``latest/`` by a killed write (call holding the publish lock)."""
    latest = root._join(LATEST)
    removed = []
    for info in root.fs.get_file_info(pafs.FileSelector(latest, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.base_name.startswith(TMP_PREFIX):
            root._delete_quietly(info.path)
            removed.append(info.path)
    return removed


def previous_path(attempt: RunStore) -> str:
    """Where ``RunStore.promote`` keeps the date's previous run folder until the publish ends."""
    return attempt._join(STAGING, attempt.folder, attempt.safe_id, f"{PREVIOUS}-{attempt.attempt}")
