"""Source files on S3: ``s3://bucket/key`` read by the loaders as they read a local path.

``S3Path`` has the part of ``pathlib.Path`` the loaders use (``name``, ``stem``,
``suffix``, ``with_name``, ``is_file``, ``exists``, ``stat().st_size``, ``rglob``) and
reads an object's bytes (``read_bytes``, ``read_head``), so every format reads a file or
a folder of files on S3 unchanged. A folder is listed once; the paths found in it share
that listing, so looking up a sibling (a long file's series table) costs no request.

The endpoint, region and credentials are the data root's (``locations.s3_filesystem``:
``FORESIGHT_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``…).
A missing key is found as for a local file (``exists`` is False, ``read_bytes`` raises
``DataError``) and named by its ``s3://`` URI; any other S3 failure (refused credentials,
the endpoint away) is a ``SourceError`` naming the URI.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import NamedTuple, TypeVar

import pyarrow.fs as pafs

from foresight_lib.errors import DataError, SourceError
from foresight_lib.locations import s3_filesystem

SCHEME = "s3://"
HEAD_CHUNK = 64 * 1024
"""Bytes read at a time from the start of an object until its first line ends (``read_head``)."""

_T = TypeVar("_T")


def is_s3_uri(path: object) -> bool:
    """Whether ``path`` is text that names an object or folder on S3 (``s3://bucket/...``)."""
    return isinstance(path, str) and path.strip().startswith(SCHEME)


class FileSize(NamedTuple):
    """What ``S3Path.stat`` tells, as ``os.stat_result`` names it."""

    st_size: int


class _Listing:
    """A folder's objects (path -> size), listed once and shared by the paths found in it."""

    def __init__(self, root: str, sizes: dict[str, int]):
        self.root = root
        self.sizes = sizes

    def covers(self, path: str) -> bool:
        return path.startswith(self.root.rstrip("/") + "/")


class S3Path:
    """An object or folder on S3, named ``s3://bucket/key``.

    Args:
        uri: ``s3://bucket``, ``s3://bucket/folder`` or ``s3://bucket/folder/file.csv``
            (a trailing ``/`` is dropped).
        filesystem: the pyarrow filesystem to use (default: ``locations.s3_filesystem()``,
            made on first use and shared with the paths made from this one).

    Raises:
        DataError: the URI names no bucket.
    """

    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None, *, _listing: _Listing | None = None):
        text = str(uri).strip()
        if not text.startswith(SCHEME):
            raise DataError(f"{uri}: not an s3:// URI; write s3://bucket/key")
        self.path = text[len(SCHEME):].strip("/")
        """The bucket and key as pyarrow names them: ``bucket/folder/file.csv``."""
        if not self.path or self.path.startswith("/"):
            raise DataError(f"{uri}: names no bucket; write s3://bucket/folder or s3://bucket/folder/file.csv")
        self._fs = filesystem
        self._listing = _listing
        self._info: pafs.FileInfo | None = None

    # -- names ----------------------------------------------------------------------------
    def __str__(self) -> str:
        return SCHEME + self.path

    def __repr__(self) -> str:
        return f"S3Path({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Path) and other.path == self.path

    def __lt__(self, other: S3Path) -> bool:
        return self.path < other.path

    def __hash__(self) -> int:
        return hash((S3Path, self.path))

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def with_name(self, name: str) -> S3Path:
        """The object beside this one called ``name`` (it shares this one's listing)."""
        parent = self.path.rsplit("/", 1)[0] if "/" in self.path else self.path
        return self._child(f"{parent}/{name}")

    def _child(self, path: str) -> S3Path:
        return S3Path(SCHEME + path, self.filesystem, _listing=self._listing)

    @property
    def filesystem(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs = s3_filesystem()
        return self._fs

    # -- what is there --------------------------------------------------------------------
    def _call(self, action: Callable[[], _T]) -> _T:
        """``action()``; an S3 failure other than a missing key becomes a ``SourceError`` naming this URI."""
        try:
            return action()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SourceError(
                f"cannot read {self}: {exc}; check the bucket, the S3 endpoint (FORESIGHT_S3_ENDPOINT or "
                "AWS_ENDPOINT_URL) and the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
            ) from exc

    def _file_info(self) -> pafs.FileInfo:
        if self._info is None:
            self._info = self._call(lambda: self.filesystem.get_file_info(self.path))
        return self._info

    def is_file(self) -> bool:
        if self._listing is not None and self._listing.covers(self.path):
            return self.path in self._listing.sizes
        return self._file_info().type == pafs.FileType.File

    def exists(self) -> bool:
        """An object of this key, or a folder: objects below ``key/`` (a bucket counts as a folder)."""
        return self._file_info().type != pafs.FileType.NotFound

    def stat(self) -> FileSize:
        if self._listing is not None and self.path in self._listing.sizes:
            return FileSize(self._listing.sizes[self.path])
        info = self._file_info()
        if info.type != pafs.FileType.File:
            raise DataError(f"{self}: no such file; check the input path")
        return FileSize(int(info.size or 0))

    def _files_below(self) -> _Listing:
        """Every object below this folder (folder markers left out), listed once."""
        if self._listing is None or self._listing.root != self.path:
            selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
            infos = self._call(lambda: self.filesystem.get_file_info(selector))
            self._listing = _Listing(self.path, {i.path: int(i.size or 0) for i in infos
                                                 if i.type == pafs.FileType.File})
        return self._listing

    def rglob(self, pattern: str) -> list[S3Path]:
        """The objects below this folder, at any depth, whose name matches ``pattern`` (``*.csv``)."""
        listing = self._files_below()
        return [self._child(path) for path in sorted(listing.sizes)
                if fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)]

    def glob_files(self) -> list[S3Path]:
        """The objects this path matches as a glob pattern (``s3://b/exports/**/*.csv``), sorted.

        As ``glob.glob(..., recursive=True)``: ``*``, ``?`` and ``[...]`` match within one
        part of the key, ``**`` any number of folders, and names starting with ``.`` only a
        pattern part that starts with ``.``.
        """
        parts = self.path.split("/")
        fixed = next((i for i, part in enumerate(parts) if _has_magic(part)), len(parts))
        if fixed == 0:
            raise DataError(f"{self}: the bucket name cannot be a pattern; write s3://bucket/folder/*.csv")
        folder = S3Path(SCHEME + "/".join(parts[:fixed]), self.filesystem)
        listing = folder._files_below()
        matched = [path for path in sorted(listing.sizes) if _matches(parts[fixed:], path.split("/")[fixed:])]
        return [S3Path(SCHEME + path, self.filesystem, _listing=listing) for path in matched]

    # -- reading --------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        """The whole object, in one request.

        Raises:
            DataError: no object of this key.
            SourceError: S3 refused or could not be reached.
        """
        def read() -> bytes:
            with self.filesystem.open_input_file(self.path) as src:
                return src.read()

        try:
            return self._call(read)
        except FileNotFoundError:
            raise DataError(f"{self}: no such file; check the input path") from None

    def read_head(self) -> bytes:
        """The start of the object up to the end of its first line (or all of it), for a header."""
        def read() -> bytes:
            head = b""
            with self.filesystem.open_input_file(self.path) as src:
                while True:
                    chunk = src.read_at(HEAD_CHUNK, len(head))
                    head += chunk
                    if len(chunk) < HEAD_CHUNK or b"\n" in chunk or b"\r" in chunk:
                        return head

        try:
            return self._call(read)
        except FileNotFoundError:
            raise DataError(f"{self}: no such file; check the input path") from None


def _has_magic(part: str) -> bool:
    return any(ch in part for ch in "*?[")


def _matches(pattern: list[str], names: list[str]) -> bool:
    """Whether the key parts ``names`` match the glob pattern parts ``pattern``."""
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_matches(pattern[1:], names[i:]) for i in range(len(names) + 1)
                   if not any(name.startswith(".") for name in names[:i]))
    if not names or (names[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], pattern[0]) and _matches(pattern[1:], names[1:])
