"""Everything the user sees: messages, progress, the plan, summaries.

All output goes through streams that mask registered secrets, so a password
can't leak through a message someone formats carelessly. Progress is a rich
bar on a terminal and a plain line every few seconds otherwise (CI logs).
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from pg2qdrant import redaction

PLAIN_PROGRESS_EVERY_S = 5.0
NON_TERMINAL_WIDTH = 200


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

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.err.print("[yellow]warning:[/yellow] ", end="")
        self.err.print(message, markup=False)

    def error(self, message: str) -> None:
        self.err.print("[red bold]error:[/red bold] ", end="")
        self.err.print(message, markup=False)

    def progress(self, total: int | None, description: str) -> "ProgressReporter":
        return ProgressReporter(self, total, description)


class ProgressReporter:
    """Rows done, rows/s and ETA: a live bar on a terminal, periodic lines otherwise."""

    def __init__(self, ui: UI, total: int | None, description: str):
        self.ui = ui
        self.total = total
        self.description = description
        self.done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> "ProgressReporter":
        if self.ui.err.is_terminal and not self.ui.quiet:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.ui.err, transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, rate="")
        return self

    def start_at(self, done: int) -> None:
        """Rows already done by an earlier run (resume)."""
        self.done = done
        self._base = done
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    _base = 0

    @property
    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (self.done - self._base) / elapsed

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate:,.0f} rows/s")
        elif not self.ui.quiet and now - self._last_line >= PLAIN_PROGRESS_EVERY_S:
            self._last_line = now
            self.ui.info(self.line())

    def line(self) -> str:
        rate = self.rate
        if self.total:
            pct = 100.0 * self.done / self.total if self.total else 100.0
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_s = f"{eta:,.0f}s" if eta != float("inf") else "?"
            return (f"{self.description}: {self.done:,} / {self.total:,} rows ({pct:.0f}%), "
                    f"{rate:,.0f} rows/s, ETA {eta_s}")
        return f"{self.description}: {self.done:,} rows, {rate:,.0f} rows/s"

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


@dataclass
class Summary:
    title: str
    rows: list[tuple[str, str]]

    def render(self, ui: UI) -> None:
        table = Table(title=self.title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for k, v in self.rows:
            table.add_row(k, v)
        ui.out.print(table)


def render_plan(ui: UI, plan, target_display: str | None = None) -> None:
    """The migration plan as `inspect` prints it (and migrate before it starts)."""
    t = plan.table
    s = plan.server
    kinds = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
    head = Table(title="Source", show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("table", f"{t.display} ({kinds.get(t.relkind, t.relkind)})")
    if len(t.leaves) > 1 or (t.leaves and t.leaves[0].oid != t.oid):
        head.add_row("reads from", ", ".join(leaf.display for leaf in t.leaves[:8])
                     + (f" (+{len(t.leaves) - 8} more)" if len(t.leaves) > 8 else ""))
    head.add_row("server", f"PostgreSQL {s.version}, pgvector {s.pgvector or 'not installed'}")
    head.add_row("estimated rows", f"{t.estimated_rows:,}" if t.estimated_rows else "unknown (not analyzed)")
    head.add_row("collection", plan.collection + (f" at {target_display}" if target_display else ""))
    ui.out.print(head)

    vt = Table(title="Vectors (one named vector per column)", title_justify="left")
    for col in ("vector", "column type", "size", "distance", "datatype", "distance decided by"):
        vt.add_column(col)
    for v in plan.vectors:
        size = "sparse" if v.is_sparse else (f"{v.size}" + (" (from data)" if v.size_from_data else ""))
        vt.add_row(v.name, v.declared, size, v.distance or "dot (sparse)", v.datatype, v.distance_source)
    ui.out.print(vt)

    k = plan.key
    kt = Table(title="Point IDs", show_header=False, title_justify="left")
    kt.add_column(style="bold")
    kt.add_column()
    kt.add_row("key", f"{', '.join(k.columns)} (from {k.source})")
    kt.add_row("ID", k.description)
    kt.add_row("uniqueness", "guaranteed by a unique constraint" if k.unique_by_constraint
               else "checked before writing (no unique constraint)")
    kt.add_row("payload", "the key value is kept in the payload under its column name")
    ui.out.print(kt)

    pt = Table(title="Payload", title_justify="left")
    for col in ("field", "column type", "stored in Qdrant as"):
        pt.add_column(col)
    for p in plan.payload:
        pt.add_row(p.name, p.declared, p.description)
    ui.out.print(pt)
    if plan.payload_indexes:
        it = Table(title="Payload indexes (created before loading)", title_justify="left")
        for col in ("field", "index type", "because"):
            it.add_column(col)
        for p in plan.payload_indexes:
            it.add_row(p.field, p.type, p.source)
        ui.out.print(it)
    for w in plan.warnings:
        ui.warn(w)
