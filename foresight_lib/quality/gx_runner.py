"""Great Expectations plumbing for validation: the suites, an ephemeral runner, results.

Validation runs its suites on chunks of series (``validation.chunk_rows``) so that its
memory does not grow with the number of series; ``merge_results`` makes one result per
expectation out of the chunks' results, as if the suite had run once over every row.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from foresight_lib.config import foresight_home, resolve_path
from foresight_lib.errors import ConfigError

SUITES = ("foresight_schema", "foresight_rows", "foresight_series")
COUNTS = ("element_count", "unexpected_count", "missing_count")
PARTIAL_LIMIT = 20


def load_suite_spec(suite_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """The JSON of suite ``name`` from ``suite_dir``.

    Raises:
        ConfigError: the file is missing or not valid JSON.
    """
    path = Path(resolve_path(str(suite_dir), foresight_home())) / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"expectation suite {path} not found; set validation.suite_dir to the folder holding "
                          f"{', '.join(s + '.json' for s in SUITES)} (default include/gx)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"expectation suite {path} is not valid JSON: {exc}") from None


def quiet_gx() -> None:
    """GX's own INFO lines (hundreds per run: registrations, temporary folders) become silent.

    Only when nobody set the ``great_expectations`` logger's level: its warnings and errors
    still show, and a user who wants its INFO lines sets the level themselves.
    """
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)


class GxRunner:
    """One ephemeral GX context running suites on pandas frames."""

    def __init__(self):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        quiet_gx()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX pins this logger to INFO for a notice about temporary folders; it follows its parent
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.NOTSET)

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas("foresight")
        self.definitions: dict[str, Any] = {}

    def run(self, suite, frame: pd.DataFrame, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The suite's results on ``frame``; a suite run before (on another chunk) is run again as it is."""
        gx = self.gx
        definition = self.definitions.get(suite.name)
        if definition is None:
            suite = self.context.suites.add(suite)
            asset = self.source.add_dataframe_asset(suite.name)
            batch = asset.add_batch_definition_whole_dataframe(f"{suite.name}.all")
            definition = self.definitions[suite.name] = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{suite.name}.validation", data=batch, suite=suite))
        suite = definition.suite
        result = definition.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {},
                                result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False})
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        out = []
        for item in result.results:
            d = item.to_json_dict()
            d["suite"] = suite.name
            d["_order"] = order.get(item.expectation_config.id, len(order))
            out.append(d)
        return sorted(out, key=lambda d: d["_order"])


def build_suite(gx, spec: dict[str, Any], extra: list | None = None):
    suite = gx.ExpectationSuite(name=spec["name"], expectations=spec.get("expectations", []),
                                meta=spec.get("meta") or {})
    for expectation in extra or []:
        suite.add_expectation(expectation)
    return suite


def range_expectations(rules: dict[str, Any], used: list[str]) -> list:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    out = []
    for key in used:
        rule = rules[key]
        if rule.min is None and rule.max is None:
            continue
        if rule.max is None:
            bounds = f"below {rule.min:g}"
        elif rule.min is None:
            bounds = f"above {rule.max:g}"
        else:
            bounds = f"outside [{rule.min:g}, {rule.max:g}]"
        out.append(gxe.ExpectColumnValuesToBeBetween(
            column="y", min_value=rule.min, max_value=rule.max, row_condition=Column("range_rule") == key,
            meta={"check": "range", "rule": key, "mostly": rule.mostly,
                  "reason": f"values {bounds} (range rule '{key}')"},
        ))
    return out


def failed_expectations(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for res in results:
        if res["success"]:
            continue
        cfg = res["expectation_config"]
        result = res.get("result") or {}
        out.append({
            "suite": res.get("suite"), "expectation": cfg["type"], "column": cfg["kwargs"].get("column"),
            "check": (cfg.get("meta") or {}).get("check"), "rule": (cfg.get("meta") or {}).get("rule"),
            "unexpected_count": result.get("unexpected_count"), "observed_value": result.get("observed_value"),
        })
    return out


def clean_result(res: dict[str, Any]) -> dict[str, Any]:
    """A GX result without its long row lists (kept short for JSON and the report)."""
    out = {k: v for k, v in res.items() if k != "_order"}
    result = dict(out.get("result") or {})
    for key in ("unexpected_list", "unexpected_index_list", "partial_unexpected_index_list"):
        result.pop(key, None)
    out["result"] = result
    return out


def merge_results(chunks: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One result per expectation from the results of the same suite run on each chunk of rows.

    Counts add up and shares are taken over every row; an expectation succeeds when it
    succeeded on every chunk. Row lists (``unexpected_index_list``...) are dropped: the
    caller reads them per chunk, where their row numbers mean something.
    """
    if len(chunks) == 1:
        return [clean_result(r) for r in chunks[0]]
    merged = []
    for results in zip(*chunks, strict=True):
        first = next((r for r in results if not r["success"]), results[0])
        out = clean_result(first)
        out["success"] = all(r["success"] for r in results)
        raised = [r for r in results if (r.get("exception_info") or {}).get("raised_exception")]
        if raised:
            out["exception_info"] = raised[0]["exception_info"]
        parts = [r.get("result") or {} for r in results]
        result = dict(out.get("result") or {})
        if all(key in part for part in parts for key in ("element_count", "unexpected_count")):
            for key in COUNTS:
                if any(key in part for part in parts):
                    result[key] = int(sum(part.get(key) or 0 for part in parts))
            _shares(result)
            result["partial_unexpected_list"] = [v for part in parts
                                                 for v in part.get("partial_unexpected_list") or []][:PARTIAL_LIMIT]
            result.pop("partial_unexpected_counts", None)
        out["result"] = result
        merged.append(out)
    return merged


def _shares(result: dict[str, Any]) -> None:
    """GX's percentages of a result from its counts (``unexpected_percent`` is of the non-missing rows)."""
    total, unexpected, missing = (result.get(k) or 0 for k in COUNTS)
    present = total - missing
    if "missing_percent" in result:
        result["missing_percent"] = 100.0 * missing / total if total else None
    for key, base in (("unexpected_percent", present), ("unexpected_percent_nonmissing", present),
                      ("unexpected_percent_total", total)):
        if key in result:
            result[key] = 100.0 * unexpected / base if base else None
