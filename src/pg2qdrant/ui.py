"""Everything the user sees: messages, progress, the plan, summaries.

All output goes through streams that mask registered secrets, so a password
can't leak through a message someone formats carelessly. Progress is a rich
bar on a terminal and a plain line every few seconds otherwise (CI logs).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pg2qdrant.core import redaction
from pg2qdrant.core.plan import vector_label

PLAIN_PROGRESS_EVERY_S = 5.0
NON_TERMINAL_WIDTH = 200
LOG_TABLE_WIDTH = 100  # a table whose cells wrap (verify's findings), when not on a terminal


class RedactingStream(io.TextIOBase):
    """A text stream that masks secrets in everything written to it."""

    def __init__(self, inner: TextIO):
        self.inner = inner

    def write(self, s: str) -> int:
        self.inner.write(redaction.redact(s))
        return len(s)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")


def _console(stream: TextIO) -> Console:
    # Logs and pipes are read (and grepped) later: do not wrap tables to 80 columns there.
    width = None if stream.isatty() else NON_TERMINAL_WIDTH
    return Console(file=RedactingStream(stream), highlight=False, soft_wrap=True, width=width)


class UI:
    def __init__(self, *, quiet: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.out = _console(stdout or sys.stdout)
        self.err = _console(stderr or sys.stderr)
        self.quiet = quiet
        # the copies shown so far, by (table, collection): read by --metrics-port
        self.copies: dict[tuple[str, str], ProgressReporter | ProgressPart] = {}
        self._shared: ProgressReporter | None = None  # see shared_progress

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.err.print("[yellow]warning:[/yellow] ", end="")
        self.err.print(message, markup=False)

    def error(self, message: str) -> None:
        self.err.print("[red bold]error:[/red bold] ", end="")
        self.err.print(message, markup=False)

    def progress(self, total: int | None, description: str, *, copy_of: tuple[str, str] | None = None,
                 unit: str = "rows") -> ProgressReporter | ProgressPart:
        """A progress display counting ``unit`` (rows, queries); ``copy_of`` (table, collection) names a
        copy, whose progress --metrics-port reports under those labels."""
        if self._shared is not None:
            progress: ProgressReporter | ProgressPart = ProgressPart(self._shared, total, description)
        else:
            progress = ProgressReporter(self, total, description, unit=unit)
        if copy_of is not None:
            self.copies[copy_of] = progress
        return progress

    @contextlib.contextmanager
    def shared_progress(self, total: int | None, description: str) -> Iterator[ProgressReporter]:
        """One display for several copies (migrate --migration.consistent): while it is open,
        :meth:`progress` hands out parts of it instead of new displays."""
        with self.progress(total, description) as shared:
            self._shared = shared
            try:
                yield shared
            finally:
                self._shared = None

    def summary(self, title: str, rows: list[tuple[str, str]]) -> None:
        self.result(title, {"summary": dict(rows)}, table(title, None, rows))

    def result(self, title: str, fields: dict[str, Any], *renderables: Any, wrap: bool = False) -> None:
        """What a command found: ``renderables`` on stdout here (``wrap``: as :meth:`print_wrapped`); one
        log event (title, fields) in a LogUI, so that --log-format json output stays one JSON object a line."""
        for renderable in renderables:
            if wrap:
                self.print_wrapped(renderable)
            else:
                self.out.print(renderable)

    def print_wrapped(self, renderable: Any) -> None:
        """Print a table of long sentences (verify's findings) that may wrap: as wide as a terminal,
        else LOG_TABLE_WIDTH, so a log or a file reads it without a 200-column line."""
        self.out.print(renderable, width=None if self.out.is_terminal else min(self.out.width, LOG_TABLE_WIDTH))


class ProgressReporter:
    """Work done (rows, queries: ``unit``), its rate and ETA: a live bar on a terminal, periodic lines otherwise."""

    def __init__(self, ui: UI, total: int | None, description: str, *, unit: str = "rows"):
        self.ui = ui
        self.unit = unit
        self.total = total
        self.description = self.current = description  # current: with the part being done now
        self.done = 0
        self.started = time.monotonic()
        self.ended: float | None = None  # the rate of a finished display stays that of its run
        self._last_line = self.started
        self._bar: Progress | None = None
        self._task = None
        self.ranges_total = self.ranges_done = 0  # the copy's units of work (metrics)

    def __enter__(self) -> ProgressReporter:
        if self.ui.err.is_terminal and not self.ui.quiet:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.ui.err, transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, rate="")
        return self

    def start_at(self, done: int, base: int | None = None) -> None:
        """Rows already done by an earlier run (resume); ``base`` of them not counted in the rate."""
        self.done = done
        self._base = done if base is None else base
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    _base = 0

    @property
    def rate(self) -> float:
        elapsed = max((self.ended or time.monotonic()) - self.started, 1e-9)
        return (self.done - self._base) / elapsed

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate:,.0f} {self.unit}/s")
        elif not self.ui.quiet and now - self._last_line >= PLAIN_PROGRESS_EVERY_S:
            self._last_line = now
            self.ui.info(self.line())

    def line(self) -> str:
        rate = self.rate
        if self.total:
            pct = 100.0 * self.done / self.total if self.total else 100.0
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_s = f"{eta:,.0f}s" if eta != float("inf") else "?"
            return (f"{self.current}: {self.done:,} / {self.total:,} {self.unit} ({pct:.0f}%), "
                    f"{rate:,.0f} {self.unit}/s, ETA {eta_s}")
        return f"{self.current}: {self.done:,} {self.unit}, {rate:,.0f} {self.unit}/s"

    def describe(self, text: str) -> None:
        """What the bar (or line) names, e.g. the table being copied now."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)
        self.current = text

    def __exit__(self, *exc: Any) -> None:
        self.ended = time.monotonic()
        if self._bar is not None:
            self._bar.stop()


class ProgressPart:
    """One table's share of a shared display: its rows and ranges count in the whole."""

    def __init__(self, whole: ProgressReporter, total: int | None, description: str):
        self.whole = whole
        self.total = total
        self.description = description
        self.done = self._base = 0  # this table's rows (done by an earlier run: _base)
        self.started = time.monotonic()
        self.ended: float | None = None
        self._ranges_total = self._ranges_done = 0

    @property
    def rate(self) -> float:
        return (self.done - self._base) / max((self.ended or time.monotonic()) - self.started, 1e-9)

    def __enter__(self) -> ProgressPart:
        self.whole.describe(f"{self.whole.description}: {self.description}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ended = time.monotonic()

    def start_at(self, done: int) -> None:
        """Rows of this table done by an earlier run: in the whole's count, not in its rate."""
        self.whole.start_at(self.whole.done + done, base=self.whole._base + done)
        self.done = self._base = done

    def advance(self, n: int) -> None:
        self.done += n
        self.whole.advance(n)

    @property
    def ranges_total(self) -> int:
        return self._ranges_total

    @ranges_total.setter
    def ranges_total(self, n: int) -> None:
        self.whole.ranges_total += n - self._ranges_total
        self._ranges_total = n

    @property
    def ranges_done(self) -> int:
        return self._ranges_done

    @ranges_done.setter
    def ranges_done(self, n: int) -> None:
        self.whole.ranges_done += n - self._ranges_done
        self._ranges_done = n


def table(title: str, columns: tuple[str, ...] | None, rows) -> Table:
    """A titled table; ``columns=None`` makes a two-column "name: value" table without a header."""
    out = Table(title=title, show_header=columns is not None, title_justify="left")
    if columns is None:
        out.add_column(style="bold")
        out.add_column()
    else:
        for col in columns:
            out.add_column(col)
    for row in rows:
        out.add_row(*row)
    return out


@dataclass
class Summary:
    title: str
    rows: list[tuple[str, str]]

    def render(self, ui: UI) -> None:
        ui.summary(self.title, self.rows)


def render_index_settings(ui: UI, plan) -> None:
    """Each dense vector's HNSW and quantization with where each came from (a flag, a pgvector index,
    the default), then the notes on the pgvector indexes (IVFFlat, binary quantization)."""
    rows = [(vector_label(v.name), f"{i.m} ({i.m_source})", f"{i.ef_construct} ({i.ef_construct_source})",
             f"{i.quantization or 'none'}" + ("" if i.quantization_source == "none" else f" ({i.quantization_source})"))
            for v in plan.vectors if (i := v.index) is not None]
    if rows:
        ui.out.print(table("Index settings (HNSW built after the load)",
                           ("vector", "HNSW m", "HNSW ef_construct", "quantization"), rows))
    for note in plan.index_notes:
        ui.info(note)


# complexity: prints the plan's tables (source, vectors, IDs, payload, indexes, notes); each optional section is a
# branch.
def render_plan(ui: UI, plan, target_display: str | None = None) -> None:
    """The migration plan as `inspect` prints it (and migrate before it starts)."""
    t = plan.table
    s = plan.server
    kinds = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
    source = [("table", f"{t.display} ({kinds.get(t.relkind, t.relkind)})")]
    if len(t.leaves) > 1 or (t.leaves and t.leaves[0].oid != t.oid):
        source.append(("reads from", ", ".join(leaf.display for leaf in t.leaves[:8])
                       + (f" (+{len(t.leaves) - 8} more)" if len(t.leaves) > 8 else "")))
    source += [
        ("server", f"PostgreSQL {s.version}, pgvector {s.pgvector or 'not installed'}"),
        ("estimated rows", f"{t.estimated_rows:,}" if t.estimated_rows else "unknown (not analyzed)"),
        ("collection", plan.collection + (f" at {target_display}" if target_display else "")),
    ]
    if plan.where:
        source.append(("rows", f"only WHERE {plan.where}"))
    ui.out.print(table("Source", None, source))

    ui.out.print(table(
        "Vectors (one named vector per column)",
        ("vector", "column type", "size", "distance", "datatype", "distance decided by"),
        [(vector_label(v.name), v.declared,
          "sparse" if v.is_sparse else f"{v.size}" + (" (from data)" if v.size_from_data else ""),
          v.distance or "dot (sparse)", v.datatype, v.distance_source) for v in plan.vectors]
        + [(b.name, b.declared, "sparse", "dot, IDF modifier", "sparse", f"{b.source}: {b.describe()}")
           for b in getattr(plan, "bm25", ())]))

    render_index_settings(ui, plan)

    keys = dict(plan.payload_keys)  # --qdrant.payload-key / layouts: * spreads, empty leaves out

    def payload_field(column: str) -> str:
        key = keys.get(column, column)
        return {"*": "(keys spread at the top level)", "": "(not in the payload)"}.get(key, key)

    k = plan.key
    kept = [c for c in k.columns if keys.get(c, c) == c]
    ui.out.print(table("Point IDs", None, [
        ("key", f"{', '.join(k.columns)} (from {k.source})"),
        ("ID", k.description),
        ("uniqueness", "guaranteed by a unique constraint" if k.unique_by_constraint
         else "checked before writing (no unique constraint)"),
        ("payload", "the key value is kept in the payload under its column name" if kept == list(k.columns)
         else "; ".join(f"{c}: {payload_field(c)}" for c in k.columns)),
    ]))

    ui.out.print(table("Payload", ("field", "column type", "stored in Qdrant as"),
                       [(payload_field(p.name), p.declared, p.description) for p in plan.payload]))
    if plan.payload_indexes:
        ui.out.print(table("Payload indexes (created before loading)", ("field", "index type", "because"),
                           [(p.field, p.type, p.source) for p in plan.payload_indexes]))
    for w in plan.warnings:
        ui.warn(w)
