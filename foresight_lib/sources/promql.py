"""PromQL for the Prometheus source: escaping, query templates and the default catalog.

Values from the configuration that go into label matchers are always escaped as PromQL
strings (or RE2 patterns), never run as PromQL. Templates fill ``{aggregation}``,
``{selector}`` and ``{rate_window}`` and leave every other brace alone. The default
query per metric, its unit and finest aggregation level live in ``include/promql.yaml``
(``FORESIGHT_PROMQL_FILE`` names another file).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from foresight_lib.errors import ConfigError, HorizonError
from foresight_lib.horizons import format_duration, to_timedelta
from foresight_lib.sources.catalog import PROMQL_FILE_ENV, promql_file

AGGREGATION_LEVELS = ("container", "pod", "namespace")

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\\n]|\\.)*"\s*$')
_PLACEHOLDER = re.compile(r"\{(aggregation|selector|rate_window)\}")
_RE2_SPECIAL = set(r"\.+*?()|[]{}^$")


def quote_promql_string(value: Any) -> str:
    """``value`` as a double-quoted PromQL string literal.

    Backslashes, double quotes and control characters are escaped, so the value can
    neither end the string nor add PromQL to the query.
    """
    out = ['"']
    for char in str(value):
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def escape_regex(value: Any) -> str:
    """``value`` as an RE2 pattern matching exactly that text."""
    return "".join(f"\\{c}" if c in _RE2_SPECIAL else c for c in str(value))


def check_label_name(name: Any, where: str = "label name") -> str:
    """``name`` if it is a valid Prometheus label name.

    Raises:
        ConfigError: it is not (``[a-zA-Z_][a-zA-Z0-9_]*``).
    """
    text = str(name)
    if not _LABEL_NAME.match(text):
        raise ConfigError(f"{where} '{text}' is not a Prometheus label name; use letters, digits and _ "
                          "(not starting with a digit)")
    return text


def label_matcher(name: str, value: str | Sequence[str]) -> str:
    """An escaped equality matcher ``name="value"``; a list of values gives ``name=~"a|b"``."""
    name = check_label_name(name)
    if isinstance(value, str | int | float):
        return f"{name}={quote_promql_string(value)}"
    values = [str(v) for v in value]
    if not values:
        raise ConfigError(f"label filter '{name}' has an empty list of values; give at least one value")
    if len(values) == 1:
        return f"{name}={quote_promql_string(values[0])}"
    return f"{name}=~{quote_promql_string('|'.join(escape_regex(v) for v in values))}"


def build_selector(matchers: Sequence[str] = (), labels: Mapping[str, str | Sequence[str]] | None = None) -> str:
    """The ``{...}`` part of a selector: trusted ``matchers`` plus escaped ``labels`` filters."""
    parts = list(matchers) + [label_matcher(k, v) for k, v in sorted((labels or {}).items())]
    return "{" + ", ".join(parts) + "}" if parts else ""


def render_query(template: str, aggregation_labels: Sequence[str] | None = None, selector: str = "",
                 rate_window: pd.Timedelta | None = None, what: str = "query") -> str:
    """Fill ``{aggregation}``, ``{selector}`` and ``{rate_window}`` in a PromQL template.

    Nothing else in the text is changed (PromQL's own braces stay as they are).

    Raises:
        ConfigError: the template uses ``{aggregation}`` but no aggregation is given.
    """

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name == "aggregation":
            if not aggregation_labels:
                raise ConfigError(f"{what} uses {{aggregation}} but no aggregation level is set; set "
                                  f"source.prometheus.aggregation ({', '.join(AGGREGATION_LEVELS)})")
            return ", ".join(check_label_name(label, "aggregation label") for label in aggregation_labels)
        if name == "selector":
            return selector
        return promql_duration(rate_window or pd.Timedelta(minutes=5))

    return _PLACEHOLDER.sub(fill, template)


def promql_duration(delta: pd.Timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds != int(seconds):
        return f"{int(round(seconds * 1000))}ms"
    return format_duration(pd.Timedelta(seconds=int(seconds)))


@dataclass(frozen=True)
class MetricQuery:
    """One metric's PromQL template and what to record about its series."""

    name: str
    query: str
    unit: str | None = None
    matchers: tuple[str, ...] = ()
    finest: str | None = None
    help: str = ""


@dataclass(frozen=True)
class PromqlCatalog:
    """The contents of ``include/promql.yaml``."""

    aggregations: Mapping[str, tuple[str, ...]]
    metrics: Mapping[str, MetricQuery]
    min_rate_window: pd.Timedelta = pd.Timedelta(minutes=1)

    def labels_for(self, level: str | Sequence[str] | None, metric: MetricQuery | None = None) -> tuple[str, ...]:
        """Label names of an aggregation ``level``, coarsened to the metric's finest level."""
        if level is None:
            return ()
        if not isinstance(level, str):
            return tuple(check_label_name(x, "aggregation label") for x in level)
        if level not in self.aggregations:
            raise ConfigError(f"aggregation '{level}' is not one of {', '.join(self.aggregations)}")
        order = list(self.aggregations)
        if metric is not None and metric.finest and order.index(metric.finest) > order.index(level):
            level = metric.finest
        return self.aggregations[level]

    def rate_window(self, step: pd.Timedelta) -> pd.Timedelta:
        return max(step, self.min_rate_window)



def load_promql(path: str | os.PathLike | None = None) -> PromqlCatalog:
    """Read and check the PromQL catalog (default: ``include/promql.yaml``).

    Raises:
        ConfigError: the file is missing, not YAML, or an entry is malformed; names it.
    """
    file = Path(path) if path is not None else promql_file()
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the PromQL catalog {file}: {exc.strerror or exc}; "
                          f"set {PROMQL_FILE_ENV} or FORESIGHT_HOME") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the PromQL catalog {file} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("metrics"), dict) or not isinstance(
            raw.get("aggregations"), dict):
        raise ConfigError(f"the PromQL catalog {file} needs the mappings 'aggregations' and 'metrics'")
    aggregations: dict[str, tuple[str, ...]] = {}
    for level, labels in raw["aggregations"].items():
        if not isinstance(labels, list) or not labels:
            raise ConfigError(f"{file}: aggregations.{level} must be a list of label names")
        aggregations[str(level)] = tuple(check_label_name(x, f"{file}: aggregations.{level}") for x in labels)
    metrics: dict[str, MetricQuery] = {}
    for name, entry in raw["metrics"].items():
        where = f"{file}: metrics.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("query"), str):
            raise ConfigError(f"{where} needs a 'query' (PromQL text)")
        matchers = tuple(str(m) for m in entry.get("matchers") or ())
        bad = [m for m in matchers if not _MATCHER.match(m)]
        if bad:
            raise ConfigError(f"{where}: {bad} are not label matchers like container!=\"POD\"")
        finest = entry.get("finest")
        if finest is not None and finest not in aggregations:
            raise ConfigError(f"{where}: finest '{finest}' is not one of {', '.join(aggregations)}")
        metrics[str(name)] = MetricQuery(str(name), entry["query"].strip(), entry.get("unit"), matchers, finest,
                                         str(entry.get("help") or ""))
    try:
        min_window = to_timedelta(str(raw.get("min_rate_window") or "1m"))
    except HorizonError as exc:
        raise ConfigError(f"{file}: min_rate_window: {exc}") from exc
    return PromqlCatalog(aggregations, metrics, min_window)
