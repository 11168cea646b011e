"""The net effect of a batch of row changes -> target operations.

:class:`ChangeBatch` holds decoded changes (:class:`_RowChange`, :class:`_TruncateChange`);
:class:`Applier` folds them per point (commit order per key), turns them into
target operations (full upserts, partial SetPayload / UpdateVectors /
DeleteVectors, deletes, clears) and applies them with wait=true, reading rows
again by key through :class:`SourceLookup` when a partial change cannot be applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from pg2qdrant.errors import DataError
from pg2qdrant.mapping import normalize_point_id, PointId, RowMapper, make_point_id
from pg2qdrant.plan import Plan
from pg2qdrant.source import changes, connect
from pg2qdrant.source.changes import UNCHANGED, RowDecoder
from pg2qdrant.sync.options import EXISTENCE_CHUNK, REREAD_CHUNK, SyncStats
from pg2qdrant.destination import operations as ops
from pg2qdrant.writer import Writer

FULL, PARTIAL, DELETE, REREAD = "full", "partial", "delete", "reread"


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
        self.writer = Writer(target, plan.collection, batch_size=batch_size)  # requests bounded like the copy's
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
        return normalize_point_id(make_point_id(self.plan.key, key))

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
            present.update(normalize_point_id(r.id) for r in records)
        return present

    def _send(self, operations: list[ops.Operation]) -> None:
        """Apply in order, a request at a time, bounded by points and bytes (too large: split)."""
        self.writer.apply(operations)


def _merge(base: list, change: list) -> list:
    return [b if c is UNCHANGED else c for b, c in zip(base, change)]
