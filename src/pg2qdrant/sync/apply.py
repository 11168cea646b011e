"""The net effect of a batch of row changes -> target operations (the fold and apply steps of CDC).

:class:`ChangeBatch` holds decoded changes (:class:`RowChange`, :class:`TruncateChange`);
:class:`Applier` folds them per point into a :class:`PointState` each (commit order
per key), turns those into target operations (full upserts, partial SetPayload / UpdateVectors /
DeleteVectors, deletes, clears) and applies them with wait=true, reading rows
again by key through :class:`SourceLookup` when a partial change cannot be applied.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pg2qdrant.core import layouts
from pg2qdrant.core.errors import DataError
from pg2qdrant.core.mapping.ids import (
    PointId,
    keys_can_share_ids,
    make_point_id,
    normalize_point_id,
    shared_id_error,
    uuid_of_key,
)
from pg2qdrant.core.plan import Plan
from pg2qdrant.core.table import Leaf
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination.writer import Writer
from pg2qdrant.runtime.mapping import row_mapper
from pg2qdrant.source import catalog, connect, lookups
from pg2qdrant.source.lookups import SchemaChanged
from pg2qdrant.source.pgoutput_rows import UNCHANGED, RowDecoder
from pg2qdrant.sync.options import EXISTENCE_CHUNK, REREAD_CHUNK, SyncStats


class Kind(enum.Enum):
    """What a batch does to one point."""

    FULL = "full"  # upsert the whole row
    PARTIAL = "partial"  # update the values sent in place (the others are unchanged TOAST)
    DELETE = "delete"
    REREAD = "reread"  # read the row again by key: upsert it, or delete the point if it is gone


@dataclass
class PointState:
    """The net effect of a batch's changes on one point so far."""

    kind: Kind
    key: tuple  # the key of the row the point holds (or held, for a delete)
    row: list | None = None  # FULL and PARTIAL: the row in plan.reads order (PARTIAL: with UNCHANGED)


@dataclass
class RowChange:
    op: str  # the pgoutput tag: I (insert), U (update), D (delete)
    new: list | None
    old_kind: str | None
    old: list | None
    reread_only: bool  # the relation does not publish every planned column


@dataclass
class TruncateChange:
    relations: frozenset[int]  # OIDs the Truncate message named (ours): partitions, parent, children


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

    def current_leaves(self) -> tuple[Leaf, ...]:
        """The relations holding the table's rows now (the plan's list is as of sync's start)."""
        return catalog.leaves(self.conn, self.plan.table.oid, self.plan.table.relkind)

    def split_leaves(self, truncated: frozenset[int]) -> tuple[tuple[Leaf, ...], tuple[Leaf, ...]]:
        """(relations emptied, relations holding rows still) after a TRUNCATE of ``truncated``.

        Read from the catalog now, not from the plan: partitions created or attached
        while sync runs hold rows too. ``TRUNCATE ONLY parent`` names the parent alone,
        its children keep their rows; a Truncate naming a partitioned table (sent by a
        publication via the partition root) empties all of it.
        """
        table = self.plan.table
        current = self.current_leaves()
        if (table.relkind == "p" and table.oid in truncated) or {t.oid for t in table.change_tables} & truncated:
            return current, ()
        return (tuple(leaf for leaf in current if leaf.oid in truncated),
                tuple(leaf for leaf in current if leaf.oid not in truncated))

    def replan(self, plan: Plan) -> None:
        """Read with ``plan`` (made again after a DDL), decoding the relations already sent."""
        self.decoder = self.decoder.renewed(plan)
        self.plan = plan

    def fetch_rows(self, keys: list[tuple]) -> list[tuple]:
        """Current rows for these key values, read with the plan's own SELECT (as the copy reads)."""
        return lookups.fetch_rows_by_key(self.conn, self.plan, self.oids, keys, REREAD_CHUNK)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


