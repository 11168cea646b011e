"""DDL and partition changes while CDC streams: :class:`SchemaWatch` keeps one table's sync exact.

pgoutput carries no DDL: a column added, dropped, renamed or retyped shows in the stream only
as a new relation descriptor before the next change of the table (none while no row changes),
and a partition attached, detached or dropped not at all. So each table's watch compares the
catalog (:func:`~pg2qdrant.source.catalog.shape_fingerprint`: its columns and its leaves) with
its plan every :data:`POLL_EVERY_S` on the lookup connection, and at once when the stream sends
a descriptor the plan cannot decode. When they differ the plan is made again with the same
options (``Runner._plan``: the copy's own planning), and:

- a change sync cannot follow (the key's columns, a vector column, a column named in
  ``--pg.columns`` dropped, renamed or retyped; a vector column added: a fresh migrate would make
  another collection) stops sync with an :class:`~pg2qdrant.core.errors.InputError` naming it, once
  everything committed before it is applied and acknowledged: the stream goes on until the slot
  has acknowledged the WAL position at which the change was seen, or until the change's own
  descriptor arrives (what came before it is then the open batch: applied, acknowledged);
- anything else is followed: the open batch becomes re-reads by key (its rows were decoded for
  the old plan), the decoder, receiver and applier take the new plan, the batch is applied and
  acknowledged; then, when the mapping changed (an all-columns plan after a payload column was
  added, dropped, renamed or retyped), every row is read with the new plan and upserted (one
  pass, :data:`~.options.REREAD_CHUNK` rows at a time; standby feedback keeps the connection
  alive meanwhile), else the rows of attached partitions are copied; the points of detached or
  dropped partitions are deleted (those no row of the current leaves has:
  :func:`~.reconcile.delete_truncated`'s complement scan).

Why it converges: every row written here is the row as read at some time T after the change;
each later change of its key is later in the stream and applied after it, and a change committed
before T but applied after it is followed by those later ones too (or, when it is the last one,
writes the state it read anyway). Changes decoded with a descriptor that is not the plan's
(``RowDecoder.mismatched`` / ``missing_columns``) are applied as re-reads by key, safe mid-stream
by the same argument; a re-read that finds the plan's columns gone (the change not yet noticed)
makes the watch check at once and apply that batch again with the new plan. Changes of a partition
that is no longer the table's are skipped (its rows are not the table's any more).

The stream waits while the table is read again (the slot keeps the WAL meanwhile). What the
points were last written with (:func:`descriptor`) is kept with sync's records (sync/state.py), so a
change made while sync is not running is found at the next start and followed, or refused, the
same way before the stream resumes (:meth:`~.cdc.CdcSync.catch_up_with_the_table`).
"""

from __future__ import annotations

import time

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.mapping.batch import RowMapper
from pg2qdrant.core.plan import Plan
from pg2qdrant.core.table import Leaf
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination.writer import Writer
from pg2qdrant.source import catalog, connect, slots
from pg2qdrant.source import row_reads as source_rows
from pg2qdrant.sync.apply import Applier, ChangeBatch, RowChange, SourceLookup
from pg2qdrant.sync.options import REREAD_CHUNK
from pg2qdrant.sync.reconcile import delete_truncated
from pg2qdrant.sync.runner import Runner
from pg2qdrant.sync.stream import Receiver

RECOPY_FIX = ("copy the table again into a new collection, e.g. `pg2qdrant sync --sync.initial-copy --qdrant.collection "
              "NEW ...` (or `pg2qdrant migrate --then-sync`), with --pg.columns naming the current columns if you "
              "name them; then remove this sync's slot with `pg2qdrant sync drop`.")
POLL_EVERY_S = 2.0  # how often the catalog is compared with the plan (two catalog reads)
STOP_WAIT_S = 60.0  # at most this long streaming on to apply what came before a change that stops sync

Shape = tuple[tuple, tuple[int, ...]]


def plan_shape(plan: Plan) -> Shape:
    """The plan's table as :func:`catalog.shape_fingerprint` reads it."""
    return (tuple((c.name, c.declared_oid, c.declared) for c in plan.table.columns),
            tuple(sorted(leaf.oid for leaf in plan.table.leaves)))


