"""The verification report: what `verify` found, for the terminal and as a file someone else reads.

A report is plain data (:class:`Report` of :class:`CheckResult`), filled by
:mod:`pg2qdrant.verify` and rendered here four ways: a rich table on the
terminal, and ``.json`` (for machines and CI), ``.md`` (for a ticket or a pull
request) or ``.html`` (one self-contained file with the plots) chosen by the
report path's extension. Every string leaves through :func:`redaction.redact`,
like all other output.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError
from pg2qdrant.ui import UI

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
_SEVERITY = {SKIP: 0, PASS: 1, WARN: 2, FAIL: 3}
_STYLE = {PASS: "green", WARN: "yellow", FAIL: "red bold", SKIP: "dim"}
_LABEL = {PASS: "PASS", WARN: "WARN", FAIL: "FAIL", SKIP: "SKIP"}
FORMATS = (".json", ".md", ".html")
MISMATCH_ROWS_SHOWN = 10  # per check in .md/.html (the .json keeps every example collected)


def worst(verdicts: Iterable[str]) -> str:
    """The most severe verdict (skip < pass < warn < fail); pass for none."""
    return max(verdicts, key=_SEVERITY.__getitem__, default=PASS)


@dataclass
class CheckResult:
    number: int  # 1 counts, 2 IDs, 3 values, 4 schema, 5 search parity (the numbering), 6 keywords (BM25)
    name: str
    verdict: str  # pass | warn | fail | skip
    line: str  # the verdict line: one sentence a user can act on
    details: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # numbers worth keeping (JSON-safe)
    mismatches: list[dict[str, Any]] = field(default_factory=list)  # first few: id, field, reason, ...
    plots: dict[str, Any] = field(default_factory=dict)  # data behind the HTML figures
    seconds: float = 0.0


@dataclass
class Report:
    source: str
    target: str
    collection: str
    started: str  # ISO 8601, UTC
    settings: dict[str, Any]
    checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return worst(c.verdict for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.verdict != FAIL

    @property
    def exit_code(self) -> int:
        """0 when no check failed (warnings included), 1 otherwise (input errors raise, exit 2)."""
        return 0 if self.passed else 1

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name.lower() == name.lower())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict
        data["exit_code"] = self.exit_code
        return data


# ---------------------------------------------------------------------------------------
# Terminal
# ---------------------------------------------------------------------------------------

def render_summary(ui: UI, report: Report, *, mismatches_shown: int = 3) -> None:
    """The verdict table and the first mismatches of failed checks (one event under --log-format)."""
    title = f"Verification of {report.collection} against {report.source}"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("check", style="bold")
    table.add_column("verdict")
    table.add_column("finding", overflow="fold")
    lines, checks = [], []
    for c in report.checks:
        # Text, not markup: findings hold user data, and "vector:v:" must not become an emoji.
        table.add_row(str(c.number), c.name, Text(_LABEL[c.verdict], style=_STYLE[c.verdict]), Text(c.line))
        shown = [m["message"] for m in c.mismatches[:mismatches_shown]] if c.verdict in (FAIL, WARN) else []
        checks.append({"number": c.number, "name": c.name, "verdict": c.verdict, "finding": c.line,
                       **({"mismatches": shown, "mismatches_found": len(c.mismatches)} if shown else {})})
        lines += [f"  {c.name}: {m}" for m in shown]
        if shown and len(c.mismatches) > mismatches_shown:
            lines.append(f"  {c.name}: ... ({len(c.mismatches) - mismatches_shown} more in the report)")
    lines += [f"note: {note}" for note in report.notes]
    lines.append(f"Verdict: {_LABEL[report.verdict]} ({report.seconds:,.1f} s)")
    fields = {"event": "verify_summary", "collection": report.collection, "target": report.target,
              "verdict": report.verdict, "exit_code": report.exit_code, "seconds": round(report.seconds, 3),
              "checks": checks, "notes": list(report.notes)}
    # The message alone (a text log) still says which checks failed.
    message = f"{title}: {_LABEL[report.verdict]} ({', '.join(f'{c.name} {c.verdict}' for c in report.checks)})"
    ui.result(message, fields, table, *map(Text, lines), wrap=True)  # findings are long sentences


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------

def report_format(path: str) -> str:
    """The format of a report path (by extension); InputError before any work when unknown."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"--verify.report {path!r}: unknown report format {suffix or '(no extension)'!r}.",
                         fix="name the file .json, .md or .html (the extension chooses the format).")
    return suffix


