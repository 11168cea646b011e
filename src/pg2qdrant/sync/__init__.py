"""`pg2qdrant sync`: keep a collection equal to its table after the copy.

Users who keep PostgreSQL as the source of truth find keeping Qdrant in step
the hard part: deletes, UPDATEs whose vector PostgreSQL does not even send
(unchanged TOAST), key changes, TRUNCATE, crashes and restarts. This module
is the apply loop that gets those right; source/changes.py reads the stream.

Three modes:

- ``cdc`` (default): logical replication with pgoutput. Changes are collected
  into batches; a batch is reduced to its net effect per point (commit order
  per key, any order across keys), turned into target operations
  (target/operations.py) and applied with wait=true. Only then is the LSN of
  the last commit fully inside the batch acknowledged to PostgreSQL, whose
  slot (``confirmed_flush_lsn``) is therefore the checkpoint: after a crash
  the stream replays from there, and replaying is harmless because every
  operation is idempotent and the replay ends in the same state.
- ``poll``: re-copy rows whose ``--sync.updated-column`` advanced past a
  watermark (minus an overlap window for late commits); no deletes.
- ``reconcile``: compare ID sets and fix both directions (also ``--sync.reconcile``
  on top of the other two modes).

An UPDATE that left vectors as unchanged TOAST (``u``) becomes SetPayload /
UpdateVectors of what was sent, never a whole point rebuilt from holes. When
such a partial change cannot be applied to an existing point (the point is
missing: a replay after a delete, a key change, a TRUNCATE), the row is read
again from PostgreSQL by key, with the plan's own reads, and upserted (or the
point deleted when the row is gone). Reading the current row is safe in the
middle of a stream: every later change of that key is applied after it, so
the point still converges to the row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg
from psycopg import sql

from pg2qdrant import redaction
from pg2qdrant.errors import DataError, InputError, SourceError, TargetError
from pg2qdrant.mapping import PointId, RowMapper, make_point_id
from pg2qdrant.pipeline import MigrationOptions, connect_target, migrate, open_source, READ_BATCH_ROWS
from pg2qdrant.plan import Plan, shape_differences
from pg2qdrant.source import adapters, changes, connect, snapshot
from pg2qdrant.source.changes import (UNCHANGED, Begin, Commit, ConnectionLost, Delete, Insert, Keepalive,
                                      Relation, ReplicationConnection, RowDecoder, SlotBusy, Truncate, Update,
                                      XLogData, format_lsn)
from pg2qdrant.target import operations as ops
from pg2qdrant.target.qdrant import parse_target_url
from pg2qdrant.ui import UI, Summary

log = logging.getLogger(__name__)

MODES = ("cdc", "poll", "reconcile")
MAX_BATCH_CHANGES = 5000  # row changes per apply (bounds memory and the time between acks)
MAX_BATCH_DELAY_S = 0.25  # apply at least this often while changes keep arriving
FEEDBACK_EVERY_S = 10.0  # standby status; the server drops silent clients after wal_sender_timeout (60 s)
STATUS_EVERY_S = 10.0  # plain status lines when not on a terminal
LAG_WARN_BYTES = 1 << 30
LAG_WARN_SECONDS = 300.0
LAG_WARN_EVERY_S = 300.0
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0
SLOT_BUSY_GIVE_UP_S = 120.0  # a killed client's walsender lets go within seconds; longer means another sync
TARGET_FAILURES_GIVE_UP = 10
ONCE_IDLE_S = 5.0
EXISTENCE_CHUNK = 1000
REREAD_CHUNK = 500


# ---------------------------------------------------------------------------------------
# Options and results
# ---------------------------------------------------------------------------------------

@dataclass
class SyncOptions:
    mode: str = "cdc"
    slot: str | None = None  # default: derived from the collection
    publication: str | None = None
    initial_copy: bool = False
    updated_column: str | None = None
    interval_s: float = 5.0
    overlap: float = 60.0  # seconds for time columns, units for numeric columns
    reconcile: bool = False
    reconcile_interval_s: float = 600.0
    once: bool = False  # cdc: stop once caught up with the WAL position at start; poll: one round
    status_every_s: float = STATUS_EVERY_S

    def names(self, collection: str) -> tuple[str, str]:
        slot = self.slot or changes.derived_name("pg2qdrant", collection)
        publication = self.publication or changes.derived_name("pg2qdrant", collection)
        return changes.check_name("--sync.slot", slot), changes.check_name("--sync.publication", publication)

    def validate(self, options: MigrationOptions | None = None) -> None:
        if options is not None and options.dry_run:
            raise InputError("sync does not take --migration.dry-run.",
                             fix="check the plan with `pg2qdrant inspect`, or a copy with `migrate --migration.dry-run`.")
        if self.mode not in MODES:
            raise InputError(f"--sync.mode {self.mode!r} is not known.", fix="use cdc, poll or reconcile.")
        if self.mode == "poll" and not self.updated_column:
            raise InputError("--sync.mode poll needs --sync.updated-column.",
                             fix="name the column that every write advances, e.g. --sync.updated-column "
                                 "updated_at (a timestamp set by the application or a trigger).")
        if self.mode != "poll" and self.updated_column:
            raise InputError("--sync.updated-column is only used by --sync.mode poll.",
                             fix="add --sync.mode poll, or drop --sync.updated-column.")
        if self.interval_s <= 0 or self.overlap < 0 or self.reconcile_interval_s <= 0:
            raise InputError("--sync.interval and --sync.reconcile-interval must be positive, --sync.overlap "
                             "not negative.", fix="e.g. --sync.interval 5 --sync.overlap 60.")
        if self.initial_copy and self.mode != "cdc":
            raise InputError("--sync.initial-copy is for --sync.mode cdc (poll mode copies every row on its "
                             "first round anyway).", fix="drop --sync.initial-copy.")


@dataclass
class SyncStats:
    """What the loop has done; read by the status line, the summary and the benchmark."""

    started: float = field(default_factory=time.monotonic)
    changes: int = 0  # row changes applied (insert, update, delete; a TRUNCATE counts once)
    transactions: int = 0
    batches: int = 0
    rereads: int = 0
    partial_updates: int = 0
    reconnects: int = 0
    acked_lsn: int = 0
    server_lsn: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=200_000))  # commit -> applied, seconds
    last_latency: float = 0.0
    watermark: str | None = None  # poll mode
    deleted_orphans: int = 0
    filled_missing: int = 0

    @property
    def lag_bytes(self) -> int:
        return max(0, self.server_lsn - self.acked_lsn)

    def rate(self, since: float | None = None) -> float:
        elapsed = time.monotonic() - (since or self.started)
        return self.changes / elapsed if elapsed > 0 else 0.0


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


# ---------------------------------------------------------------------------------------
# The net effect of a batch of row changes -> target operations
# ---------------------------------------------------------------------------------------

FULL, PARTIAL, DELETE, REREAD = "full", "partial", "delete", "reread"


def _norm(pid: Any) -> PointId:
    return pid if isinstance(pid, int) else str(pid).lower()


@dataclass
class _RowChange:
    op: str  # I U D
    new: list | None
    old_kind: str | None
    old: list | None
    reread_only: bool  # the relation does not publish every planned column


@dataclass
class _TruncateChange:
    full: bool  # the whole table (else only some inheritance children / partitions)


@dataclass
class ChangeBatch:
    items: list = field(default_factory=list)
    commit_end: int | None = None  # end LSN of the last commit whose changes are all in this batch
    commit_times: list = field(default_factory=list)  # µs since 2000 of those commits
    opened: float = field(default_factory=time.monotonic)
    rows: int = 0

    def __bool__(self) -> bool:
        return bool(self.items) or self.commit_end is not None


class SourceLookup:
    """An ordinary SQL connection for what the stream cannot tell: conversions, rows read again by key."""

    def __init__(self, url: str, plan: Plan):
        self.conn = connect.connect(url, autocommit=True)
        self.plan = plan
        self.decoder = RowDecoder(plan, self.conn)

    @property
    def oids(self) -> list[int]:
        return self.decoder.load_oids

    def fetch_rows(self, keys: list[tuple]) -> list[tuple]:
        """Current rows for these key values, read with the plan's own SELECT (as the copy reads)."""
        return changes.fetch_rows_by_key(self.conn, self.plan, self.oids, keys, REREAD_CHUNK)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


