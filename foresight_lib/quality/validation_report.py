"""The self-contained HTML report of a validation: summary cards, every expectation, quarantined series.

Kept apart from :mod:`foresight_lib.quality.validation` (which runs the checks) so that each stays
small; it reads only the outcome's ``summary``, ``results`` and ``reasons``.
"""
from __future__ import annotations

import html
import json
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.ok{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
code{font-size:.9em;background:#f6f8fa;padding:1px 4px}.muted{color:#666}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}
.card b{display:block;font-size:1.4em}
"""


def _fmt(value: Any, limit: int = 200) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return html.escape(text if len(text) <= limit else text[:limit] + " …")


def render_html(outcome) -> str:
    """A self-contained HTML page: summary, every expectation with its result, quarantined series."""
    s = outcome.summary
    status = "PASSED" if s.get("passed") else "FAILED"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Foresight data validation</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Foresight data validation — <span class='{'ok' if s.get('passed') else 'fail'}'>{status}</span></h1>",
        "<p class='muted'>Great Expectations suites: " + ", ".join(
            f"<code>{html.escape(n)}</code>" for n in dict.fromkeys(r.get("suite") for r in outcome.results)) + "</p>",
        "<div class='cards'>",
        *(f"<div class='card'><b>{_fmt(v)}</b>{html.escape(k)}</div>" for k, v in (
            ("series", s.get("series_total")), ("quarantined", s.get("series_failed")),
            ("of which only constant (not counted)", s.get("series_constant_only", 0)),
            ("failed share", f"{s.get('failed_share', 0):.1%}"),
            ("allowed share", f"{s.get('max_failed_share', 0):.0%}"),
            ("rows", s.get("rows_total")), ("values set to NaN", s.get("values_nulled")),
            ("expectations failed", f"{s.get('expectations_failed')} / {s.get('expectations_evaluated')}"),
        )),
        "</div>",
        "<h2>Expectations</h2><table><tr><th>suite</th><th>expectation</th><th>arguments</th><th>result</th>"
        "<th>observed</th><th>unexpected</th><th>sample of unexpected values</th></tr>",
    ]
    for res in outcome.results:
        cfg = res["expectation_config"]
        kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        meta = cfg.get("meta") or {}
        result = res.get("result") or {}
        exc = res.get("exception_info") or {}
        observed = result.get("observed_value")
        if exc.get("raised_exception"):
            observed = f"error: {exc.get('exception_message')}"
        unexpected = ""
        if result.get("unexpected_count") is not None:
            unexpected = f"{result['unexpected_count']} ({result.get('unexpected_percent') or 0:.3g}%)"
        ok = res["success"]
        parts.append(
            f"<tr><td>{_fmt(res.get('suite'))}</td><td><code>{_fmt(cfg['type'])}</code>"
            f"<div class='muted'>{_fmt(meta.get('reason'))}</div></td><td>{_fmt(kwargs, 300)}</td>"
            f"<td class='{'ok' if ok else 'fail'}'>{'success' if ok else 'failed'}</td>"
            f"<td>{_fmt(observed)}</td><td>{_fmt(unexpected)}</td>"
            f"<td>{_fmt(result.get('partial_unexpected_list'))}</td></tr>"
        )
    parts.append("</table>")
    parts.append(f"<h2>Quarantined series ({len(outcome.reasons)})</h2>")
    if outcome.reasons:
        parts.append("<table><tr><th>unique_id</th><th>reasons</th></tr>")
        for uid in sorted(outcome.reasons):
            items = "".join(f"<li>{html.escape(r)}</li>" for r in outcome.reasons[uid])
            parts.append(f"<tr><td><code>{html.escape(uid)}</code></td><td><ul>{items}</ul></td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class='ok'>No series was quarantined.</p>")
    parts.append(
        f"<p class='muted'>Thresholds: min completeness {s.get('min_completeness')}, max NaN share "
        f"{s.get('max_null_share')}, max share of ±inf {s.get('max_non_finite_share')}, largest magnitude "
        f"{s.get('max_abs_value')}, min relative standard deviation {s.get('min_relative_std')}, frequency grid "
        f"{html.escape(str(s.get('freq')))}; validated in {s.get('seconds')} s.</p></body></html>"
    )
    return "\n".join(parts)