def write_report(report: Report, path: str) -> None:
    render = {".json": to_json, ".md": to_markdown, ".html": to_html}[report_format(path)]
    text = redaction.redact(render(report))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot write the report to {path}: {exc.strerror or exc}.",
                         fix="choose a writable path for --verify.report.") from None


def to_json(report: Report) -> str:
    return json.dumps(_json_safe(report.to_dict()), indent=2, default=str, allow_nan=False)


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: such figures become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _split_figures(figures: dict[str, Any]):
    """Plain figures, and the {group: {series: {metric: value}}} ones as a grid: metrics as rows,
    one column per "group: series" (e.g. per vector and search mode)."""
    flat = {k: v for k, v in figures.items() if not _is_grid(v)}
    columns: list[str] = []
    cells: dict[str, dict[str, Any]] = {}
    for group, series in figures.items():
        if _is_grid(series):
            for name, metrics in series.items():
                columns.append(f"{group}: {name}")
                for metric, value in metrics.items():
                    cells.setdefault(metric, {})[columns[-1]] = value
    rows = [(metric, [by_column.get(col, "") for col in columns]) for metric, by_column in cells.items()]
    return flat, ((columns, rows) if columns else None)


def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    out = [f"# pg2qdrant verify: {_LABEL[report.verdict]}", "",
           f"- source: `{report.source}`", f"- target: `{report.target}`, collection `{report.collection}`",
           f"- run: {report.started}, {report.seconds:,.1f} s",
           f"- settings: {_md_cell(_fmt(report.settings))}", "",
           "| # | check | verdict | finding |", "|---|---|---|---|"]
    out += [f"| {c.number} | {c.name} | **{_LABEL[c.verdict]}** | {_md_cell(c.line)} |" for c in report.checks]
    for note in report.notes:
        out += ["", f"> note: {note}"]
    for c in report.checks:
        out += ["", f"## {c.number}. {c.name}: {_LABEL[c.verdict]}", "", c.line, ""]
        out += [f"- {d}" for d in c.details]
        flat, grid = _split_figures(c.figures)
        if flat:
            out += ["", "| figure | value |", "|---|---|"]
            out += [f"| {_md_cell(k)} | {_md_cell(_fmt(v))} |" for k, v in flat.items()]
        if grid:
            columns, rows = grid
            out += ["", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
            out += [f"| {_md_cell(name)} | " + " | ".join(_md_cell(_fmt(v)) for v in values) + " |"
                    for name, values in rows]
        if c.mismatches:
            out += ["", f"First {min(len(c.mismatches), MISMATCH_ROWS_SHOWN)} findings:", "",
                    "| point ID | field | what |", "|---|---|---|"]
            out += [f"| `{_md_cell(m['id'])}` | {_md_cell(m['field'])} | {_md_cell(m['message'])} |"
                    for m in c.mismatches[:MISMATCH_ROWS_SHOWN]]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# HTML, with inline SVG plots
# ---------------------------------------------------------------------------------------
# The plots are drawn as inline SVG by the two small functions below rather than with a
# plotting library: matplotlib is not a dependency (and is ~40 MB with its own), and the
# report must stay one self-contained file that opens anywhere, offline, without scripts.

_COLORS = ("#2563eb", "#f59e0b", "#10b981", "#ef4444")
_W, _H = 480, 280  # figure size (px)
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 12, 46  # margins around the plot area


class _Axes:
    """Maps data coordinates onto the plot area of one figure."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float):
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1.0
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1.0

    def x(self, v: float) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * (v - self.x0) / (self.x1 - self.x0)

    def y(self, v: float) -> float:
        return _H - _BOTTOM - (_H - _TOP - _BOTTOM) * (v - self.y0) / (self.y1 - self.y0)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / (count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(count + 1) if first + i * step <= hi + step * 1e-9]


def _tick(v: float) -> str:
    return f"{v:.4g}" if v != 0 else "0"


def _svg_figure(title: str, x_label: str, y_label: str, axes: _Axes, x_ticks: Sequence[float],
                y_ticks: Sequence[float], body: list[str], legend: Sequence[str]) -> str:
    e = html.escape
    bottom = _H - _BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
             f'role="img" aria-label="{e(title)}" font-family="sans-serif" font-size="11">',
             f"<title>{e(title)}</title>",
             f'<rect x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{bottom - _TOP}" '
             'fill="#fafafa" stroke="#999"/>']
    for v in x_ticks:
        parts.append(f'<line x1="{axes.x(v):.1f}" y1="{bottom}" x2="{axes.x(v):.1f}" y2="{bottom + 4}" '
                     'stroke="#999"/>')
        parts.append(f'<text x="{axes.x(v):.1f}" y="{bottom + 16}" text-anchor="middle">{e(_tick(v))}</text>')
    for v in y_ticks:
        parts.append(f'<line x1="{_LEFT - 4}" y1="{axes.y(v):.1f}" x2="{_LEFT}" y2="{axes.y(v):.1f}" stroke="#999"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{axes.y(v) + 4:.1f}" text-anchor="end">{e(_tick(v))}</text>')
    mid_y = (_TOP + bottom) / 2
    parts.append(f'<text x="{(_W + _LEFT - _RIGHT) / 2:.0f}" y="{_H - 10}" text-anchor="middle">{e(x_label)}</text>')
    parts.append(f'<text x="14" y="{mid_y:.0f}" text-anchor="middle" transform="rotate(-90 14 {mid_y:.0f})">'
                 f"{e(y_label)}</text>")
    parts += body
    for i, name in enumerate(legend):
        y = _TOP + 14 + 15 * i
        parts.append(f'<rect x="{_LEFT + 10}" y="{y - 9}" width="10" height="10" fill="{_COLORS[i % 4]}"/>')
        parts.append(f'<text x="{_LEFT + 25}" y="{y}">{e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_recall_histogram(series: dict[str, list[float]], *, k: int, title: str) -> str:
    """Queries per recall@k value, one bar per series side by side. recall@k takes the values
    0, 1/k, ..., 1, so there is one bin per value (ties counted as hits can't exceed 1)."""
    series = {name: values for name, values in series.items() if values}
    counts = {name: [0] * (k + 1) for name in series}
    for name, values in series.items():
        for v in values:
            counts[name][min(k, max(0, round(v * k)))] += 1
    peak = max((max(c) for c in counts.values()), default=1)
    top = max(4, math.ceil(peak / 4) * 4)  # four integer steps on the y axis
    axes = _Axes(-0.5 / k, 1 + 0.5 / k, 0, top)
    slot = (axes.x(1 / k) - axes.x(0)) * 0.8 / max(len(series), 1)
    body = []
    for s, (name, cs) in enumerate(counts.items()):
        for j, n in enumerate(cs):
            if n:
                x = axes.x(j / k) - slot * len(series) / 2 + slot * s
                body.append(f'<rect x="{x:.1f}" y="{axes.y(n):.1f}" width="{max(slot - 1, 1):.1f}" '
                            f'height="{axes.y(0) - axes.y(n):.1f}" fill="{_COLORS[s % 4]}">'
                            f"<title>{html.escape(name)}: {n} queries with recall {j}/{k}</title></rect>")
    x_ticks = [j / k for j in range(0, k + 1, max(1, k // 5))]
    return _svg_figure(title, f"recall@{k} (share of pgvector's exact top-{k} found)", "queries", axes, x_ticks,
                       [top * i / 4 for i in range(5)], body, list(series))


def svg_scatter(series: dict[str, list[tuple[float, float]]], *, title: str, x_label: str, y_label: str) -> str:
    """Points per named series on equal axes, with the diagonal y = x (where equal scores lie).
    The first series is drawn as rings, the next as dots, so coinciding points stay visible."""
    pts = [p for values in series.values() for p in values]
    if not pts:
        return ""
    lo = min(min(x, y) for x, y in pts)
    hi = max(max(x, y) for x, y in pts)
    pad = (hi - lo) * 0.04 or 1.0
    axes = _Axes(lo - pad, hi + pad, lo - pad, hi + pad)
    body = [f'<line x1="{axes.x(lo - pad):.1f}" y1="{axes.y(lo - pad):.1f}" x2="{axes.x(hi + pad):.1f}" '
            f'y2="{axes.y(hi + pad):.1f}" stroke="#888" stroke-dasharray="4 3"/>']
    for s, values in enumerate(series.values()):
        style = (f'r="3.5" fill="none" stroke="{_COLORS[s % 4]}"' if s == 0
                 else f'r="1.8" fill="{_COLORS[s % 4]}"')
        body += [f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" {style}/>' for x, y in values]
    ticks = _nice_ticks(lo, hi)
    return _svg_figure(title, x_label, y_label, axes, ticks, ticks, body, [n for n, v in series.items() if v])


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.pass{color:#15803d}.warn{color:#b45309}.fail{color:#b91c1c}
.skip{color:#777}.badge{font-weight:bold}code{background:#f3f3f3;padding:0 .2em}figure{display:inline-block;
margin:.5em 1em .5em 0}figcaption{font-size:.85em;color:#555;max-width:460px}section{margin-top:1.6em}
"""


def to_html(report: Report) -> str:
    e = html.escape

    def badge(v: str) -> str:
        return f'<span class="badge {v}">{_LABEL[v]}</span>'

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>pg2qdrant verify: {e(report.collection)} - {_LABEL[report.verdict]}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>Migration verification: {badge(report.verdict)}</h1>",
           "<p>PostgreSQL/pgvector table compared with the Qdrant collection it was migrated into: "
           "row counts, point IDs, values on a sample, the collection's schema, and nearest-neighbour "
           "search results on both sides.</p>",
           "<table>",
           f"<tr><th>source</th><td><code>{e(report.source)}</code></td></tr>",
           f"<tr><th>target</th><td><code>{e(report.target)}</code>, collection "
           f"<code>{e(report.collection)}</code></td></tr>",
           f"<tr><th>run</th><td>{e(report.started)}, {report.seconds:,.1f} s</td></tr>",
           f"<tr><th>settings</th><td>{e(_fmt(report.settings))}</td></tr></table>",
           "<h2>Verdicts</h2><table><tr><th>#</th><th>check</th><th>verdict</th><th>finding</th></tr>"]
    out += [f"<tr><td>{c.number}</td><td>{e(c.name)}</td><td>{badge(c.verdict)}</td><td>{e(c.line)}</td></tr>"
            for c in report.checks]
    out.append("</table>")
    out += [f"<p><b>Note:</b> {e(n)}</p>" for n in report.notes]
    for c in report.checks:
        out.append(f'<section id="check-{c.number}"><h2>{c.number}. {e(c.name)}: {badge(c.verdict)}</h2>')
        out.append(f"<p>{e(c.line)}</p>")
        if c.details:
            out.append("<ul>" + "".join(f"<li>{e(d)}</li>" for d in c.details) + "</ul>")
        flat, grid = _split_figures(c.figures)
        if flat:
            out.append("<table><tr><th>figure</th><th>value</th></tr>"
                       + "".join(f"<tr><td>{e(k)}</td><td>{e(_fmt(v))}</td></tr>" for k, v in flat.items())
                       + "</table>")
        if grid:
            columns, rows = grid
            out.append("<table><tr><th></th>" + "".join(f"<th>{e(col)}</th>" for col in columns) + "</tr>"
                       + "".join(f"<tr><td>{e(name)}</td>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in values)
                                 + "</tr>" for name, values in rows) + "</table>")
        if c.mismatches:
            shown = c.mismatches[:MISMATCH_ROWS_SHOWN]
            out.append(f"<p>First {len(shown)} of the findings (the .json report keeps up to "
                       f"{len(c.mismatches)}):</p><table><tr><th>point ID</th><th>field</th><th>what</th>"
                       "<th>expected (source)</th><th>found (Qdrant)</th></tr>")
            out += [f"<tr><td><code>{e(str(m['id']))}</code></td><td>{e(str(m['field']))}</td>"
                    f"<td>{e(str(m['reason']))}</td><td>{_code(m.get('expected'))}</td>"
                    f"<td>{_code(m.get('actual'))}</td></tr>" for m in shown]
            out.append("</table>")
        out += _html_plots(c)
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _code(value: Any) -> str:
    return f"<code>{html.escape(str(value))}</code>" if value not in (None, "") else ""


def _html_plots(c: CheckResult) -> list[str]:
    out = []
    k = c.plots.get("k")
    for name, data in c.plots.get("vectors", {}).items():
        recalls = {label: data.get(key, []) for label, key in
                   (("Qdrant exact", "recall_exact"), ("Qdrant HNSW", "recall_hnsw"))}
        if any(recalls.values()):
            svg = svg_recall_histogram(recalls, k=k, title=f"recall@{k} per query, vector {name}")
            out.append(f"<figure>{svg}<figcaption>Recall@{k} of each query on vector "
                       f"<code>{html.escape(name)}</code>: the share of pgvector's exact top-{k} that Qdrant "
                       "returned (1 = the same neighbours).</figcaption></figure>")
        scores = {label: [tuple(p) for p in data.get(key, [])] for label, key in
                  (("Qdrant exact", "scores_exact"), ("Qdrant HNSW", "scores_hnsw"))}
        if any(scores.values()):
            svg = svg_scatter(scores, title=f"scores, vector {name}", x_label="pgvector, converted to Qdrant's score",
                              y_label="Qdrant score")
            out.append(f"<figure>{svg}<figcaption>Score of the same point for the same query: pgvector's "
                       f"distance converted to Qdrant's score ({html.escape(data.get('conversion', ''))}) "
                       "against Qdrant's. On the dashed line they are equal.</figcaption></figure>")
    return out
