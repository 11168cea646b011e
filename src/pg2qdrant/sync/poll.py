"""Poll mode: :class:`PollSync`, re-copying rows whose updated column advanced past a watermark.

Also runs ``--sync.mode reconcile`` (a single reconciliation). No deletes are
seen by polling; ``--sync.reconcile`` removes points whose rows are gone.
"""

from __future__ import annotations

import time

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError, SourceError, TargetError
from pg2qdrant.core.mapping.batch import RowMapper
from pg2qdrant.core.options import READ_BATCH_ROWS
from pg2qdrant.core.retry import Backoff
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination.writer import Writer
from pg2qdrant.runtime.mapping import row_mapper
from pg2qdrant.runtime.target import connect_target
from pg2qdrant.source import connect, snapshot
from pg2qdrant.source import watermark as source_watermark
from pg2qdrant.sync.options import BACKOFF_MAX_S, BACKOFF_START_S
from pg2qdrant.sync.reconcile import _reconcile_now
from pg2qdrant.sync.runner import Runner
from pg2qdrant.sync.state import _StateStore
from pg2qdrant.sync.status import StatusLine

_POLL_TYPES = {"timestamptz": "time", "timestamp": "time", "date": "time",
               "int2": "number", "int4": "number", "int8": "number", "numeric": "number"}


class PollSync(Runner):
    """Incremental mode: rows whose updated column advanced, with an overlap window; no deletes."""

    def prepare(self) -> None:
        from pg2qdrant.runtime.target import ensure_collection
        options, ui = self.options, self.ui
        address, plan = self._plan()
        self.plan = plan
        if self.sync.mode == "poll":
            col = plan.table.column(self.sync.updated_column)
            if col is None:
                raise InputError(
                    f"--sync.updated-column {self.sync.updated_column!r} is not a column of {plan.table.display}.",
                    fix=f"columns are: {', '.join(c.name for c in plan.table.columns)}.")
            if col.type.schema != "pg_catalog" or col.type.name not in _POLL_TYPES:
                raise InputError(
                    f"--sync.updated-column {col.name} is {col.declared}; poll mode needs a timestamp, date or "
                    "integer/numeric column that every insert and update advances.",
                    fix="add one, e.g. updated_at timestamptz set by a trigger (see docs/commands/sync.md), or use CDC mode.")
            self.column = col
            if col.name not in plan.table.btree_columns:
                ui.warn(f"no index on {col.name}: every poll reads the whole table. "
                        f"CREATE INDEX ON {plan.table.display} ({col.name}) makes polls cheap.")
            if not self.sync.reconcile:
                ui.warn("poll mode does not see deletes (or key changes); add --sync.reconcile to remove "
                        "points whose rows are gone.")
        self.target = connect_target(options, address, ui)
        collection_options = options.collection_options(plan.payload_indexes)
        if ensure_collection(self.target, plan, collection_options, create=options.create_collection, ui=ui,
                             batch_size=options.batch_size):
            # A server's collection is created without HNSW for loading (m=0); polls write as rows change
            # and never end as a copy does, so HNSW is switched on at once (was: never, on a server).
            self.target.finish_load(plan.collection_spec(collection_options), True)
        self.address = address
        self.writer = Writer(self.target, plan.collection, batch_size=options.batch_size)
        self.state = _StateStore(self.target, options,
                                 f"{plan.collection}:{plan.table.display}:{self.sync.updated_column}")

    def run(self) -> None:
        if self.sync.mode == "reconcile":
            _reconcile_now(self.options, self.plan, self.target, self.ui, self.stats)
            return
        state = self.state.load() or {}
        watermark = state.get("watermark")
        if watermark is not None and self.target.count(self.plan.collection) == 0:
            self.ui.warn("the collection is empty although a watermark was saved: copying every row again.")
            watermark = None
        self.stats.watermark = watermark
        last_reconcile = None
        backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        with StatusLine(self.ui, self.stats, self.sync.status_every_s, "poll") as status:
            while not self.stop.is_set():
                try:
                    watermark = self._round(watermark)
                    if self.sync.reconcile and (last_reconcile is None or self.sync.once or
                                                time.monotonic() - last_reconcile >= self.sync.reconcile_interval_s):
                        _reconcile_now(self.options, self.plan, self.target, self.ui, self.stats)
                        last_reconcile = time.monotonic()
                    backoff.reset()
                except (*connect.CONNECTION_LOST, SourceError, TargetError) as exc:
                    delay = backoff.next()
                    self.ui.warn(f"{redaction.redact(getattr(exc, 'message', None) or exc)} - retrying in "
                                 f"{delay:.1f} s.")
                    self.stats.reconnects += 1
                    if self.stop.wait(delay):
                        break
                    continue
                status.tick(force=self.sync.once)
                if self.sync.once or self.stop.wait(self.sync.interval_s):
                    break

    def _round(self, watermark: str | None) -> str | None:
        """Copy rows past ``watermark - overlap``; returns the new watermark (max of the column)."""
        plan, col = self.plan, self.column
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            high, batches = source_watermark.rows_since(
                conn, plan, col, watermark, self.sync.overlap, seconds=_POLL_TYPES[col.type.name] == "time",
                batch_rows=READ_BATCH_ROWS)
            mapper = row_mapper(plan)
            written = 0
            for rows in batches:
                written += self._upsert(mapper, rows)
            snapshot.end(conn)
        finally:
            conn.close()
        new_watermark = high if high is not None else watermark
        if new_watermark != watermark:
            self.state.save({"watermark": new_watermark, "column": col.name, "table": plan.table.display,
                             "collection": plan.collection, "saved_at": time.time()})
        self.stats.changes += written
        self.stats.watermark = new_watermark
        return new_watermark

    def _upsert(self, mapper: RowMapper, rows: list) -> int:
        self.writer.apply([ops.Upsert(mapper.map_rows(rows))])  # requests bounded by points and bytes
        return len(rows)