class SchemaWatch:
    """One table's DDL and partition changes while streaming (see the module docstring)."""

    def __init__(self, table: Runner, lookup: SourceLookup, receiver: Receiver, applier: Applier):
        self.table = table  # the table's runner: options, ui, target; its .plan follows the table
        self.lookup = lookup
        self.receiver = receiver
        self.applier = applier
        self.shape = plan_shape(table.plan)
        self.polled = 0.0  # checked at the first step: a change between planning and this session
        self.stream = None
        self.stopping: InputError | None = None
        self.stop_at = 0  # WAL position to acknowledge before stopping
        self.stop_by = 0.0
        applier.on_schema_changed = self._apply_again

    @staticmethod
    def applies(plan: Plan) -> bool:
        """Tables and partitioned tables (a view's plan follows its base tables: see layouts)."""
        return plan.table.relkind in ("r", "p") and not plan.table.change_tables

    # -- the stream's hook ---------------------------------------------------------------
    def step(self, stream, now: float, *, force: bool = False) -> None:
        """Called by the Stream after each message: check the catalog when due (``force``: now)."""
        self.stream = stream
        if self.stopping is not None:
            self._stop_when_applied(stream, now)
            return
        by_relation = self.receiver.shape_changed
        if not by_relation and not force and now - self.polled < POLL_EVERY_S:
            return
        self.receiver.shape_changed = False
        self.polled = now
        shape = catalog.shape_fingerprint(self.lookup.conn, self.table.plan.table.oid)
        if shape == self.shape:
            return
        plan, error = self._replan(shape)
        if error is not None:
            self._stop(stream, error, at_change=by_relation)
            return
        self._follow(plan, stream.flush)

    def _apply_again(self, batch: ChangeBatch) -> bool:
        """The applier's re-reads found the plan's columns gone: follow the change and apply ``batch``
        again as re-reads (True), or stop; False when the catalog shows no change."""
        if self.stopping is not None:
            raise self.stopping
        shape = catalog.shape_fingerprint(self.lookup.conn, self.table.plan.table.oid)
        if shape == self.shape:
            return False
        plan, error = self._replan(shape)
        if error is not None:
            raise error
        self._follow(plan, lambda: self.applier.apply(batch), batch)
        return True

    # -- deciding ------------------------------------------------------------------------
    def _replan(self, shape: Shape) -> tuple[Plan | None, InputError | None]:
        """(the plan made again, None), or (None, the error that stops sync)."""
        old = self.table.plan
        try:
            _, plan = self.table._plan()
        except InputError as exc:
            return None, self._cannot_follow(old, shape, None, exc.message)
        problem = unfollowable(descriptor(old), descriptor(plan), self.table.options.columns)
        if problem is not None:
            return None, self._cannot_follow(old, shape, plan, problem)
        return plan, None

    def _cannot_follow(self, old: Plan, shape: Shape, new: Plan | None, problem: str) -> InputError:
        return InputError(
            f"{old.table.display} changed while syncing ({describe(self.shape, shape, old, new)}) in a way sync "
            f"cannot follow: {problem}. Every change committed before it is applied and acknowledged.",
            fix=RECOPY_FIX)

    # -- stopping ------------------------------------------------------------------------
    def _stop(self, stream, error: InputError, *, at_change: bool) -> None:
        self.stopping = error
        if at_change:  # the stream reached the change's descriptor: what came before is the open batch
            stream.flush()
            raise error
        self.stop_at = slots.current_wal_lsn(self.lookup.conn)  # past the change's commit
        self.stop_by = time.monotonic() + STOP_WAIT_S

    def _stop_when_applied(self, stream, now: float) -> None:
        if self.receiver.shape_changed:  # the change's own descriptor: what came before is applied next
            stream.flush()
            raise self.stopping
        if (stream.receiver.idle and stream.stats.acked_lsn >= self.stop_at) or now > self.stop_by:
            raise self.stopping

    # -- following -----------------------------------------------------------------------
    def _follow(self, plan: Plan, apply, *batches: ChangeBatch) -> None:
        """Take ``plan``, ``apply`` what was received (as re-reads where the rows changed shape),
        then bring the points up to date with the table."""
        old, table = self.table.plan, self.table
        changes = describe(self.shape, plan_shape(plan), old, plan)
        mapping_changed = (old.reads, old.payload) != (plan.reads, plan.payload)
        if old.reads != plan.reads:  # rows decoded for the old plan: only their keys still fit
            for batch in (self.receiver.batch, *batches):
                _as_rereads(batch)
        self.lookup.replan(plan)
        self.receiver.replan(plan)
        self.applier.replan(plan)
        table.plan, self.shape = plan, plan_shape(plan)
        apply()
        before = {leaf.oid for leaf in old.table.leaves}
        after = {leaf.oid for leaf in plan.table.leaves}
        if mapping_changed:
            table.ui.info(f"{plan.table.display} changed while syncing ({changes}): rewriting every point "
                          "with the new columns.")
            written = self._copy(plan, None)
            table.ui.info(f"Rewrote {written:,} point(s) of {plan.collection!r} with the current columns.")
        else:
            for leaf in plan.table.leaves:
                if leaf.oid not in before:
                    written = self._copy(plan, leaf)
                    table.ui.info(f"Partition {leaf.display} attached: copied {written:,} row(s).")
        gone = tuple(leaf for leaf in old.table.leaves if leaf.oid not in after)
        if gone:
            self._delete(plan, gone)
        table.stats.schema_changes += 1
        table.remember_written_with(plan)

    def _copy(self, plan: Plan, leaf: Leaf | None) -> int:
        """Upsert every row (of ``leaf`` only, when given) as read now with ``plan``."""
        return rewrite_points(self.table.options.pg_url, plan, self.applier.writer, self.applier.mapper, leaf,
                              self._keep_alive)

    def _delete(self, plan: Plan, gone: tuple[Leaf, ...]) -> None:
        """The points of partitions detached or dropped: those no row of the current leaves has."""
        table = self.table
        if plan.table.leaves:
            delete_truncated(table.options, plan, table.target, gone, plan.table.leaves, table.ui,
                             change="DETACH or DROP")
        else:
            self.applier.writer.apply([ops.ClearCollection()])
            table.ui.info(f"Every partition of {plan.table.display} is gone: cleared {plan.collection!r}.")

    def _keep_alive(self) -> None:
        """Standby feedback while the stream waits (the server drops clients silent for wal_sender_timeout)."""
        stream = self.stream
        if stream is not None and stream.ack.due(time.monotonic()):
            stream.ack.send()