class Applier:
    """Turns a batch of decoded changes into operations and applies them (wait=true)."""

    def __init__(self, plan: Plan, target, lookup: SourceLookup, *, batch_size: int,
                 on_partial_truncate: Callable[[], None], stats: SyncStats | None = None):
        self.plan = plan
        self.target = target
        self.lookup = lookup
        self.mapper = RowMapper(plan)
        self.batch_size = batch_size
        self.key_indexes = plan.key.read_indexes
        self.on_partial_truncate = on_partial_truncate
        self.stats = stats or SyncStats()  # rereads, partial_updates counted here

    def _key(self, row: list) -> tuple:
        return tuple(row[i] for i in self.key_indexes)

    def _id(self, key: tuple) -> PointId:
        if any(v is None or v is UNCHANGED for v in key):
            raise DataError(
                f"A change of {self.plan.table.display} arrived without its key ({', '.join(self.plan.key.columns)}).",
                fix="give the table a replica identity that includes the key (see the REPLICA IDENTITY advice "
                    "printed at start), then restart sync with --sync.reconcile.")
        return _norm(make_point_id(self.plan.key, key))

    def apply(self, batch: ChangeBatch) -> int:
        """Apply ``batch``; returns the number of row changes it held."""
        self.lookup.decoder.resolve()
        states: dict[PointId, tuple[str, list | None, tuple]] = {}
        cleared = False
        for item in batch.items:
            if isinstance(item, _TruncateChange):
                if item.full:
                    states.clear()
                    cleared = True
                else:  # only some children: apply what we have, then fix the rest by ID sets
                    self._write(states, cleared)
                    states.clear()
                    cleared = False
                    self.on_partial_truncate()
                continue
            self._fold(states, item, cleared)
        self._write(states, cleared)
        return batch.rows

    def _fold(self, states: dict, change: _RowChange, cleared: bool) -> None:
        """Fold one change into the per-point net effect (changes of one key arrive in commit order)."""
        if change.op == "D":
            key = self._key(change.old)
            states[self._id(key)] = (DELETE, None, key)
            return
        new = change.new
        if change.old_kind == "O" and change.old is not None:  # REPLICA IDENTITY FULL: old row is complete
            new = [o if v is UNCHANGED and o is not UNCHANGED else v for v, o in zip(new, change.old)]
        key = self._key(new)
        if any(v is UNCHANGED for v in key) and change.old is not None:
            key = self._key(change.old)
            for i, v in zip(self.key_indexes, key):
                new[i] = v
        pid = self._id(key)
        partial = any(v is UNCHANGED for v in new)
        if change.op == "U" and change.old is not None:
            old_key = self._key(change.old)
            old_pid = self._id(old_key)
            if old_pid != pid:  # key change: the old point goes, the new one gets the whole row
                previous = states.get(old_pid)
                states[old_pid] = (DELETE, None, old_key)
                if not partial:
                    states[pid] = (FULL, new, key)
                elif previous is not None and previous[0] == FULL:
                    states[pid] = (FULL, _merge(previous[1], new), key)
                else:
                    states[pid] = (REREAD, None, key)
                return
        if change.reread_only or (partial and change.op == "I"):
            states[pid] = (REREAD, None, key)
            return
        if not partial:
            states[pid] = (FULL, new, key)
            return
        previous = states.get(pid)
        if previous is None:
            states[pid] = (REREAD, None, key) if cleared else (PARTIAL, new, key)
        elif previous[0] in (FULL, PARTIAL):
            states[pid] = (previous[0], _merge(previous[1], new), key)
        else:
            states[pid] = (REREAD, None, key)

    def _write(self, states: dict, cleared: bool) -> None:
        full_rows, partial, deletes, rereads = [], [], [], []
        for pid, (kind, row, key) in states.items():
            if kind == FULL:
                full_rows.append(row)
            elif kind == PARTIAL:
                partial.append((pid, row, key))
            elif kind == DELETE:
                deletes.append(pid)
            else:
                rereads.append((pid, key))
        if partial:
            # Setting a payload field to null is not possible in place (Qdrant's set_payload drops
            # keys given as null, while the copy keeps NULL as null): such rows are read again.
            nulls = [p for p in partial if any(p[1][s.read_index] is None for s in self.plan.payload)]
            if nulls:
                rereads.extend((pid, key) for pid, _, key in nulls)
                partial = [p for p in partial if not any(p[1][s.read_index] is None for s in self.plan.payload)]
            present = self._existing([p for p, _, _ in partial])
            rereads.extend((pid, key) for pid, _, key in partial if pid not in present)
            partial = [p for p in partial if p[0] in present]
            self.stats.partial_updates += len(partial)  # updated in place, unchanged TOAST left alone
        if rereads:
            self.stats.rereads += len(rereads)
            found = self.lookup.fetch_rows([key for _, key in rereads])
            found_ids = set()
            for row in found:
                full_rows.append(row)
                found_ids.add(self._id(self._key(list(row))))
            deletes.extend(pid for pid, _ in rereads if pid not in found_ids)
        operations: list[ops.Operation] = []
        if cleared:
            operations.append(ops.ClearCollection())
        if deletes:
            operations.append(ops.DeletePoints(tuple(deletes)))
        for start in range(0, len(full_rows), self.batch_size):
            operations.append(ops.Upsert(self.mapper.map_rows(full_rows[start:start + self.batch_size])))
        operations.extend(self._partial_operations(partial))
        self._send(operations)

    def _partial_operations(self, partial: list) -> list[ops.Operation]:
        if not partial:
            return []
        rows = [[None if v is UNCHANGED else v for v in row] for _, row, _ in partial]
        mapped = self.mapper.map_rows(rows)
        out: list[ops.Operation] = []
        for i, (pid, row, _) in enumerate(partial):
            payload = {p.name: mapped.payloads[i][p.name] for p in self.plan.payload
                       if row[p.read_index] is not UNCHANGED}
            if payload:
                out.append(ops.SetPayload(pid, payload))
            vectors = mapped.vectors_of(i)
            sent = {v.name: vectors[v.name] for v in self.plan.vectors
                    if row[v.read_index] is not UNCHANGED and row[v.read_index] is not None}
            if sent:
                out.append(ops.UpdateVectors(pid, sent))
            nulls = tuple(v.name for v in self.plan.vectors if row[v.read_index] is None)
            if nulls:
                out.append(ops.DeleteVectors(pid, nulls))
        return out

    def _existing(self, ids: list[PointId]) -> set[PointId]:
        present: set[PointId] = set()
        for start in range(0, len(ids), EXISTENCE_CHUNK):
            records = self.target.retrieve(self.plan.collection, ids[start:start + EXISTENCE_CHUNK],
                                           with_vectors=False)
            present.update(_norm(r.id) for r in records)
        return present

    def _send(self, operations: list[ops.Operation]) -> None:
        """Apply in order, a request at a time of about batch_size points."""
        request: list[ops.Operation] = []
        weight = 0
        for op in operations:
            w = len(op.batch) if isinstance(op, ops.Upsert) else 1
            if request and weight + w > self.batch_size:
                self.target.apply(self.plan.collection, request, wait=True)
                request, weight = [], 0
            request.append(op)
            weight += w
        if request:
            self.target.apply(self.plan.collection, request, wait=True)


