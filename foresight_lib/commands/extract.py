"""``foresight extract``: read metrics from files or Prometheus into the long frame.

Writes the long frame (``unique_id, ds, y``) to ``--output`` (Parquet or CSV, by the
extension) and its series table beside it as ``<stem>.series.parquet``; both writes
are atomic. ``foresight backtest --format long`` reads the pair back.
"""
from __future__ import annotations

import argparse
import sys

from foresight_lib.errors import ConfigError
from foresight_lib.sources.loaders import FORMATS, LoadResult, load_series
from foresight_lib.sources.saving import save_frame, series_table_path

SOURCES = ("files", "prometheus")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract", help="read metrics from files or Prometheus into a long-format file",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source", choices=SOURCES, default="files", help="where the metrics come from")
    files = parser.add_argument_group("files source")
    files.add_argument("--input", help="file or folder of metrics")
    files.add_argument("--format", choices=FORMATS, help="layout of the input")
    files.add_argument("--metrics", default=None, help="comma-separated metric names to keep (default: all)")
    prom = parser.add_argument_group("prometheus source")
    prom.add_argument("--url", help="Prometheus base URL, e.g. http://localhost:9090")
    prom.add_argument("--query", help="PromQL expression (a range query)")
    prom.add_argument("--start", help="start time (ISO 8601 or Unix seconds)")
    prom.add_argument("--end", help="end time (ISO 8601 or Unix seconds)")
    prom.add_argument("--step", default="5m", help="query resolution")
    prom.add_argument("--metric", default=None, help="metric name given to the query's series")
    parser.add_argument("--output", required=True, help="long-format file to write (.parquet or .csv)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not str(args.output).lower().endswith((".parquet", ".csv")):
        raise ConfigError(f"--output {args.output}: end the name with .parquet or .csv")
    result = _extract(args)
    frame, series = result
    skipped = getattr(result, "skipped", []) or []
    out = save_frame(frame, args.output)
    table = save_frame(series, series_table_path(args.output))
    for row in skipped[:5]:
        print(f"skipped {row.get('file') or row.get('unique_id')}: {row['reason']}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"... and {len(skipped) - 5} more skipped", file=sys.stderr)
    print(f"wrote {len(frame)} rows of {frame['unique_id'].nunique()} series to {out} "
          f"(series table {table}); {len(skipped)} skipped")
    return 0


def _extract(args: argparse.Namespace) -> LoadResult | tuple:
    if args.source == "files":
        _require(args, ["input", "format"], "--source files")
        metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
        return load_series(args.input, args.format, metrics)
    _require(args, ["url", "query", "start", "end"], "--source prometheus")
    try:
        from foresight_lib.sources.prometheus_source import extract_prometheus
    except ModuleNotFoundError as exc:
        if exc.name != "foresight_lib.sources.prometheus_source":
            raise
        raise ConfigError("the Prometheus source is not available in this installation; "
                          "use --source files") from exc
    return extract_prometheus(url=args.url, query=args.query, start=args.start, end=args.end,
                              step=args.step, metric=args.metric)


def _require(args: argparse.Namespace, names: list[str], context: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise ConfigError(f"{context} needs {' and '.join(missing)}")