class Applier:
    """Turns a batch of decoded changes into operations and applies them (wait=true)."""

    def __init__(self, plan: Plan, target, lookup: SourceLookup, *, batch_size: int,
                 on_partial_truncate: Callable[[tuple[Leaf, ...], tuple[Leaf, ...]], None],
                 stats: SyncStats | None = None):
        self.target = target
        self.lookup = lookup
        self.batch_size = batch_size
        self.on_partial_truncate = on_partial_truncate
        self.stats = stats or SyncStats()  # rereads, partial_updates counted here
        # A re-read that finds the plan's columns gone (a DDL not yet noticed): set by the schema
        # watch, which makes the plan again and applies the batch as re-reads (or stops sync).
        self.on_schema_changed: Callable[[ChangeBatch], bool] | None = None
        self.replan(plan)

    def replan(self, plan: Plan) -> None:
        """Map and write with ``plan`` (at start, and when it is made again after a DDL)."""
        self.plan = plan
        self.mapper = row_mapper(plan)
        self.writer = Writer(self.target, plan.collection, batch_size=self.batch_size)  # bounded like the copy's
        self.key_indexes = plan.key.read_indexes
        self.shared_ids = keys_can_share_ids(plan.key)  # see _guard_shared_ids
        if self.shared_ids:
            column = plan.key.columns[0]
            self._key_field = next(p.name for p in plan.payload if p.column == column)
            self._padded = plan.table.column(column).type.name == "bpchar"  # its text drops the padding
        # --pg.where, payload keys and layouts: every changed row is read again by key, with the
        # filter (a row updated out of it is not found, so its point is deleted) and mapped whole.
        self.reread_all = layouts.rows_only(plan)

    def _key(self, row: list) -> tuple:
        return tuple(row[i] for i in self.key_indexes)

    def _id(self, key: tuple) -> PointId:
        if any(v is None or v is UNCHANGED for v in key):
            raise DataError(
                f"A change of {self.plan.table.display} arrived without its key ({', '.join(self.plan.key.columns)}).",
                fix="give the table a replica identity that includes the key (see the REPLICA IDENTITY advice "
                    "printed at start), then restart sync with --sync.reconcile.")
        return normalize_point_id(make_point_id(self.plan.key, key))

    def apply(self, batch: ChangeBatch) -> int:
        """Apply ``batch``; returns the number of row changes it held."""
        try:
            return self._apply(batch)
        except SchemaChanged:
            # the watch applies the batch again with the new plan (True), or stops sync
            if self.on_schema_changed is None or not self.on_schema_changed(batch):
                raise
            return batch.rows

    def _apply(self, batch: ChangeBatch) -> int:
        self.lookup.decoder.resolve()
        states: dict[PointId, PointState] = {}
        cleared = False
        for item in batch.items:
            if isinstance(item, TruncateChange):
                cleared = self._truncate(states, item, cleared)
            else:
                self.fold(states, item, cleared)
        self._write(states, cleared)
        return batch.rows

    def _truncate(self, states: dict[PointId, PointState], change: TruncateChange, cleared: bool) -> bool:
        """A TRUNCATE in the batch: True when it emptied the whole table (the collection is cleared)."""
        truncated, remaining = self.lookup.split_leaves(change.relations)
        if not remaining:
            states.clear()
            return True
        # only some relations: apply what we have, then delete exactly their points
        self._write(states, cleared)
        states.clear()
        self.on_partial_truncate(truncated, remaining)
        return False

    def fold(self, states: dict[PointId, PointState], change: RowChange, cleared: bool) -> None:
        """Fold one change into the per-point net effect (changes of one key arrive in commit order).

        ``cleared``: the batch cleared the collection before this change (a point not in
        ``states`` is then known to be missing).
        """
        if change.op == "D":
            key = self._key(change.old)
            self._delete(states, self._id(key), key)
            return
        new, key = self._new_row(change)
        pid = self._id(key)
        old_key = self._key(change.old) if change.op == "U" and change.old is not None else None
        old_pid = self._id(old_key) if old_key is not None else None
        moved = old_pid is not None and old_pid != pid  # a key change
        if self.shared_ids and self._same_point_in_batch(states, pid, key):
            if moved:
                self._delete(states, old_pid, old_key)
            return
        partial = any(v is UNCHANGED for v in new)
        if moved:  # the old point goes, the new one gets the whole row
            previous = states.get(old_pid)
            self._delete(states, old_pid, old_key)
            states[pid] = self._moved(previous, new, key, partial, change.reread_only)
        else:
            states[pid] = self._changed(states.get(pid), change, new, key, partial, cleared)

    def _new_row(self, change: RowChange) -> tuple[list, tuple]:
        """(new row, its key): completed from a REPLICA IDENTITY FULL old row, the key from the old
        row when the new one did not send it."""
        new = change.new
        if change.old_kind == "O" and change.old is not None:  # REPLICA IDENTITY FULL: old row is complete
            new = [o if v is UNCHANGED and o is not UNCHANGED else v for v, o in zip(new, change.old)]
        key = self._key(new)
        if any(v is UNCHANGED for v in key) and change.old is not None:
            key = self._key(change.old)
            for i, v in zip(self.key_indexes, key):
                new[i] = v
        return new, key

    def _moved(self, previous: PointState | None, new: list, key: tuple, partial: bool,
               reread_only: bool) -> PointState:
        """The new point of a key change (``previous``: the batch's state of the old key's point)."""
        if self.reread_all or reread_only:
            return PointState(Kind.REREAD, key)
        if not partial:
            return PointState(Kind.FULL, key, new)
        if previous is not None and previous.kind is Kind.FULL:
            return PointState(Kind.FULL, key, _merge(previous.row, new))
        return PointState(Kind.REREAD, key)

    def _changed(self, previous: PointState | None, change: RowChange, new: list, key: tuple, partial: bool,
                 cleared: bool) -> PointState:
        """An insert, or an update that kept the point."""
        if change.reread_only or (partial and change.op == "I") or self.reread_all:
            return PointState(Kind.REREAD, key)
        if not partial:
            return PointState(Kind.FULL, key, new)
        if previous is None:
            return PointState(Kind.REREAD, key) if cleared else PointState(Kind.PARTIAL, key, new)
        if previous.kind in (Kind.FULL, Kind.PARTIAL):
            return PointState(previous.kind, key, _merge(previous.row, new))
        return PointState(Kind.REREAD, key)

    def _delete(self, states: dict[PointId, PointState], pid: PointId, key: tuple) -> None:
        previous = states.get(pid)
        if previous is not None and previous.kind is not Kind.DELETE and previous.key != key:
            return  # the point now holds another row whose key is read as the same UUID
        states[pid] = PointState(Kind.DELETE, key)

    def _same_point_in_batch(self, states: dict, pid: PointId, key: tuple) -> bool:
        """A second key of this batch on one point (see _guard_shared_ids): both rows still in the
        table stop sync; else the point is read again from the one left (True: handled)."""
        previous = states.get(pid)
        if previous is None or previous.kind is Kind.DELETE or previous.key == key:
            return False
        found = {self._key(list(r)) for r in self.lookup.fetch_rows([previous.key, key])}
        if len(found) > 1:
            raise shared_id_error(self.plan, [(pid, [previous.key[0], key[0]])])
        states[pid] = PointState(Kind.REREAD, found.pop() if found else key)
        return True

    def _guard_shared_ids(self, states: dict[PointId, PointState]) -> None:
        """Distinct text keys read as the same UUID share a point (migrate and reconcile refuse them).

        A row written here onto a point that holds another row stops sync when both rows are in
        the table (both named; when the written row is gone again, the point stays the holder's,
        whichever batch its delete falls in); a delete of a key whose point holds another row rewrites that row's point
        instead (or deletes it when that row is gone too). Costs one read of the points whose
        key looks like a UUID.
        """
        pids = [pid for pid, state in states.items()
                if state.kind is not Kind.PARTIAL and uuid_of_key(state.key[0]) is not None]
        for start in range(0, len(pids), EXISTENCE_CHUNK):
            for record in self.target.retrieve(self.plan.collection, pids[start:start + EXISTENCE_CHUNK],
                                               with_vectors=False):
                holder = (record.payload or {}).get(self._key_field)
                if not isinstance(holder, str):
                    continue
                holder = holder.rstrip(" ") if self._padded else holder
                pid = normalize_point_id(record.id)
                state = states[pid]
                if holder == state.key[0]:
                    continue
                if state.kind is Kind.DELETE:
                    states[pid] = PointState(Kind.REREAD, (holder,))
                elif self.lookup.fetch_rows([(holder,)]):
                    if self.lookup.fetch_rows([state.key]):  # both rows are in the table now
                        raise shared_id_error(self.plan, [(pid, [holder, state.key[0]])])
                    # The row written here is gone again (its delete comes later in the stream, maybe
                    # in another batch): the point stays the holder's.
                    states[pid] = PointState(Kind.REREAD, (holder,))

    def _write(self, states: dict[PointId, PointState], cleared: bool) -> None:
        """Apply the batch's net effect: clear, deletes, full upserts, then partial updates."""
        if self.shared_ids and not cleared:
            self._guard_shared_ids(states)
        full_rows, partial, deletes, rereads = _by_kind(states)
        partial = self._in_place(partial, rereads)
        if rereads:
            self._read_again(rereads, full_rows, deletes)
        operations: list[ops.Operation] = []
        if cleared:
            operations.append(ops.ClearCollection())
        if deletes:
            operations.append(ops.DeletePoints(tuple(deletes)))
        for start in range(0, len(full_rows), self.batch_size):
            operations.append(ops.Upsert(self.mapper.map_rows(full_rows[start:start + self.batch_size])))
        operations.extend(self._partial_operations(partial))
        self._send(operations)

    def _in_place(self, partial: list, rereads: list) -> list:
        """The partial updates that can be applied in place; the others join ``rereads``.

        Setting a payload field to null is not possible in place (Qdrant's set_payload drops keys
        given as null, while the copy keeps NULL as null), and a missing point has nothing to
        update: such rows are read again."""
        if not partial:
            return partial
        with_null = [any(row[s.read_index] is None for s in self.plan.payload) for _, row, _ in partial]
        rereads.extend((pid, key) for (pid, _, key), null in zip(partial, with_null) if null)
        partial = [p for p, null in zip(partial, with_null) if not null]
        present = self._existing([p for p, _, _ in partial])
        rereads.extend((pid, key) for pid, _, key in partial if pid not in present)
        partial = [p for p in partial if p[0] in present]
        self.stats.partial_updates += len(partial)  # updated in place, unchanged TOAST left alone
        return partial

    def _read_again(self, rereads: list, full_rows: list, deletes: list) -> None:
        """Rows read again by key join ``full_rows``; the keys no row has any more join ``deletes``."""
        self.stats.rereads += len(rereads)
        found_ids = set()
        for row in self.lookup.fetch_rows([key for _, key in rereads]):
            full_rows.append(row)
            found_ids.add(self._id(self._key(list(row))))
        deletes.extend(pid for pid, _ in rereads if pid not in found_ids)

    # complexity: one SetPayload, UpdateVectors and DeleteVectors per partly sent row, each only for the fields that
    # were sent.
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
            # BM25 vectors follow their text: sent, it is embedded again (no token: no vector);
            # an unchanged TOASTed text leaves the vector as it is
            texts = [b.name for b in self.plan.bm25 if row[b.read_index] is not UNCHANGED]
            sent.update((name, vectors[name]) for name in texts if name in vectors)
            if sent:
                out.append(ops.UpdateVectors(pid, sent))
            nulls = tuple(v.name for v in self.plan.vectors if row[v.read_index] is None)
            nulls += tuple(name for name in texts if name not in vectors)
            if nulls:
                out.append(ops.DeleteVectors(pid, nulls))
        return out

    def _existing(self, ids: list[PointId]) -> set[PointId]:
        present: set[PointId] = set()
        for start in range(0, len(ids), EXISTENCE_CHUNK):
            records = self.target.retrieve(self.plan.collection, ids[start:start + EXISTENCE_CHUNK],
                                           with_vectors=False)
            present.update(normalize_point_id(r.id) for r in records)
        return present

    def _send(self, operations: list[ops.Operation]) -> None:
        """Apply in order, a request at a time, bounded by points and bytes (too large: split)."""
        self.writer.apply(operations)


def _merge(base: list, change: list) -> list:
    return [b if c is UNCHANGED else c for b, c in zip(base, change)]


def _by_kind(states: dict[PointId, PointState]) -> tuple[list, list, list, list]:
    """(full rows, partial (id, row, key), deleted ids, (id, key) to read again) of a batch's net effect."""
    full_rows, partial, deletes, rereads = [], [], [], []
    for pid, state in states.items():
        if state.kind is Kind.FULL:
            full_rows.append(state.row)
        elif state.kind is Kind.PARTIAL:
            partial.append((pid, state.row, state.key))
        elif state.kind is Kind.DELETE:
            deletes.append(pid)
        else:
            rereads.append((pid, state.key))
    return full_rows, partial, deletes, rereads
