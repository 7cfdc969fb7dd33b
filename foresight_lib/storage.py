"""Run folders under the data root: Parquet datasets and small files, written atomically.

Layout (``data_root`` is a local folder or ``s3://bucket/prefix``)::

    <data_root>/runs/<safe run id>/raw.parquet, validated.parquet, quarantine.parquet,
                                   features.parquet, backtests/<model>.parquet,
                                   leaderboard.parquet, forecasts.parquet,
                                   recommendations.parquet, validation/report.html, ...
    <data_root>/plans/<safe run id>/...   (the scaling-plan runs between two nightly runs)
    <data_root>/latest/forecasts.parquet, ..., _manifest.json, scaling_plan.parquet, _plan_manifest.json

A name without a file extension (``raw``, ``backtests/arima``) is a dataset stored as
``<name>.parquet``; a name with one (``validation/report.html``) is a file as given.

Every write is atomic: locally the object is written under a temporary name in the same
folder and then renamed over the target; on S3 an object only becomes visible once its
upload completes. A failed task therefore never leaves a half-written file behind.
"""
from __future__ import annotations

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

from foresight_lib.errors import DataError, SourceError

log = logging.getLogger(__name__)

DATASETS = ("raw", "validated", "quarantine", "features", "leaderboard", "forecasts", "recommendations")
"""The run's Parquet datasets; ``backtests/<model>`` and others may be added."""
LATEST = "latest"
MANIFEST = "_manifest.json"
RUNS = "runs"
_TMP_PREFIX = ".tmp-"
_SAFE_CHARS = re.compile(r"[A-Za-z0-9_.\-]")
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_MAX_NAME = 180


def safe_run_id(run_id: str) -> str:
    """A folder name for an Airflow run id, reversible with :func:`unsafe_run_id`.

    Letters, digits, ``_``, ``-`` and ``.`` are kept; every other byte of the UTF-8 text
    becomes ``~XX`` (hex), e.g. ``scheduled__2024-03-01T02:00:00+00:00`` ->
    ``scheduled__2024-03-01T02~3A00~3A00~2B00~3A00``. A leading dot is escaped too, so
    the name is never ``.`` or ``..`` or hidden. Names longer than 180 characters are cut
    and end with a hash of the full id (then no longer reversible, still unique).
    """
    if not run_id or not run_id.strip():
        raise DataError("empty run id; pass the Airflow run id (e.g. scheduled__2024-03-01T02:00:00+00:00)")
    out = []
    for i, char in enumerate(run_id):
        if _SAFE_CHARS.match(char) and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8"))
    safe = "".join(out)
    if len(safe) > _MAX_NAME:
        digest = uuid.uuid5(uuid.NAMESPACE_URL, run_id).hex[:12]
        safe = f"{safe[:_MAX_NAME - 13]}-{digest}"
    return safe


