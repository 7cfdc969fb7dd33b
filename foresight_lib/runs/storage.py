"""Run folders under the data root: Parquet datasets and small files, written atomically.

Layout (``data_root`` is a local folder or ``s3://bucket/prefix``)::

    <data_root>/runs/<safe run id>/raw.parquet, validated.parquet, quarantine.parquet,
                                   features.parquet, backtests/<model>.parquet,
                                   leaderboard.parquet, forecasts.parquet,
                                   recommendations.parquet, validation/report.html, ...
    <data_root>/plans/<safe run id>/...   (the scaling-plan runs between two nightly runs)
    <data_root>/latest/forecasts.parquet, ..., _manifest.json, scaling_plan.parquet, _plan_manifest.json
    <data_root>/staging/runs/<safe run id>/<attempt>/...   (a run being made, see below)
    <data_root>/locks/runs/<safe run id>.json              (``foresight_lib.runs.lock``)

A name without a file extension (``raw``, ``backtests/arima``) is a dataset stored as
``<name>.parquet``; a name with one (``validation/report.html``) is a file as given.

Every write is atomic: locally the object is written under a temporary name in the same
folder and then renamed over the target; on S3 an object only becomes visible once its
upload completes. A failed task therefore never leaves a half-written file behind.

A run is made in its own attempt folder under ``staging/`` (``RunStore(..., attempt=…)``)
and replaces the date's folder under ``runs/`` only once it has succeeded
(``RunStore.promote``), so a failed or killed re-run of a date leaves the date's
published run folder as it was.

Readers of ``latest/`` (``read_latest``, ``read_latest_json``, ``latest_manifest``,
``has_latest``) follow the publish journal (``locks/publish_journal.json``, see
``foresight_lib.runs.transaction``): once it says the switch of ``latest/`` has begun,
a file not renamed yet is read from its staged copy. So from the first read after a
publish was killed at any point, they see the previous publish whole or the new one
whole, never a mix, before anything has recovered.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from foresight_lib.errors import DataError, ForesightError, SourceError
from foresight_lib.frames import read_parquet_frame
from foresight_lib.locations import s3_filesystem, safe_run_id, split_data_root
from foresight_lib.runs.lock import LOCKS

log = logging.getLogger(__name__)

DATASETS = ("raw", "validated", "quarantine", "features", "leaderboard", "forecasts", "recommendations")
"""The run's Parquet datasets; ``backtests/<model>`` and others may be added."""
LATEST = "latest"
MANIFEST = "_manifest.json"
RUNS = "runs"
STAGING = "staging"
PREVIOUS = ".previous"
"""Prefix of the folder under ``staging/`` where a promotion keeps the date's previous run folder."""
TMP_PREFIX = ".tmp-"
"""Prefix of a file being written or staged: never read as a dataset, removed after a killed write."""
JOURNAL = "publish_journal.json"
"""The publish journal, under ``locks/`` (written by ``foresight_lib.runs.transaction``)."""
SWITCHING = "switching"
"""The journal's phase once every file for ``latest/`` is staged: the publish is decided, readers follow it."""
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class DataRoot:
    """The data root: run folders and the published ``latest`` folder.

    Args:
        data_root: a local folder or ``s3://bucket/prefix``.
        filesystem: a pyarrow filesystem to use instead of the one ``data_root`` implies
            (tests pass an in-memory one).
    """

    def __init__(self, data_root: str, filesystem: pafs.FileSystem | None = None):
        self.data_root = str(data_root)
        self.scheme, self.base = split_data_root(self.data_root)
        if filesystem is not None:
            self.fs = filesystem
        elif self.scheme == "s3":
            self.fs = s3_filesystem()
        else:
            self.fs = pafs.LocalFileSystem()

    # -- paths ------------------------------------------------------------------------
    @staticmethod
    def relpath(name: str) -> str:
        """The path of a dataset or file below its folder: ``raw`` -> ``raw.parquet``.

        Raises:
            DataError: the name is empty, absolute, or climbs out of the folder.
        """
        parts = str(name).split("/")
        if not name or any(not _NAME_PART.match(p) or p.startswith(TMP_PREFIX) for p in parts):
            raise DataError(
                f"invalid dataset or file name '{name}'; use letters, digits, '_', '-', '.' and '/' "
                "between parts (e.g. raw, backtests/arima, validation/report.html)"
            )
        if not PurePosixPath(parts[-1]).suffix:
            parts[-1] += ".parquet"
        return "/".join(parts)

    def _join(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def _uri(self, path: str) -> str:
        return f"s3://{path}" if self.scheme == "s3" else path

    # -- low-level atomic I/O ----------------------------------------------------------
    def _write_atomic(self, path: str, data: bytes) -> None:
        folder = path.rsplit("/", 1)[0]
        try:
            self.fs.create_dir(folder, recursive=True)
            if self.scheme == "s3":
                with self.fs.open_output_stream(path) as out:  # visible only once the upload completes
                    out.write(data)
                return
            tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}"
            try:
                with self.fs.open_output_stream(tmp) as out:
                    out.write(data)
                self.fs.move(tmp, path)
            except BaseException:
                self._delete_quietly(tmp)
                raise
        except OSError as exc:
            raise SourceError(
                f"cannot write {self._uri(path)}: {exc}; check the data root and its permissions"
            ) from exc

    def _delete_quietly(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (OSError, FileNotFoundError):
            pass

    def _read(self, path: str, what: str) -> bytes:
        try:
            # A random-access file reads its whole size at once (one GET on S3); a stream would be
            # read in small chunks, each a request, which is slow for a large result.
            with self.fs.open_input_file(path) as src:
                return src.read()
        except FileNotFoundError:
            raise DataError(f"{what} not found at {self._uri(path)}; run the step that writes it first") from None
        except OSError as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                raise DataError(f"{what} not found at {self._uri(path)}; run the step that writes it first") from None
            raise SourceError(f"cannot read {self._uri(path)}: {exc}") from exc

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    # -- latest --------------------------------------------------------------------------
    def latest_uri(self, name: str) -> str:
        return self._uri(self._join(LATEST, self.relpath(name)))

    def _switching(self) -> dict[str, str]:
        """target -> staged copy of a switch of ``latest/`` under way or interrupted (empty when none).

        The journal's phase ``switching`` is the point where a publish is decided: every new
        file is staged whole by then, and each is renamed over its target; whoever reads a
        target whose staged copy is still there reads the copy instead.
        """
        path = self.journal_path()
        try:
            if not self._exists(path):
                return {}
            journal = json.loads(self._read(path, "publish journal"))
        except (ForesightError, ValueError):
            return {}  # removed meanwhile (the switch ended), or being rewritten: latest/ as it is
        if journal.get("phase") != SWITCHING:
            return {}
        return {target: tmp for _name, tmp, target in journal.get("staged") or []}

    def journal_path(self) -> str:
        """Where the publish journal lives (its change tells a reader's cache that ``latest/`` may have moved)."""
        return self._join(LOCKS, JOURNAL)

    def published_path(self, name: str) -> str:
        """The path of ``latest/<name>`` as published now: its staged copy while a switch has not renamed it."""
        path = self._join(LATEST, self.relpath(name))
        tmp = self._switching().get(path)
        return tmp if tmp is not None and self._exists(tmp) else path

    def _read_published(self, path: str, what: str) -> bytes:
        """The bytes of ``latest/`` file ``path`` as published (see ``_switching``)."""
        tmp = self._switching().get(path)
        if tmp is not None:
            try:
                with self.fs.open_input_file(tmp) as src:
                    return src.read()
            except OSError:
                pass  # renamed over the target meanwhile
        return self._read(path, what)

    def _is_published(self, path: str) -> bool:
        if self._exists(path):
            return True
        tmp = self._switching().get(path)
        return tmp is not None and (self._exists(tmp) or self._exists(path))

    def read_latest(self, name: str) -> pd.DataFrame:
        """The published dataset ``name`` (from the last run that fully succeeded)."""
        path = self._join(LATEST, self.relpath(name))
        return _frame_from_bytes(self._read_published(path, f"published dataset '{name}'"), self._uri(path))

    def has_latest(self, name: str) -> bool:
        """Whether ``name`` (a dataset, or a file such as ``summary.json``) is published under ``latest/``."""
        return self._is_published(self._join(LATEST, self.relpath(name)))

    def read_latest_json(self, name: str) -> Any | None:
        """A published JSON file (``summary.json``), or None when there is none."""
        path = self._join(LATEST, self.relpath(name))
        if not self._is_published(path):
            return None
        return json.loads(self._read_published(path, f"published file '{name}'"))

    def stage_manifest(self, manifest: dict, manifest_name: str = MANIFEST) -> list[str]:
        """Write a manifest into ``latest/`` under a temporary name: ``[name, tmp, target]`` for ``switch_latest``."""
        folder = self._join(LATEST)
        tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}-{manifest_name}"
        try:
            self.fs.create_dir(folder, recursive=True)
            with self.fs.open_output_stream(tmp) as out:
                out.write(json.dumps(manifest, indent=2).encode("utf-8"))
        except OSError as exc:
            self._delete_quietly(tmp)
            raise SourceError(f"cannot stage the manifest in {self._uri(folder)}: {exc}; free space or fix "
                              "permissions there and run again (nothing was published)") from exc
        return [manifest_name, tmp, f"{folder}/{manifest_name}"]

    def switch_latest(self, staged: list[list[str]]) -> None:
        """Rename staged files over their targets, in order (the manifest last): renames only, no new space."""
        for _name, tmp, target in staged:
            if self._exists(tmp):
                self.fs.move(tmp, target)

    def latest_manifest(self, name: str = MANIFEST) -> dict[str, Any] | None:
        """What was published last (run id, time, names), or None if nothing was.

        ``name``: ``_manifest.json`` for the nightly publish, ``_plan_manifest.json`` for the scaling plan's.
        """
        path = self._join(LATEST, name)
        if not self._is_published(path):
            return None
        return json.loads(self._read_published(path, f"latest manifest {name}"))


