"""The process environment put back as it was after a test or module changed it."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def environ_restored(names: Iterable[str], **values: str) -> Iterator[None]:
    """Set ``values`` (if any) for the block, then give every variable of ``names`` and ``values`` its old value."""
    saved = {name: os.environ.get(name) for name in {*names, *values}}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