def rewrite_points(pg_url: str, plan: Plan, writer: Writer, mapper: RowMapper, leaf: Leaf | None = None,
                   each_batch=lambda: None) -> int:
    """Upsert every row of the table (of ``leaf`` only) as read now with ``plan``, through ``writer``,
    :data:`~.options.REREAD_CHUNK` rows at a time; returns the rows written."""
    conn = connect.connect(pg_url, autocommit=True)
    written = 0
    try:
        for rows in source_rows.row_batches(conn, plan, REREAD_CHUNK, leaf=leaf):
            writer.apply([ops.Upsert(mapper.map_rows(rows))])
            written += len(rows)
            each_batch()
    finally:
        conn.close()
    return written


def watches(tables: list[Runner], lookups: list[SourceLookup], receivers: list[Receiver],
            appliers: list[Applier]) -> list[SchemaWatch]:
    """A watch per table that has one (for ``Stream(watches=...)``)."""
    return [SchemaWatch(t, lookup, receiver, applier)
            for t, lookup, receiver, applier in zip(tables, lookups, receivers, appliers)
            if SchemaWatch.applies(t.plan)]


def _as_rereads(batch: ChangeBatch) -> None:
    for item in batch.items:
        if isinstance(item, RowChange) and item.op != "D":
            item.reread_only = True


def descriptor(plan: Plan) -> dict:
    """What a collection's points are written with, as plain values (kept with sync's records, so that
    a change made while sync was stopped is found at the next start): the key, vectors and payload
    mappings, the table's shape, and the BM25 settings (a record from before them had none: "bm25" {})."""
    return {
        "key_columns": list(plan.key.columns),
        "key": repr((plan.key.kinds, tuple(plan.reads[i] for i in plan.key.read_indexes))),
        "vectors": {v.name: repr((v.column, v.kind, v.size, v.distance, v.datatype, v.declared)) for v in plan.vectors},
        "payload": {s.name: repr((s.column, s.declared, s.kind, s.array, plan.reads[s.read_index]))
                    for s in plan.payload},
        "shape": repr(plan_shape(plan)),
        # --qdrant.bm25: other settings encode other vectors (a fresh migrate writes none of a mixture)
        "bm25": {b.name: repr((b.column, b.options)) for b in plan.bm25},
    }


def unfollowable(old: dict, new: dict, named: list[str] | None) -> str | None:
    """Why a collection synced with ``old`` (a :func:`descriptor`) cannot become one a fresh migrate
    with ``new`` makes (None: it can, by rewriting points)."""
    if (old["key_columns"], old["key"]) != (new["key_columns"], new["key"]):
        return f"the key ({', '.join(old['key_columns'])}) is now ({', '.join(new['key_columns'])})"
    if old["vectors"] != new["vectors"]:
        return (f"the vector columns were ({', '.join(old['vectors'])}) and are now ({', '.join(new['vectors'])}) "
                "with their types: the collection would have another shape")
    if named and old["payload"] != new["payload"]:
        return "a column named in --pg.columns changed"
    return None


# complexity: names each kind of change (added, dropped, renamed, retyped, partitions) in words for the message.
def describe(before: Shape, after: Shape, old: Plan, new: Plan | None) -> str:
    """What changed between two shapes, in words: columns added, dropped, renamed, retyped; partitions."""
    was = {name: (oid, declared) for name, oid, declared in before[0]}
    now = {name: (oid, declared) for name, oid, declared in after[0]}
    dropped = [n for n in was if n not in now]
    added = [n for n in now if n not in was]
    parts = []
    if len(dropped) == 1 and len(added) == 1 and was[dropped[0]] == now[added[0]]:
        parts.append(f"column {dropped[0]} renamed to {added[0]}")
    else:
        parts += [f"column {n} dropped" for n in dropped] + [f"column {n} added" for n in added]
    parts += [f"column {n} changed type from {was[n][1]} to {now[n][1]}" for n in was if n in now and was[n] != now[n]]
    names = {leaf.oid: leaf.display for leaf in old.table.leaves + (new.table.leaves if new else ())}
    parts += [f"partition {names.get(o, o)} attached" for o in after[1] if o not in before[1]]
    parts += [f"partition {names.get(o, o)} detached or dropped" for o in before[1] if o not in after[1]]
    return ", ".join(parts) or "its catalog entry changed"