def _merge(base: list, change: list) -> list:
    return [b if c is UNCHANGED else c for b, c in zip(base, change)]


# ---------------------------------------------------------------------------------------
# Reconciliation: compare ID sets, delete orphans, fill missing points
# ---------------------------------------------------------------------------------------

def reconcile(plan: Plan, target, conn: psycopg.Connection, *, batch_size: int, fill: bool = True,
              ui: UI | None = None) -> tuple[int, int]:
    """Make the collection's ID set equal the table's: (orphans deleted, missing points written).

    Runs while nothing else writes the collection. ``conn`` may be inside a
    snapshot (the initial copy's), then the comparison is as of that snapshot.
    """
    oids = adapters.load_oids(conn, [r.load_type for r in plan.reads])
    source: dict[PointId, tuple] = {}
    for key in changes.iter_key_rows(conn, plan, oids):
        source[_norm(make_point_id(plan.key, key))] = key
    present = {_norm(r.id) for r in target.scroll(plan.collection, batch=2000, with_vectors=False,
                                                   with_payload=False)}
    orphans = [pid for pid in present if pid not in source]
    for start in range(0, len(orphans), 10_000):
        target.apply(plan.collection, [ops.DeletePoints(tuple(orphans[start:start + 10_000]))], wait=True)
    filled = 0
    if fill:
        missing = [key for pid, key in source.items() if pid not in present]
        if missing:
            mapper = RowMapper(plan)
            for start in range(0, len(missing), REREAD_CHUNK):
                rows = changes.fetch_rows_by_key(conn, plan, oids, missing[start:start + REREAD_CHUNK])
                for s in range(0, len(rows), batch_size):
                    target.apply(plan.collection, [ops.Upsert(mapper.map_rows(rows[s:s + batch_size]))], wait=True)
                filled += len(rows)
    if ui is not None and (orphans or filled):
        ui.info(f"Reconciled {plan.collection!r} with {plan.table.display}: {len(orphans):,} orphan point(s) "
                f"deleted, {filled:,} missing point(s) written.")
    return len(orphans), filled


def _reconcile_now(options: MigrationOptions, plan: Plan, target, ui: UI, stats: SyncStats) -> None:
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        adapters.configure(conn, [int(r.load_type[4:]) for r in plan.reads if r.load_type.startswith("raw:")])
        deleted, filled = reconcile(plan, target, conn, batch_size=options.batch_size, ui=ui)
        stats.deleted_orphans += deleted
        stats.filled_missing += filled
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# Stop signals and status
# ---------------------------------------------------------------------------------------