def unsafe_run_id(safe: str) -> str:
    """The run id a :func:`safe_run_id` name came from."""
    raw = bytearray()
    i = 0
    while i < len(safe):
        if safe[i] == "~" and re.fullmatch(r"[0-9A-F]{2}", safe[i + 1:i + 3]):
            raw.append(int(safe[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(safe[i].encode("utf-8"))
            i += 1
    return raw.decode("utf-8")


def _s3_filesystem() -> pafs.S3FileSystem:
    """An S3 client configured from the environment (MinIO via FORESIGHT_S3_ENDPOINT/AWS_ENDPOINT_URL)."""
    endpoint = os.environ.get("FORESIGHT_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
        "AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    }
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = host.rstrip("/")
        else:
            kwargs["endpoint_override"] = endpoint.rstrip("/")
        kwargs["force_virtual_addressing"] = False
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


def split_data_root(data_root: str) -> tuple[str, str]:
    """``(scheme, base path)``: ``("s3", "bucket/prefix")`` or ``("file", "/abs/folder")``."""
    text = str(data_root).strip()
    if text.startswith("s3://"):
        base = text[len("s3://"):].strip("/")
        if not base or base.startswith("/"):
            raise DataError(f"data root '{data_root}' names no bucket; write s3://bucket or s3://bucket/prefix")
        return "s3", base
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text) and not text.startswith("file://"):
        raise DataError(f"data root '{data_root}' is not supported; use a local folder or s3://bucket/prefix")
    if text.startswith("file://"):
        text = text[len("file://"):]
    if not text:
        raise DataError("empty data root; set data_root in the config or FORESIGHT_DATA_ROOT")
    return "file", os.path.abspath(os.path.expanduser(text))


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
            self.fs = _s3_filesystem()
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
        if not name or any(not _NAME_PART.match(p) or p.startswith(_TMP_PREFIX) for p in parts):
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
            tmp = f"{folder}/{_TMP_PREFIX}{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}"
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
            with self.fs.open_input_stream(path) as src:
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

    def read_latest(self, name: str) -> pd.DataFrame:
        """The published dataset ``name`` (from the last run that fully succeeded)."""
        path = self._join(LATEST, self.relpath(name))
        return _frame_from_bytes(self._read(path, f"published dataset '{name}'"), self._uri(path))

    def latest_manifest(self, name: str = MANIFEST) -> dict[str, Any] | None:
        """What was published last (run id, time, names), or None if nothing was.

        ``name``: ``_manifest.json`` for the nightly publish, ``_plan_manifest.json`` for the scaling plan's.
        """
        path = self._join(LATEST, name)
        if not self._exists(path):
            return None
        return json.loads(self._read(path, f"latest manifest {name}"))


class RunStore(DataRoot):
    """One DAG run's folder ``<data_root>/<folder>/<safe run id>/``.

    Args:
        data_root: a local folder or ``s3://bucket/prefix``.
        run_id: the Airflow run id (any text; mapped to a safe folder name).
        filesystem: optional pyarrow filesystem replacing the one ``data_root`` implies.
        folder: the folder of this kind of run: ``runs`` (nightly) or ``plans`` (scaling plan).
    """

    def __init__(self, data_root: str, run_id: str, filesystem: pafs.FileSystem | None = None,
                 folder: str = RUNS):
        super().__init__(data_root, filesystem)
        if not _NAME_PART.match(folder):
            raise DataError(f"invalid run folder '{folder}'; use letters, digits, '_', '-' and '.'")
        self.run_id = run_id
        self.folder = folder
        self.safe_id = safe_run_id(run_id)
        self.root = self._join(folder, self.safe_id)

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
                      if i.type == pafs.FileType.File and not i.base_name.startswith(_TMP_PREFIX))

    # -- lifecycle --------------------------------------------------------------------------
    def reset(self) -> None:
        """Delete this run's folder, so a re-run of the same date starts clean (other runs untouched)."""
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            return
        try:
            self.fs.delete_dir(self.root)
        except OSError as exc:
            raise SourceError(f"cannot delete run folder {self.uri()}: {exc}") from exc
        log.info("reset run folder %s", self.uri())

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

    def publish_latest(self, names: Iterable[str], manifest_name: str = MANIFEST) -> dict[str, str]:
        """Copy finished datasets/files of this run to ``<data_root>/latest/``.

        Each target is replaced only once every copy is complete (all copies are staged
        under temporary names first), so readers see either the old or the new version.
        A ``manifest_name`` file naming the run is written last (the scaling plan keeps its own, so
        that it never changes which nightly run ``latest`` belongs to).

        Returns:
            name -> URI of the published copy.

        Raises:
            DataError: a dataset is missing from the run folder (nothing is published then).
        """
        names = list(dict.fromkeys(names))
        missing = [n for n in names if not self.exists(n)]
        if missing:
            raise DataError(f"cannot publish {missing}: not in run folder {self.uri()}; "
                            "publish only after the steps that write them succeeded")
        latest = self._join(LATEST)
        self.fs.create_dir(latest, recursive=True)
        published: dict[str, str] = {}
        if self.scheme == "s3":
            for name in names:
                target = self._join(LATEST, self.relpath(name))
                self.fs.copy_file(self.path(name), target)  # server-side copy: atomic per object
                published[name] = self._uri(target)
        else:
            staged: list[tuple[str, str, str]] = []
            try:
                for name in names:
                    target = self._join(LATEST, self.relpath(name))
                    folder, base = target.rsplit("/", 1)
                    self.fs.create_dir(folder, recursive=True)
                    tmp = f"{folder}/{_TMP_PREFIX}{uuid.uuid4().hex}-{base}"
                    self.fs.copy_file(self.path(name), tmp)
                    staged.append((name, tmp, target))
            except BaseException:
                for _, tmp, _ in staged:
                    self._delete_quietly(tmp)
                raise
            for name, tmp, target in staged:
                self.fs.move(tmp, target)
                published[name] = self._uri(target)
        record = {"run_id": self.run_id, "run_folder": self.uri(), "names": names,
                  "published_at": datetime.now(UTC).isoformat()}
        self._write_atomic(self._join(LATEST, manifest_name), json.dumps(record, indent=2).encode("utf-8"))
        log.info("published %s from %s to %s", names, self.uri(), self._uri(latest))
        return published


def _frame_from_bytes(data: bytes, where: str) -> pd.DataFrame:
    try:
        return pq.read_table(pa.BufferReader(data)).to_pandas()
    except pa.ArrowException as exc:
        raise DataError(f"{where} is not a readable Parquet file: {exc}; re-run the step that writes it") from exc
