"""Local scratch folders that a killed task does not leave behind for good.

Publish sets pieces of champions, rightsizing walks and MLflow artifacts aside in local
temporary folders. A task killed with SIGKILL (a lost worker, the OOM killer) cannot
delete its folder, and at thousands of series such a folder holds hundreds of MB. Each
folder is therefore named after the process that made it
(``foresight-scratch-<kind>-<host>-<pid>-<random>``, the host as a short hash), and
every new one first removes the folders of this host's processes that are gone.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "foresight-scratch-"
_SCRATCH_NAME = re.compile(rf"^{re.escape(SCRATCH_PREFIX)}[a-z0-9]+-([0-9a-f]{{8}})-(\d+)-")


def host_key() -> str:
    """This host's name as 8 hex digits (a temporary folder shared between hosts keeps others' folders)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A temporary folder for ``kind`` (letters and digits), deleted on exit; orphans of dead processes go first."""
    if not re.fullmatch(r"[a-z0-9]+", kind):
        raise ValueError(f"scratch kind '{kind}' must be lower-case letters and digits")
    remove_orphans()
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{kind}-{host_key()}-{os.getpid()}-") as tmp:
        yield Path(tmp)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(root: str | Path | None = None) -> list[Path]:
    """Delete this user's and host's scratch folders under ``root`` (the temporary folder) whose process is gone.

    A folder of a live process, of another user or host, or with any other name is left alone;
    a pid reused by a new process only keeps an orphan a while longer.
    """
    root = Path(root if root is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    uid, host = os.getuid(), host_key()
    for entry in entries:
        match = _SCRATCH_NAME.match(entry.name)
        if not match or match.group(1) != host:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if process_alive(int(match.group(2))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(Path(entry.path))
            log.info("removed the scratch folder %s of a process that is gone (a killed task)", entry.path)
    return removed