class _StopSignals:
    """SIGTERM / Ctrl-C set ``stop``: the loop applies what it holds, acknowledges, and exits.

    A second Ctrl-C interrupts at once (the slot still holds everything not acknowledged).
    Only the main thread can install handlers; elsewhere (tests, an embedding app) the
    caller's ``stop`` event is the way to stop.
    """

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class StatusLine:
    """changes/s, lag in bytes and seconds: a live line on a terminal, a plain line now and then otherwise."""

    def __init__(self, ui: UI, stats: SyncStats, every_s: float, what: str):
        self.ui = ui
        self.stats = stats
        self.every_s = every_s
        self.what = what
        self.live = ui.err.is_terminal and not ui.quiet
        self._status = None
        self._last = time.monotonic()
        self._last_changes = 0
        self._last_warn = 0.0
        self._interval_rate = 0.0

    def __enter__(self) -> "StatusLine":
        if self.live:
            self._status = self.ui.err.status(self.text())
            self._status.__enter__()
        return self

    def text(self) -> str:
        s = self.stats
        lag = f"lag {_mib(s.lag_bytes)}, {s.last_latency:.2f} s" if self.what == "cdc" else \
            f"watermark {s.watermark or '-'}"
        return (f"sync: {s.changes:,} changes applied ({self._interval_rate:,.0f}/s), {lag}"
                + (f", confirmed LSN {format_lsn(s.acked_lsn)}" if self.what == "cdc" else ""))

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.5 if self.live else self.every_s):
            return
        self._interval_rate = (self.stats.changes - self._last_changes) / max(now - self._last, 1e-9)
        self._last, self._last_changes = now, self.stats.changes
        if self._status is not None:
            self._status.update(self.text())
        elif not self.ui.quiet:
            self.ui.info(self.text())
        s = self.stats
        if (s.lag_bytes > LAG_WARN_BYTES or s.last_latency > LAG_WARN_SECONDS) and \
                now - self._last_warn > LAG_WARN_EVERY_S:
            self._last_warn = now
            self.ui.warn(f"sync is behind by {_mib(s.lag_bytes)} ({s.last_latency:,.0f} s): PostgreSQL keeps that "
                         "WAL until it is applied. Check Qdrant's write speed (--migration.batch-size), and see "
                         "`pg2qdrant sync status`.")

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


# ---------------------------------------------------------------------------------------
# CDC
# ---------------------------------------------------------------------------------------

