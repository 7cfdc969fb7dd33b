"""One run at a time per data root and date: a lock file beside the run folders.

Two runs of the same date (a backfill and a manual re-run seconds apart) would otherwise
race to replace one run folder and one published ``latest/``. The lock is an object
``<data_root>/locks/<folder>/<run key>.json`` created only if it does not exist yet
(``O_EXCL`` on a local folder, a conditional ``PUT`` with ``If-None-Match: *`` on S3),
naming the run and the attempt that holds it.

An Airflow run's tasks are separate processes, so the lock outlives each of them: it is
taken at extract, checked by every later step, and released when the run ends (its
publish, or the DAG's teardown task when a step failed). It is taken over when
- it is the same Airflow run again (a retry or a clear of its extract), or
- its holder is dead: an in-process run (``owner_pid``) whose process is gone on this
  host, or any holder older than ``publish.lock_timeout``.
Otherwise a second run fails at once with ``RunLocked``, naming the run that holds it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pandas as pd

from foresight_lib.errors import ForesightError, RunLocked, SourceError
from foresight_lib.scratch import process_alive

log = logging.getLogger(__name__)

LOCKS = "locks"
UNREADABLE_GRACE_S = 30.0
"""A lock object still unreadable this long after its last write is a failed write, not a run."""


@dataclass(frozen=True)
class LockOwner:
    run_id: str
    attempt: str
    host: str
    pid: int | None
    acquired_at: str

    @classmethod
    def now(cls, run_id: str, attempt: str, owner_pid: int | None) -> LockOwner:
        return cls(run_id=run_id, attempt=attempt, host=socket.gethostname(), pid=owner_pid,
                   acquired_at=datetime.now(UTC).isoformat())

    def describe(self) -> str:
        who = f"run {self.run_id!r} (attempt {self.attempt}, since {self.acquired_at}, on {self.host}"
        return who + (f", pid {self.pid})" if self.pid else ")")


class RunLock:
    """The lock of one run key under a data root (``store`` is any ``DataRoot``)."""

    def __init__(self, store, folder: str, run_key: str, timeout: pd.Timedelta):
        self.store = store
        self.timeout = timeout
        self.path = store._join(LOCKS, folder, f"{run_key}.json")
        self.run_key = run_key

    # -- reading and writing the lock object ------------------------------------------
    def owner(self) -> LockOwner | None:
        """Who holds the lock now, or None."""
        if not self.store._exists(self.path):
            return None
        try:
            data = json.loads(self.store._read(self.path, f"lock of {self.run_key}"))
            return LockOwner(**{k: data.get(k) for k in LockOwner.__dataclass_fields__})
        except (ForesightError, ValueError, TypeError):
            return None  # deleted between the two calls, or unreadable: treated as free

    def _create(self, owner: LockOwner) -> bool:
        """Create the lock object if there is none; False when another one exists."""
        data = json.dumps(asdict(owner), indent=2).encode("utf-8")
        folder = self.path.rsplit("/", 1)[0]
        if self.store.scheme == "s3":
            return _s3_put_if_absent(self.path, data)
        try:
            self.store.fs.create_dir(folder, recursive=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise SourceError(f"cannot create the run lock {self.path}: {exc}; check the data root") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            self._delete()
            raise SourceError(f"cannot write the run lock {self.path}: {exc}; free space or fix permissions "
                              "under the data root") from exc
        return True

    def _delete(self) -> None:
        self.store._delete_quietly(self.path)

    def _unreadable_for(self) -> float:
        """Seconds since an existing but unreadable lock object was last written (0 when absent)."""
        info = self.store.fs.get_file_info(self.path)
        if info.mtime is None:
            return 0.0
        return (datetime.now(UTC) - info.mtime.astimezone(UTC)).total_seconds()

    # -- the protocol -------------------------------------------------------------------
    def stale(self, owner: LockOwner) -> str | None:
        """Why ``owner`` no longer holds the lock, or None when it may still be running."""
        if owner.pid and owner.host == socket.gethostname() and not process_alive(int(owner.pid)):
            return f"its process {owner.pid} is gone"
        try:
            age = pd.Timestamp.now(tz="UTC") - pd.Timestamp(owner.acquired_at)
        except (TypeError, ValueError):
            return "its lock is unreadable"
        if age > self.timeout:
            return f"it was taken {age} ago, more than publish.lock_timeout ({self.timeout})"
        return None

    def acquire(self, run_id: str, attempt: str, owner_pid: int | None = None) -> LockOwner:
        """Take the lock for ``attempt`` of ``run_id``.

        Raises:
            RunLocked: another live run of the same date holds it.
        """
        mine = LockOwner.now(run_id, attempt, owner_pid)
        for _ in range(50):
            if self._create(mine):
                log.info("took the lock of %s for %s", self.run_key, mine.describe())
                return mine
            other = self.owner()
            if other is None:
                if self._unreadable_for() > UNREADABLE_GRACE_S:
                    log.warning("removing the unreadable lock %s (a write that failed)", self.path)
                    self._delete()
                else:
                    time.sleep(0.2)  # released meanwhile, or being written now
                continue
            if other.attempt == attempt:
                return other
            reason = self.stale(other)
            if reason is None and other.run_id == run_id and not other.pid:
                reason = "it is an earlier try of this same run"
            if reason is None:
                raise RunLocked(
                    f"another run of {self.run_key} is in progress: {other.describe()}. Wait for it to finish "
                    f"and run again; if it died, delete {self.store._uri(self.path)} (it is taken over by itself "
                    f"after publish.lock_timeout, {self.timeout})"
                )
            log.warning("taking over the lock of %s from %s: %s", self.run_key, other.describe(), reason)
            self._delete()
        raise RunLocked(f"could not take the lock of {self.run_key} at {self.store._uri(self.path)}: "
                        "other runs keep taking it; try again")

    def check(self, attempt: str) -> None:
        """Fail when ``attempt`` no longer holds the lock (another run took it over).

        Raises:
            RunLocked: the lock is gone or belongs to another attempt.
        """
        owner = self.owner()
        if owner is None:
            raise RunLocked(f"the lock of {self.run_key} at {self.store._uri(self.path)} is gone, so attempt "
                            f"{attempt} may be outdated; run the date again")
        if owner.attempt != attempt:
            raise RunLocked(f"attempt {attempt} of {self.run_key} was overtaken by {owner.describe()}; "
                            "this attempt stops without publishing")

    def release(self, attempt: str) -> bool:
        """Release the lock if ``attempt`` holds it; True when it did."""
        owner = self.owner()
        if owner is None or owner.attempt != attempt:
            return False
        self._delete()
        log.info("released the lock of %s", self.run_key)
        return True


def _s3_put_if_absent(path: str, data: bytes) -> bool:
    """A conditional PUT (``If-None-Match: *``): True when the object was created."""
    import boto3
    from botocore.exceptions import ClientError

    from foresight_lib.locations import s3_client_kwargs

    bucket, _, key = path.partition("/")
    client = boto3.client("s3", **s3_client_kwargs())
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
            return False
        raise SourceError(f"cannot create the run lock s3://{path}: {code or exc}; check the bucket and "
                          "its credentials") from None
    return True
