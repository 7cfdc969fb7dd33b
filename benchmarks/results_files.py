"""Where benchmarks record their figures: ``benchmarks/results/<stem>.json`` and its ``.md`` beside it."""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(stem: str, record: dict, text: str | None = None, echo: bool = True) -> None:
    """Write ``record`` as ``<stem>.json`` and ``text`` (the rendered report) as ``<stem>.md``, and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    if text is not None:
        (RESULTS / f"{stem}.md").write_text(text)
        if echo:
            print(text)