class CdcSync:
    """One sync run in CDC mode: setup, (initial copy), stream with reconnects, clean stop."""

    def __init__(self, options: MigrationOptions, sync_options: SyncOptions, ui: UI, stop: threading.Event,
                 stats: SyncStats):
        self.options = options
        self.sync = sync_options
        self.ui = ui
        self.stop = stop
        self.stats = stats
        self.slot, self.publication = sync_options.names(options.collection)
        self.plan: Plan | None = None
        self.target = None
        self.until_lsn: int | None = None

    # -- setup ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Plan, checks, publication, slot (with the initial copy), target.

        Everything that can fail on the user's input is checked before the first
        side effect (publication, slot, writes).
        """
        options, ui = self.options, self.ui
        options.validate()
        address = parse_target_url(options.qdrant_url)
        session = open_source(options, ui)
        plan = session.plan
        session.close()
        conn = connect.connect(options.pg_url, autocommit=True)
        try:
            settings = changes.wal_settings(conn)
            if settings.get("wal_level") != "logical":
                raise InputError(
                    f"PostgreSQL runs with wal_level = {settings.get('wal_level')}; logical replication needs "
                    "wal_level = logical.",
                    fix="ALTER SYSTEM SET wal_level = logical and restart PostgreSQL (managed services: enable "
                        "logical replication/decoding in the settings); or use --sync.mode poll "
                        "--sync.updated-column COLUMN.")
            changes.check_replica_identity(conn, plan)
            existing = changes.slot_info(conn, self.slot)
            if existing is not None:
                changes.check_slot(existing, plan.server.database)
        finally:
            conn.close()

        marker_key = f"cdc:{options.collection}:{self.slot}"
        marker_value = {"slot": self.slot, "database": plan.server.database, "system": plan.server.system_identifier}
        copy = self.sync.initial_copy
        if copy and existing is not None:
            marker = self._state(address, marker_key, None)
            if marker and marker.get("copied") and all(marker.get(k) == v for k, v in marker_value.items()):
                ui.info(f"The initial copy from slot {self.slot!r} finished in an earlier run: continuing from "
                        "the slot.")
                copy = False
            else:
                ui.warn(f"Replication slot {self.slot!r} exists but no initial copy finished from it (an "
                        "interrupted run?): dropping it and copying again.")
                self._drop_slot_quietly(wait_s=SLOT_BUSY_GIVE_UP_S)
                existing = None
        if not copy:
            self.target = connect_target(options, address, ui)
            actual = self.target.shape(plan.collection)
            if actual is None:
                raise InputError(
                    f"Collection {plan.collection!r} does not exist, so there is nothing to keep in sync yet.",
                    fix="start with the copy: add --sync.initial-copy (or run `pg2qdrant migrate --then-sync`).")
            diffs = shape_differences(plan.shape(), actual)
            if diffs:
                raise InputError(
                    f"Collection {plan.collection!r} does not match the table: " + "; ".join(diffs) + ".",
                    fix="sync into the collection the table was copied to, or copy again into a new one "
                        "(--sync.initial-copy with another --qdrant.collection).")

        # The publication must exist before the slot: pgoutput reads it as of each change's time.
        conn = connect.connect(options.pg_url, autocommit=True)
        try:
            if changes.ensure_publication(conn, self.publication, plan, options.collection):
                ui.info(f"Created publication {self.publication!r} for {plan.table.display}.")
        finally:
            conn.close()

        if copy:
            plan = self._initial_copy(address)
            self._state(address, marker_key, {**marker_value, "copied": True, "at": time.time()})
        elif existing is None:
            rep = ReplicationConnection(options.pg_url)
            try:
                lsn, _ = rep.create_slot(self.slot, export_snapshot=False)
            finally:
                rep.close()
            self._state(address, marker_key, {**marker_value, "copied": False, "at": time.time()})
            if self.sync.reconcile:
                ui.info(f"Created replication slot {self.slot!r} at {format_lsn(lsn)}; the reconciliation "
                        "below catches up whatever changed between the copy and now.")
            else:
                ui.warn(f"Created replication slot {self.slot!r} at {format_lsn(lsn)}: changes from now on are "
                        "synced. Changes made between the copy and now are not; for a gap-free start use "
                        "--sync.initial-copy (or `migrate --then-sync`), or add --sync.reconcile once.")
        else:
            ui.info(f"Resuming from replication slot {self.slot!r} (last applied LSN "
                    f"{format_lsn(existing.confirmed_flush)}, {_mib(existing.lag_bytes)} behind).")
            if existing.lag_bytes > LAG_WARN_BYTES:
                ui.warn(f"the slot holds {_mib(existing.lag_bytes)} of WAL not yet applied; catching up.")
        if self.sync.reconcile and not copy:
            _reconcile_now(options, plan, self.target, ui, self.stats)
        if settings.get("max_slot_wal_keep_size") in ("-1", None):
            ui.info("Note: max_slot_wal_keep_size is unlimited: while sync is stopped the slot keeps all WAL. "
                    "Remove an abandoned slot with `pg2qdrant sync drop`.")
        self.plan = plan
        if self.sync.once:
            conn = connect.connect(options.pg_url, autocommit=True)
            try:
                self.until_lsn = changes.current_wal_lsn(conn)
            finally:
                conn.close()

    def _state(self, address, key: str, value: dict | None) -> dict | None:
        """Read (value None) or write the marker ``key`` in the target, with a short-lived connection
        (local mode allows one client per folder, and the copy opens its own)."""
        target = connect_target(self.options, address) if self.target is None else self.target
        try:
            store = _StateStore(target, self.options, key)
            if value is None:
                return store.load()
            store.save(value)
            return value
        finally:
            if target is not self.target:
                target.close()

    def _initial_copy(self, address) -> Plan:
        """Slot with an exported snapshot -> copy from that snapshot -> stream from the slot.

        The replication connection runs nothing else until the copy (and the orphan
        check) have read the snapshot: its next command would release it.
        """
        options, ui = self.options, self.ui
        rep = ReplicationConnection(options.pg_url)
        try:
            lsn, snapshot_name = rep.create_slot(self.slot, export_snapshot=True)
            ui.info(f"Created replication slot {self.slot!r}; copying the table as of its snapshot "
                    f"(changes after {format_lsn(lsn)} are streamed next).")
            # The copy and the stream share one target: an in-memory collection exists only in
            # its client, and local mode allows one client per folder.
            self.target = connect_target(options, address, ui)
            # restart: progress saved by an earlier run was read in another snapshot, and the
            # stream starts at this slot's snapshot, so every range is copied again from it.
            copy_options = dataclasses.replace(options, restart=True)
            result = migrate(copy_options, ui, snapshot_id=snapshot_name, target=self.target)
            result.summary(address.display()).render(ui)
            plan = result.plan
            target = self.target
            if not result.created_collection:
                # An existing collection may hold points whose rows were deleted before the copy.
                conn = connect.connect(options.pg_url, autocommit=True)
                try:
                    adapters.configure(conn, [int(r.load_type[4:]) for r in plan.reads
                                              if r.load_type.startswith("raw:")])
                    snapshot.attach_snapshot(conn, snapshot_name)
                    deleted, _ = reconcile(plan, target, conn, batch_size=options.batch_size, fill=False)
                    snapshot.end(conn)
                finally:
                    conn.close()
                if deleted:
                    ui.info(f"Deleted {deleted:,} point(s) whose rows no longer exist.")
        except BaseException:
            rep.close()
            self._drop_slot_quietly()
            raise
        rep.close()
        return plan

    def _drop_slot_quietly(self, wait_s: float = 2.0) -> None:
        """Drop our slot, waiting up to ``wait_s`` for a previous connection to let go of it.

        Used for a slot whose copy failed or was interrupted: it would hold WAL forever.
        """
        try:
            conn = connect.connect(self.options.pg_url, autocommit=True)
            try:
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    info = changes.slot_info(conn, self.slot)
                    if info is None or not info.active:
                        break
                    time.sleep(0.1)
                changes.drop_slot(conn, self.slot)
            finally:
                conn.close()
        except InputError:
            if wait_s > 2.0:
                raise
        except Exception as exc:  # the original error matters more
            log.debug("could not drop slot %s: %s", self.slot, exc)

    # -- streaming -----------------------------------------------------------------------
    def run(self) -> None:
        backoff = BACKOFF_START_S
        busy_since: float | None = None
        target_failures = 0
        with StatusLine(self.ui, self.stats, self.sync.status_every_s, "cdc") as status:
            while not self.stop.is_set():
                applied_before = self.stats.changes
                started = time.monotonic()
                try:
                    self._session(status)
                    return  # stopped, or caught up (--sync.once)
                except SlotBusy as exc:
                    busy_since = busy_since or time.monotonic()
                    if time.monotonic() - busy_since > SLOT_BUSY_GIVE_UP_S:
                        raise InputError(
                            f"Replication slot {self.slot!r} is in use by another connection: {exc.message}",
                            fix="another `pg2qdrant sync` is running for this collection; stop it, or use "
                                "another --sync.slot.") from None
                    why = "the slot is still held by the previous connection"
                except (ConnectionLost, psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    busy_since = None
                    why = redaction.redact(getattr(exc, "message", None) or exc)
                except TargetError as exc:
                    target_failures = 0 if self.stats.changes > applied_before else target_failures + 1
                    if target_failures >= TARGET_FAILURES_GIVE_UP:
                        raise
                    why = exc.message
                if self.stats.changes > applied_before or time.monotonic() - started > 60:
                    backoff = BACKOFF_START_S
                self.stats.reconnects += 1
                self.ui.warn(f"{why.strip()} - reconnecting in {backoff:.1f} s (nothing unacknowledged is lost: "
                             "the slot resends it).")
                if self.stop.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _session(self, status: StatusLine) -> bool:
        """Stream until stopped (True) or until the connection breaks (raises)."""
        plan = self.plan
        assert plan is not None
        try:
            lookup = SourceLookup(self.options.pg_url, plan)
        except SourceError as exc:  # unreachable: retried (credentials rejected is an InputError: not)
            raise ConnectionLost(exc.message, fix=exc.fix) from None
        rep: ReplicationConnection | None = None
        try:
            applier = Applier(plan, self.target, lookup, batch_size=self.options.batch_size,
                              on_partial_truncate=lambda: _reconcile_now(self.options, plan, self.target,
                                                                         self.ui, self.stats),
                              stats=self.stats)
            rep = ReplicationConnection(self.options.pg_url)
            rep.start(self.slot, self.publication)
            return self._stream(rep, lookup, applier, status)
        finally:
            if rep is not None:
                rep.close()
            lookup.close()

    def _stream(self, rep: ReplicationConnection, lookup: SourceLookup, applier: Applier,
                status: StatusLine) -> bool:
        plan = self.plan
        stats = self.stats
        decoder = lookup.decoder
        ours = {plan.table.oid, *(leaf.oid for leaf in plan.table.leaves)}
        leaves = {leaf.oid for leaf in plan.table.leaves}
        batch = ChangeBatch()
        in_txn = False
        received = stats.acked_lsn
        last_feedback = last_data = time.monotonic()
        warned_missing: set[int] = set()

        def flush() -> None:
            nonlocal batch
            if not batch:
                return
            n = applier.apply(batch) if batch.items else 0
            now = time.time()
            for t in batch.commit_times:
                stats.latencies.append(max(0.0, now - changes.pg_time_to_unix(t)))
            if batch.commit_times:
                stats.last_latency = stats.latencies[-1]
            stats.changes += n
            stats.transactions += len(batch.commit_times)
            stats.batches += 1
            if batch.commit_end is not None and batch.commit_end > stats.acked_lsn:
                stats.acked_lsn = batch.commit_end
            batch = ChangeBatch()
            acknowledge()

        def acknowledge(reply: bool = False) -> None:
            nonlocal last_feedback
            rep.send_feedback(max(received, stats.acked_lsn), stats.acked_lsn, reply=reply)
            last_feedback = time.monotonic()

        acknowledge()
        while True:
            if self.stop.is_set():
                flush()
                acknowledge()
                return True
            frame = rep.read(0.0 if batch else 0.5)
            if isinstance(frame, XLogData):
                last_data = time.monotonic()
                stats.server_lsn = max(stats.server_lsn, frame.wal_end)
                received = max(received, frame.start)
                msg = changes.decode_message(frame.payload)
                if isinstance(msg, (Insert, Update, Delete)):
                    if msg.relation in ours and decoder.knows(msg.relation):
                        reread_only = msg.relation in decoder.missing_columns
                        if reread_only and msg.relation not in warned_missing:
                            warned_missing.add(msg.relation)
                            self.ui.warn(
                                f"the publication does not send column(s) "
                                f"{', '.join(decoder.missing_columns[msg.relation])} of {plan.table.display}; "
                                "each changed row is read again from the table (slower).")
                        if isinstance(msg, Insert):
                            batch.items.append(_RowChange("I", decoder.decode(msg.relation, msg.new), None, None,
                                                          reread_only))
                        elif isinstance(msg, Update):
                            old = decoder.decode(msg.relation, msg.old) if msg.old is not None else None
                            batch.items.append(_RowChange("U", decoder.decode(msg.relation, msg.new), msg.old_kind,
                                                          old, reread_only))
                        else:
                            batch.items.append(_RowChange("D", None, msg.old_kind,
                                                          decoder.decode(msg.relation, msg.old), False))
                        batch.rows += 1
                elif isinstance(msg, Begin):
                    in_txn = True
                elif isinstance(msg, Commit):
                    in_txn = False
                    batch.commit_end = msg.end_lsn
                    batch.commit_times.append(msg.commit_time)
                    received = max(received, msg.end_lsn)
                elif isinstance(msg, Relation):
                    if msg.oid in ours:
                        decoder.add_relation(msg)
                elif isinstance(msg, Truncate):
                    hit = ours.intersection(msg.relations)
                    if hit:
                        full = plan.table.oid in hit or leaves <= hit
                        batch.items.append(_TruncateChange(full))
                        batch.rows += 1
            elif isinstance(frame, Keepalive):
                stats.server_lsn = max(stats.server_lsn, frame.wal_end)
                if not batch and not in_txn and frame.wal_end >= stats.acked_lsn:
                    # Everything sent so far is applied: let the slot move on while tables are quiet.
                    stats.last_latency = 0.0
                    if frame.wal_end > stats.acked_lsn:
                        stats.acked_lsn = frame.wal_end
                        received = max(received, frame.wal_end)
                        acknowledge()
                    elif frame.reply_requested:
                        acknowledge()
                elif frame.reply_requested:
                    acknowledge()
            now = time.monotonic()
            if batch and (frame is None or batch.rows >= MAX_BATCH_CHANGES
                          or now - batch.opened >= MAX_BATCH_DELAY_S):
                flush()
            elif now - last_feedback >= FEEDBACK_EVERY_S:
                acknowledge()
            status.tick()
            if self.until_lsn is not None and not batch and not in_txn and (
                    stats.acked_lsn >= self.until_lsn
                    # the insert position can lie in WAL the server has not flushed (so not sent)
                    # yet; once idle with everything sent applied, that is caught up too
                    or (now - last_data > ONCE_IDLE_S and stats.acked_lsn >= stats.server_lsn > 0)):
                acknowledge()
                return True

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None


# ---------------------------------------------------------------------------------------
# Poll mode
# ---------------------------------------------------------------------------------------

_POLL_TYPES = {"timestamptz": "time", "timestamp": "time", "date": "time",
               "int2": "number", "int4": "number", "int8": "number", "numeric": "number"}


class _StateStore:
    """Sync's own small records (poll watermark, "initial copy finished" marker), kept with the target.

    Next to the collection, like migrate's progress (target/checkpoints.py), so that a
    new or deleted collection starts over: qdrant-client targets (server, local,
    :memory:) use the payload-only collection ``<--migration.offsets-collection>_sync``,
    an Edge folder the file ``<offsets collection>_sync.json`` in it, and
    ``--migration.state-file PATH`` the file ``PATH.sync.json``. Separate from
    migrate's records, whose readers expect only migration states.
    """

    def __init__(self, target, options: MigrationOptions, key: str):
        self.target = target
        self.key = key
        self.point_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "pg2qdrant-sync:" + key))
        name = f"{options.offsets_collection}_sync"
        self.collection = name
        self.file: Path | None = None
        if options.state_file:
            self.file = Path(options.state_file + ".sync.json")
        elif parse_target_url(options.qdrant_url).kind == "edge":
            self.file = Path(parse_target_url(options.qdrant_url).path) / f"{name}.json"

    def _read_file(self) -> dict:
        return json.loads(self.file.read_text() or "{}") if self.file.exists() else {}

    def load(self) -> dict | None:
        if self.file is not None:
            return self._read_file().get(self.key)
        client = self.target.client
        if not client.collection_exists(self.collection):
            return None
        records = client.retrieve(self.collection, [self.point_id], with_payload=True)
        return json.loads(records[0].payload["record"]) if records else None

    def save(self, record: dict) -> None:
        if self.file is not None:
            data = self._read_file()
            data[self.key] = record
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(self.file.name + ".tmp")
            with open(tmp, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file)
            return
        from qdrant_client import models
        client = self.target.client
        if not client.collection_exists(self.collection):
            client.create_collection(self.collection, vectors_config={})
        client.upsert(self.collection, points=[models.PointStruct(
            id=self.point_id, vector={}, payload={"key": self.key, "record": json.dumps(record)})], wait=True)


class PollSync:
    """Incremental mode: rows whose updated column advanced, with an overlap window; no deletes."""

    def __init__(self, options: MigrationOptions, sync_options: SyncOptions, ui: UI, stop: threading.Event,
                 stats: SyncStats):
        self.options = options
        self.sync = sync_options
        self.ui = ui
        self.stop = stop
        self.stats = stats
        self.plan: Plan | None = None
        self.target = None

    def prepare(self) -> None:
        from pg2qdrant.pipeline import ensure_collection
        options, ui = self.options, self.ui
        options.validate()
        address = parse_target_url(options.qdrant_url)
        session = open_source(options, ui)
        plan = session.plan
        session.close()
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
                    fix="add one, e.g. updated_at timestamptz set by a trigger (see README), or use CDC mode.")
            self.column = col
            if col.name not in plan.table.btree_columns:
                ui.warn(f"no index on {col.name}: every poll reads the whole table. "
                        f"CREATE INDEX ON {plan.table.display} ({col.name}) makes polls cheap.")
            if not self.sync.reconcile:
                ui.warn("poll mode does not see deletes (or key changes); add --sync.reconcile to remove "
                        "points whose rows are gone.")
        self.target = connect_target(options, address, ui)
        ensure_collection(self.target, plan, options.collection_options(plan), create=options.create_collection,
                          ui=ui)
        self.address = address
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
        backoff = BACKOFF_START_S
        with StatusLine(self.ui, self.stats, self.sync.status_every_s, "poll") as status:
            while not self.stop.is_set():
                try:
                    watermark = self._round(watermark)
                    if self.sync.reconcile and (last_reconcile is None or self.sync.once or
                                                time.monotonic() - last_reconcile >= self.sync.reconcile_interval_s):
                        _reconcile_now(self.options, self.plan, self.target, self.ui, self.stats)
                        last_reconcile = time.monotonic()
                    backoff = BACKOFF_START_S
                except (psycopg.OperationalError, SourceError, TargetError) as exc:
                    self.ui.warn(f"{redaction.redact(getattr(exc, 'message', None) or exc)} - retrying in "
                                 f"{backoff:.1f} s.")
                    self.stats.reconnects += 1
                    if self.stop.wait(backoff):
                        break
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                status.tick(force=self.sync.once)
                if self.sync.once or self.stop.wait(self.sync.interval_s):
                    break

    def _round(self, watermark: str | None) -> str | None:
        """Copy rows past ``watermark - overlap``; returns the new watermark (max of the column)."""
        plan, col = self.plan, self.column
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            raw = [int(r.load_type[4:]) for r in plan.reads if r.load_type.startswith("raw:")]
            adapters.configure(conn, raw)
            oids = adapters.load_oids(conn, [r.load_type for r in plan.reads])
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # max() and rows: one snapshot
            column = sql.Identifier(col.name)
            type_sql = sql.SQL(col.declared)  # format_type() output from the catalog
            high = conn.execute(sql.SQL("SELECT max({})::text FROM {}").format(column, plan.table.ident)).fetchone()[0]
            where = None
            if watermark is not None:
                if _POLL_TYPES[col.type.name] == "time":
                    where = sql.SQL("{} > {}::{} - {} * interval '1 second'").format(
                        column, sql.Literal(watermark), type_sql, sql.Literal(self.sync.overlap))
                else:
                    where = sql.SQL("{} > {}::{} - {}").format(column, sql.Literal(watermark), type_sql,
                                                               sql.Literal(self.sync.overlap))
            select = sql.SQL("SELECT {} FROM {}{}").format(
                sql.SQL(", ").join(sql.SQL(r.sql) for r in plan.reads), plan.table.ident,
                (sql.SQL(" WHERE ") + where) if where is not None else sql.SQL(""))
            mapper = RowMapper(plan)
            written = 0
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(select)) as copy:
                    copy.set_types(oids)
                    rows: list = []
                    for row in copy.rows():
                        rows.append(row)
                        if len(rows) >= READ_BATCH_ROWS:
                            written += self._upsert(mapper, rows)
                            rows = []
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
        for start in range(0, len(rows), self.options.batch_size):
            self.target.apply(self.plan.collection,
                              [ops.Upsert(mapper.map_rows(rows[start:start + self.options.batch_size]))], wait=True)
        return len(rows)

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------

def run_sync(options: MigrationOptions, sync_options: SyncOptions | None, ui: UI, *,
             initial_copy: bool | None = None, stop: threading.Event | None = None,
             stats: SyncStats | None = None) -> SyncStats:
    """Run `sync` until stopped (SIGTERM, Ctrl-C, ``stop`` set) or, with ``once``, caught up.

    ``initial_copy=True`` is `migrate --then-sync`: copy from the new slot's snapshot,
    then stream from its consistent point.
    """
    sync_options = sync_options or SyncOptions()
    if initial_copy is not None:
        sync_options.initial_copy = initial_copy
    sync_options.validate(options)
    stop = stop or threading.Event()
    stats = stats or SyncStats()
    runner: CdcSync | PollSync
    runner = CdcSync(options, sync_options, ui, stop, stats) if sync_options.mode == "cdc" else \
        PollSync(options, sync_options, ui, stop, stats)
    try:
        runner.prepare()
        with _StopSignals(stop):
            if sync_options.mode == "cdc":
                ui.info(f"Streaming changes of {runner.plan.table.display} into {runner.plan.collection!r} "
                        f"(slot {runner.slot}, publication {runner.publication}); stop with Ctrl-C or SIGTERM.")
            elif sync_options.mode == "poll":
                ui.info(f"Polling {runner.plan.table.display} every {sync_options.interval_s:g} s on "
                        f"{sync_options.updated_column} (overlap {sync_options.overlap:g}).")
            runner.run()
    finally:
        runner.close()
    _summary(sync_options, runner, stats).render(ui)
    return stats


def _summary(sync_options: SyncOptions, runner, stats: SyncStats) -> Summary:
    elapsed = time.monotonic() - stats.started
    rows = [("changes applied", f"{stats.changes:,}"), ("time", f"{elapsed:,.1f} s"),
            ("rate", f"{stats.rate():,.0f} changes/s")]
    if sync_options.mode == "cdc":
        rows += [("transactions", f"{stats.transactions:,}"),
                 ("last applied LSN", format_lsn(stats.acked_lsn)),
                 ("rows read again by key", f"{stats.rereads:,}"),
                 ("reconnects", f"{stats.reconnects:,}"),
                 ("slot", f"{runner.slot} (kept: rerun to resume; `pg2qdrant sync drop` removes it)")]
    elif sync_options.mode == "poll":
        rows.append(("watermark", stats.watermark or "-"))
    if stats.deleted_orphans or stats.filled_missing or sync_options.reconcile or sync_options.mode == "reconcile":
        rows += [("orphans deleted", f"{stats.deleted_orphans:,}"), ("missing filled", f"{stats.filled_missing:,}")]
    title = "Reconcile summary" if sync_options.mode == "reconcile" else "Sync summary"
    return Summary(title, rows)


def sync_status(pg_url: str, collection: str, sync_options: SyncOptions, ui: UI) -> None:
    """`pg2qdrant sync status`: the slot's position, lag and retained WAL."""
    slot, publication = sync_options.names(collection)
    conn = connect.connect(pg_url, autocommit=True)
    try:
        info = changes.slot_info(conn, slot)
        settings = changes.wal_settings(conn)
        pub = conn.execute(
            "SELECT string_agg(format('%%I.%%I', schemaname, tablename), ', ') FROM pg_publication_tables "
            "WHERE pubname = %s", (publication,)).fetchone()[0]
        pub_exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    finally:
        conn.close()
    if info is None:
        raise InputError(f"There is no replication slot {slot!r} on this server.",
                         fix="start syncing with `pg2qdrant sync --sync.initial-copy ...` (or pass the "
                             "--sync.slot / --qdrant.collection used when it was created).")
    keep = settings.get("max_slot_wal_keep_size", "-1")
    rows = [
        ("slot", f"{slot} ({'active, server process ' + str(info.active_pid) if info.active else 'inactive'})"),
        ("publication", f"{publication} ({pub})" if pub_exists else f"{publication} (missing!)"),
        ("last applied LSN", format_lsn(info.confirmed_flush)),
        ("server WAL LSN", format_lsn(info.current_wal)),
        ("lag", _mib(info.lag_bytes)),
        ("WAL kept by the slot", _mib(info.retained_bytes)),
        ("wal_status", f"{info.wal_status}" + (f" (safe_wal_size {_mib(info.safe_wal_size)})"
                                                 if info.safe_wal_size is not None else "")),
        ("max_slot_wal_keep_size", "unlimited" if keep == "-1" else keep),
    ]
    Summary("Sync status", rows).render(ui)
    if info.wal_status == "lost":
        ui.warn("the slot lost WAL it needed (max_slot_wal_keep_size): changes are missing. Drop it with "
                "`pg2qdrant sync drop` and start again with --sync.initial-copy.")
    elif not info.active and info.lag_bytes > LAG_WARN_BYTES:
        ui.warn(f"no sync is reading this slot and it holds {_mib(info.retained_bytes)} of WAL; restart sync or "
                "drop the slot (`pg2qdrant sync drop`) before the disk fills.")
    if keep == "-1":
        ui.info("max_slot_wal_keep_size is unlimited: a stopped sync keeps WAL without bound; consider setting it.")


def sync_drop(pg_url: str, collection: str, sync_options: SyncOptions, ui: UI) -> None:
    """`pg2qdrant sync drop`: remove the slot and (if sync created it) the publication."""
    slot, publication = sync_options.names(collection)
    conn = connect.connect(pg_url, autocommit=True)
    try:
        dropped = changes.drop_slot(conn, slot)
        pub = changes.drop_publication(conn, publication)
    finally:
        conn.close()
    ui.info(f"Replication slot {slot!r}: {'dropped' if dropped else 'did not exist'}.")
    ui.info({"dropped": f"Publication {publication!r}: dropped.",
             "absent": f"Publication {publication!r}: did not exist.",
             "kept": f"Publication {publication!r} was not created by pg2qdrant: left in place "
                     f"(DROP PUBLICATION {publication} removes it)."}[pub])


__all__ = ["SyncOptions", "SyncStats", "run_sync", "sync_status", "sync_drop", "reconcile", "Applier",
           "ChangeBatch"]
