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

from pg2qdrant import layouts
from pg2qdrant.errors import DataError
from pg2qdrant.mapping import (PointId, RowMapper, keys_can_share_ids, make_point_id, normalize_point_id,
                               shared_id_error, uuid_of_key)
from pg2qdrant.plan import Plan
from pg2qdrant.source import catalog, connect, lookups
from pg2qdrant.source.catalog import Leaf
from pg2qdrant.source.rows import UNCHANGED, RowDecoder
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
        if table.relkind == "p" and table.oid in truncated:
            return current, ()
        return (tuple(leaf for leaf in current if leaf.oid in truncated),
                tuple(leaf for leaf in current if leaf.oid not in truncated))

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
                 on_partial_truncate: Callable[[tuple[Leaf, ...], tuple[Leaf, ...]], None], stats: SyncStats | None = None):
        self.plan = plan
        self.target = target
        self.lookup = lookup
        self.mapper = RowMapper(plan)
        self.batch_size = batch_size
        self.writer = Writer(target, plan.collection, batch_size=batch_size)  # requests bounded like the copy's
        self.key_indexes = plan.key.read_indexes
        self.on_partial_truncate = on_partial_truncate
        self.stats = stats or SyncStats()  # rereads, partial_updates counted here
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
        self.lookup.decoder.resolve()
        states: dict[PointId, tuple[str, list | None, tuple]] = {}
        cleared = False
        for item in batch.items:
            if isinstance(item, _TruncateChange):
                truncated, remaining = self.lookup.split_leaves(item.relations)
                if not remaining:
                    states.clear()
                    cleared = True
                else:  # only some relations: apply what we have, then delete exactly their points
                    self._write(states, cleared)
                    states.clear()
                    cleared = False
                    self.on_partial_truncate(truncated, remaining)
                continue
            self._fold(states, item, cleared)
        self._write(states, cleared)
        return batch.rows

    def _fold(self, states: dict, change: _RowChange, cleared: bool) -> None:
        """Fold one change into the per-point net effect (changes of one key arrive in commit order)."""
        if change.op == "D":
            key = self._key(change.old)
            self._delete(states, self._id(key), key)
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
        if self.shared_ids and self._same_point_in_batch(states, pid, key):
            if change.op == "U" and change.old is not None and self._id(self._key(change.old)) != pid:
                self._delete(states, self._id(self._key(change.old)), self._key(change.old))
            return
        partial = any(v is UNCHANGED for v in new)
        if change.op == "U" and change.old is not None:
            old_key = self._key(change.old)
            old_pid = self._id(old_key)
            if old_pid != pid:  # key change: the old point goes, the new one gets the whole row
                previous = states.get(old_pid)
                self._delete(states, old_pid, old_key)
                if self.reread_all:
                    states[pid] = (REREAD, None, key)
                elif not partial:
                    states[pid] = (FULL, new, key)
                elif previous is not None and previous[0] == FULL:
                    states[pid] = (FULL, _merge(previous[1], new), key)
                else:
                    states[pid] = (REREAD, None, key)
                return
        if change.reread_only or (partial and change.op == "I") or self.reread_all:
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

    def _delete(self, states: dict, pid: PointId, key: tuple) -> None:
        previous = states.get(pid)
        if previous is not None and previous[0] != DELETE and previous[2] != key:
            return  # the point now holds another row whose key is read as the same UUID
        states[pid] = (DELETE, None, key)

    def _same_point_in_batch(self, states: dict, pid: PointId, key: tuple) -> bool:
        """A second key of this batch on one point (see _guard_shared_ids): both rows still in the
        table stop sync; else the point is read again from the one left (True: handled)."""
        previous = states.get(pid)
        if previous is None or previous[0] == DELETE or previous[2] == key:
            return False
        found = {self._key(list(r)) for r in self.lookup.fetch_rows([previous[2], key])}
        if len(found) > 1:
            raise shared_id_error(self.plan, [(pid, [previous[2][0], key[0]])])
        states[pid] = (REREAD, None, found.pop() if found else key)
        return True

    def _guard_shared_ids(self, states: dict) -> None:
        """Distinct text keys read as the same UUID share a point (migrate and reconcile refuse them).

        A row written here onto a point that holds another row still in the table stops sync
        (both named); a delete of a key whose point holds another row rewrites that row's point
        instead (or deletes it when that row is gone too). Costs one read of the points whose
        key looks like a UUID.
        """
        pids = [pid for pid, (kind, _, key) in states.items()
                if kind != PARTIAL and uuid_of_key(key[0]) is not None]
        for start in range(0, len(pids), EXISTENCE_CHUNK):
            for record in self.target.retrieve(self.plan.collection, pids[start:start + EXISTENCE_CHUNK],
                                               with_vectors=False):
                holder = (record.payload or {}).get(self._key_field)
                if not isinstance(holder, str):
                    continue
                holder = holder.rstrip(" ") if self._padded else holder
                pid = normalize_point_id(record.id)
                kind, _, key = states[pid]
                if holder == key[0]:
                    continue
                if kind == DELETE:
                    states[pid] = (REREAD, None, (holder,))
                elif self.lookup.fetch_rows([(holder,)]):
                    raise shared_id_error(self.plan, [(pid, [holder, key[0]])])

    def _write(self, states: dict, cleared: bool) -> None:
        if self.shared_ids and not cleared:
            self._guard_shared_ids(states)
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