class RunStore(DataRoot):
    """One DAG run's folder ``<data_root>/<folder>/<safe run id>/``.

    Args:
        data_root: a local folder or ``s3://bucket/prefix``.
        run_id: the Airflow run id (any text; mapped to a safe folder name).
        filesystem: optional pyarrow filesystem replacing the one ``data_root`` implies.
        folder: the folder of this kind of run: ``runs`` (nightly) or ``plans`` (scaling plan).
    """

    def __init__(self, data_root: str, run_id: str, filesystem: pafs.FileSystem | None = None,
                 folder: str = RUNS, attempt: str | None = None):
        super().__init__(data_root, filesystem)
        if not _NAME_PART.match(folder):
            raise DataError(f"invalid run folder '{folder}'; use letters, digits, '_', '-' and '.'")
        if attempt is not None and (not _NAME_PART.match(attempt) or attempt.startswith(".")):
            raise DataError(f"invalid attempt name '{attempt}'; use letters, digits, '_', '-' and '.'")
        self.run_id = run_id
        self.folder = folder
        self.attempt = attempt
        self.safe_id = safe_run_id(run_id)
        self.root = (self._join(STAGING, folder, self.safe_id, attempt) if attempt
                     else self._join(folder, self.safe_id))

    def committed(self) -> RunStore:
        """The date's run folder under ``runs/`` (this store when it is not an attempt)."""
        if self.attempt is None:
            return self
        return RunStore(self.data_root, self.run_id, filesystem=self.fs, folder=self.folder)

    def __repr__(self) -> str:
        return f"RunStore({self.uri('')!r})"

    def path(self, name: str) -> str:
        return f"{self.root}/{self.relpath(name)}" if name else self.root

    def uri(self, name: str = "") -> str:
        """Where ``name`` lives: a local path or an ``s3://`` URI (the run folder for ``""``)."""
        return self._uri(self.path(name))

    def exists(self, name: str) -> bool:
        return self._exists(self.path(name))

    # -- frames ----------------------------------------------------------------------------
    def write_frame(self, name: str, df: pd.DataFrame) -> str:
        """Write ``df`` as Parquet dataset ``name`` atomically; returns its URI."""
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"dataset '{name}' must be a pandas DataFrame, got {type(df).__name__}")
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DataError(f"dataset '{name}' cannot be stored as Parquet: {exc}; "
                            "give every column a single type") from exc
        sink = io.BytesIO()
        pq.write_table(table, sink)
        path = f"{self.root}/{self.relpath(name)}"
        self._write_atomic(path, sink.getvalue())
        log.debug("wrote %s (%d rows)", self._uri(path), len(df))
        return self._uri(path)

    def read_frame(self, name: str) -> pd.DataFrame:
        """The dataset ``name`` of this run."""
        path = self.path(name)
        return _frame_from_bytes(self._read(path, f"dataset '{name}' of run {self.run_id}"), self._uri(path))

    # -- files -------------------------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write a file (e.g. ``validation/report.html``) atomically; returns its URI."""
        path = f"{self.root}/{self.relpath(relpath)}"
        self._write_atomic(path, bytes(data))
        return self._uri(path)

    def read_bytes(self, relpath: str) -> bytes:
        return self._read(self.path(relpath), f"file '{relpath}' of run {self.run_id}")

    def write_text(self, relpath: str, text: str) -> str:
        return self.write_bytes(relpath, text.encode("utf-8"))

    def write_json(self, relpath: str, obj: Any) -> str:
        """Write ``obj`` as indented JSON; timestamps and other objects become text."""
        return self.write_bytes(relpath, json.dumps(obj, indent=2, default=str, sort_keys=False).encode("utf-8"))

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath))

    def list_files(self) -> list[str]:
        """Relative paths of every file in the run folder, sorted."""
        info = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        prefix = self.root.rstrip("/") + "/"
        return sorted(i.path[len(prefix):] for i in info
                      if i.type == pafs.FileType.File and not i.base_name.startswith(TMP_PREFIX))

    # -- lifecycle --------------------------------------------------------------------------
    def promote(self) -> Promotion:
        """Make this attempt the date's run folder; ``commit()`` or ``rollback()`` the returned promotion.

        Locally two renames: the date's folder (if any) moves aside to
        ``staging/<folder>/<id>/.previous-<attempt>``, then the attempt takes its place; a
        rollback puts both back. On S3, where nothing renames, the attempt's objects are
        copied over the date's prefix and the date's other objects deleted (each copy is
        atomic; a rollback is not possible there and the caller is told so).
        """
        if self.attempt is None:
            raise DataError(f"{self.uri()} is already the date's run folder; only an attempt is promoted")
        return Promotion(self)

    def attempts(self) -> list[str]:
        """The attempt folders of this run id under ``staging/`` (finished or not), oldest name first."""
        parent = self._join(STAGING, self.folder, self.safe_id)
        info = self.fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
        return sorted(i.base_name for i in info
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))

    def remove_attempts(self, keep: Iterable[str] = ()) -> list[str]:
        """Delete this run id's attempt folders but ``keep`` (and this store's own)."""
        parent = self._join(STAGING, self.folder, self.safe_id)
        spared = {*keep, self.attempt}
        removed = []
        for name in self.attempts():
            if name in spared:
                continue
            try:
                self.fs.delete_dir(f"{parent}/{name}")
                removed.append(name)
            except OSError as exc:
                log.warning("cannot delete attempt folder %s: %s", self._uri(f"{parent}/{name}"), exc)
        if self.scheme != "s3" and not self.attempts() and not spared - {None}:
            with contextlib.suppress(OSError):  # only when empty: a promotion's kept-aside folder stays
                os.rmdir(parent)
        return removed

    def prune_failed_attempts(self, older_than: pd.Timedelta, now: pd.Timestamp | None = None) -> list[str]:
        """Delete the attempt folders of every run id of this kind that began more than ``older_than`` ago.

        An attempt that failed stays for a look until its date succeeds; dates that are never
        run again would keep theirs for ever. Attempt names begin with their start time
        (``20240315T020312Z-…``); other names are left alone.

        Returns:
            ``<run id>/<attempt>`` of each deleted folder.
        """
        cutoff = (now or pd.Timestamp.now(tz="UTC")) - older_than
        staging = self._join(STAGING, self.folder)
        removed = []
        for run in self.fs.get_file_info(pafs.FileSelector(staging, allow_not_found=True)):
            if run.type != pafs.FileType.Directory:
                continue
            for item in self.fs.get_file_info(pafs.FileSelector(run.path, allow_not_found=True)):
                started = pd.to_datetime(item.base_name[:16], format="%Y%m%dT%H%M%SZ", errors="coerce", utc=True)
                if item.type != pafs.FileType.Directory or pd.isna(started) or started >= cutoff \
                        or item.base_name == self.attempt:
                    continue
                try:
                    self.fs.delete_dir(item.path)
                    removed.append(f"{run.base_name}/{item.base_name}")
                except OSError as exc:
                    log.warning("cannot delete old attempt folder %s: %s", self._uri(item.path), exc)
        return removed

    def prune_siblings(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest run folders of this kind (this one is always kept).

        Run folders are named by their date (``run_key_for``), so the name orders them.

        Returns:
            The names of the deleted folders.
        """
        parent = self._join(self.folder)
        info = self.fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
        names = sorted(i.base_name for i in info if i.type == pafs.FileType.Directory)
        older = [n for n in names[:max(len(names) - max(keep, 1), 0)] if n != self.safe_id]
        for name in older:
            try:
                self.fs.delete_dir(f"{parent}/{name}")
            except OSError as exc:
                log.warning("cannot delete old run folder %s: %s", self._uri(f"{parent}/{name}"), exc)
        return older

    def stage_latest(self, names: Iterable[str]) -> list[list[str]]:
        """Copy finished datasets/files of this run into ``latest/`` under temporary names.

        Returns:
            ``[name, temporary path, target path]`` per name, for ``switch_latest``.

        Raises:
            DataError: a dataset is missing from the run folder (nothing is staged then).
            SourceError: a copy failed (a full disk, no permission); nothing staged is left behind.
        """
        names = list(dict.fromkeys(names))
        missing = [n for n in names if not self.exists(n)]
        if missing:
            raise DataError(f"cannot publish {missing}: not in run folder {self.uri()}; "
                            "publish only after the steps that write them succeeded")
        staged: list[list[str]] = []
        try:
            for name in names:
                target = self._join(LATEST, self.relpath(name))
                folder, base = target.rsplit("/", 1)
                self.fs.create_dir(folder, recursive=True)
                tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}-{base}"
                staged.append([name, tmp, target])
                self.fs.copy_file(self.path(name), tmp)
        except BaseException as exc:
            for _, tmp, _ in staged:
                self._delete_quietly(tmp)
            if isinstance(exc, OSError):
                raise SourceError(f"cannot stage the published files in {self._uri(self._join(LATEST))}: {exc}; "
                                  "free space or fix permissions there and run again (nothing was published)"
                                  ) from exc
            raise
        return staged

    def manifest_record(self, names: list[str], extra: dict | None = None) -> dict[str, Any]:
        """What ``latest/_manifest.json`` says about this run's publish."""
        return {"run_id": self.run_id, "run_folder": self.uri(), "names": names,
                "published_at": datetime.now(UTC).isoformat(), **(extra or {})}

    def publish_latest(self, names: Iterable[str], manifest_name: str = MANIFEST,
                       extra: dict | None = None) -> dict[str, str]:
        """Copy finished datasets/files of this run to ``<data_root>/latest/``, the manifest last.

        Each target is replaced only once every copy is complete (all are staged under
        temporary names first), so readers see either the old or the new version of each.
        The pipeline publishes through ``foresight_lib.runs.transaction``, which journals the same
        two steps so that a killed publish is finished or undone; this is the plain form.

        Returns:
            name -> URI of the published copy.
        """
        staged = self.stage_latest(names)
        published = {name: self._uri(target) for name, _, target in staged}
        try:
            staged.append(self.stage_manifest(self.manifest_record(list(published), extra), manifest_name))
        except BaseException:
            for _, tmp, _ in staged:
                self._delete_quietly(tmp)
            raise
        self.switch_latest(staged)
        log.info("published %s from %s", list(published), self.uri())
        return published


class Promotion:
    """An attempt made the date's run folder, until ``commit()`` (drop the old one) or ``rollback()``."""

    def __init__(self, attempt: RunStore):
        self.attempt = attempt
        self.target = attempt.committed()
        fs = attempt.fs
        self.previous = attempt._join(STAGING, attempt.folder, attempt.safe_id, f"{PREVIOUS}-{attempt.attempt}")
        # foresight_lib.runs.transaction.previous_path names the same folder in its journal
        self.had_previous = fs.get_file_info(self.target.root).type == pafs.FileType.Directory
        self.done = False
        try:
            if attempt.scheme == "s3":
                self._copy_s3()
            else:
                fs.create_dir(self.target.root.rsplit("/", 1)[0], recursive=True)
                if self.had_previous:
                    fs.move(self.target.root, self.previous)
                try:
                    fs.move(attempt.root, self.target.root)
                except BaseException:
                    if self.had_previous:
                        fs.move(self.previous, self.target.root)
                    raise
        except OSError as exc:
            raise SourceError(f"cannot make {attempt.uri()} the run folder {self.target.uri()}: {exc}") from exc
        log.info("attempt %s is now the run folder %s", attempt.attempt, self.target.uri())

    def _copy_s3(self) -> None:
        fs = self.attempt.fs
        selector = pafs.FileSelector(self.attempt.root, recursive=True, allow_not_found=True)
        new = [i.path[len(self.attempt.root) + 1:] for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
        for rel in new:
            fs.copy_file(f"{self.attempt.root}/{rel}", f"{self.target.root}/{rel}")
        keep = set(new)
        for rel in self.target.list_files():
            if rel not in keep:
                self.attempt._delete_quietly(f"{self.target.root}/{rel}")
        fs.delete_dir(self.attempt.root)

    def commit(self) -> None:
        """Delete the date's previous run folder (kept aside until now)."""
        if self.done:
            return
        self.done = True
        if self.had_previous and self.attempt.scheme != "s3":
            try:
                self.attempt.fs.delete_dir(self.previous)
            except OSError as exc:
                log.warning("cannot delete the previous run folder %s: %s", self.attempt._uri(self.previous), exc)

    def rollback(self) -> bool:
        """Put the date's previous run folder back and the attempt where it was; False on S3 (not possible)."""
        if self.done:
            return False
        self.done = True
        if self.attempt.scheme == "s3":
            log.error("the run folder %s keeps the failed attempt's files: S3 has no rename to undo the copy",
                      self.target.uri())
            return False
        fs = self.attempt.fs
        fs.move(self.target.root, self.attempt.root)
        if self.had_previous:
            fs.move(self.previous, self.target.root)
        log.info("rolled back run folder %s to its previous content", self.target.uri())
        return True


def _frame_from_bytes(data: bytes, where: str) -> pd.DataFrame:
    """The Parquet file's frame, its ``unique_id`` column categorical (``frames.read_parquet_frame``)."""
    try:
        return read_parquet_frame(pa.BufferReader(data))
    except pa.ArrowException as exc:
        raise DataError(f"{where} is not a readable Parquet file: {exc}; re-run the step that writes it") from exc
