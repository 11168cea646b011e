"""CDC's parts alone: pgoutput decoding, receive -> fold -> apply -> acknowledge, the backoff.

No replication connection here: pgoutput messages are written byte by byte following the
layout documented in source/pgoutput.py and handed to the stream's steps as frames. The
row decoder and the rereads use an ordinary connection to the test database, the writes
an in-memory Qdrant collection filled by a real copy.
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import pytest

from pg2qdrant.core.mapping.ids import make_point_id, normalize_point_id
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.core.retry import Backoff, pause
from pg2qdrant.destination import open_target
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.migrate.copy import migrate
from pg2qdrant.runtime.observability import NullObserver
from pg2qdrant.source.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Other,
    Relation,
    RelColumn,
    Truncate,
    TypeInfo,
    Update,
    decode_message,
)
from pg2qdrant.source.pgoutput_rows import UNCHANGED
from pg2qdrant.source.replication import Keepalive, XLogData
from pg2qdrant.sync.apply import Applier, Kind, PointState, SourceLookup
from pg2qdrant.sync.options import SyncStats
from pg2qdrant.sync.stream import Acknowledger, Receiver, Stream
from pg2qdrant.ui import UI

# -- pgoutput messages, written as the layout at the top of source/pgoutput.py says ---------------

U = object()  # a column sent as 'u' (unchanged TOAST)


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def _tuple(values) -> bytes:
    out = struct.pack(">H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is U:
            out += b"u"
        else:
            out += b"b" + struct.pack(">i", len(v)) + v
    return out


def begin(final_lsn: int, commit_time: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, commit_time, xid)


def commit(commit_lsn: int, end_lsn: int, commit_time: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, commit_lsn, end_lsn, commit_time)


def relation(oid: int, namespace: str, name: str, identity: str, columns) -> bytes:
    out = b"R" + struct.pack(">I", oid) + _cstr(namespace) + _cstr(name) + identity.encode()
    out += struct.pack(">H", len(columns))
    for is_key, colname, type_oid, typmod in columns:
        out += struct.pack(">B", 1 if is_key else 0) + _cstr(colname) + struct.pack(">Ii", type_oid, typmod)
    return out


def insert(rel: int, new) -> bytes:
    return b"I" + struct.pack(">I", rel) + b"N" + _tuple(new)


def update(rel: int, new, old=None, old_kind: str = "K") -> bytes:
    head = b"U" + struct.pack(">I", rel)
    if old is not None:
        head += old_kind.encode() + _tuple(old)
    return head + b"N" + _tuple(new)


def delete(rel: int, old, old_kind: str = "K") -> bytes:
    return b"D" + struct.pack(">I", rel) + old_kind.encode() + _tuple(old)


def truncate(rels, options: int) -> bytes:
    return b"T" + struct.pack(">IB", len(rels), options) + struct.pack(f">{len(rels)}I", *rels)


def test_pgoutput_decodes_the_documented_layout():
    assert decode_message(begin(0x1_0000_0010, 123_456, 77)) == Begin(0x1_0000_0010, 123_456, 77)
    assert decode_message(commit(0x10, 0x18, -5)) == Commit(0x10, 0x18, -5)
    assert decode_message(relation(16400, "public", "items", "d", [(True, "id", 20, -1), (False, "tïtle", 25, -1)])) \
        == Relation(16400, "public", "items", "d", (RelColumn("id", 20, -1, True), RelColumn("tïtle", 25, -1, False)))
    assert decode_message(b"Y" + struct.pack(">I", 90001) + _cstr("public") + _cstr("vector")) \
        == TypeInfo(90001, "public", "vector")
    assert decode_message(insert(7, [b"\x01", None, U])) == Insert(7, [("b", b"\x01"), ("n", None), ("u", None)])
    assert decode_message(update(7, [b"\x02"])) == Update(7, None, None, [("b", b"\x02")])
    assert decode_message(update(7, [b"\x02"], [b"\x01"], "O")) == Update(7, "O", [("b", b"\x01")], [("b", b"\x02")])
    assert decode_message(delete(7, [b"\x01", None])) == Delete(7, "K", [("b", b"\x01"), ("n", None)])
    assert decode_message(truncate([7, 8], 3)) == Truncate((7, 8), True, True)
    assert decode_message(b"O" + struct.pack(">Q", 1) + _cstr("origin")) == Other("O")
    text = b"t" + struct.pack(">i", 3) + b"abc"  # a column in text form (types without binary output)
    assert decode_message(b"I" + struct.pack(">I", 7) + b"N" + struct.pack(">H", 1) + text) == \
        Insert(7, [("t", b"abc")])


# -- acknowledge and backoff (no server) ---------------------------------------------------------

class FeedbackLog:
    """Records the standby feedback (written, flushed, reply) sent to PostgreSQL."""

    def __init__(self):
        self.sent: list[tuple[int, int, bool]] = []

    def __call__(self, written: int, flushed: int, *, reply: bool = False) -> None:
        self.sent.append((written, flushed, reply))

    @property
    def flushed(self) -> int:
        return self.sent[-1][1]


def test_acknowledge_moves_only_to_applied_commits_or_idle_keepalives():
    stats = SyncStats(acked_lsn=0x100)
    log = FeedbackLog()
    ack = Acknowledger(log, stats)
    ack.saw(0x400)  # received (not applied) up to 0x400
    ack.keepalive(Keepalive(0x500, 0, True), idle=False)  # changes wait to be applied
    assert log.sent == [(0x400, 0x100, False)]
    ack.applied(0x300)
    ack.applied(0x200)  # an older commit never moves it back
    ack.applied(None)  # a batch that closed no commit
    ack.send(reply=True)
    assert log.sent[-1] == (0x400, 0x300, True) and stats.acked_lsn == 0x300
    ack.keepalive(Keepalive(0x500, 0, False), idle=True)  # nothing pending: the slot may move on
    assert log.sent[-1] == (0x500, 0x500, False) and stats.acked_lsn == 0x500
    sent = len(log.sent)
    ack.keepalive(Keepalive(0x500, 0, False), idle=True)  # no news, no reply requested: nothing sent
    assert len(log.sent) == sent


def test_backoff_doubles_to_its_cap_and_starts_over_after_progress():
    backoff = Backoff(0.5, 30.0)
    assert [backoff.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    backoff.reset()
    assert backoff.next() == 0.5
    assert pause(5000, 0.5, 30.0) == 30.0  # a day of reconnects: still a number, not an OverflowError


# -- receive -> fold -> apply -> acknowledge on a real table and collection ----------------------

TABLE = "CREATE TABLE items (id bigint PRIMARY KEY, title text, n int, v vector(3))"


def _vec(values) -> bytes:
    """pgvector's binary form: dimensions, unused, float4s."""
    return struct.pack(">HH", len(values), 0) + np.asarray(values, ">f4").tobytes()


class Parts:
    """The table's plan, a copy of it in an in-memory collection, and CDC's parts on them."""

    def __init__(self, db):
        with db.connect() as conn:
            conn.execute(TABLE)
            for k in (1, 2, 3):
                conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s)", (k, f"title {k}", k * 10, f"[{k},0,0]"))
        self.options = MigrationOptions(pg_url=db.url, table="items", collection="c", qdrant_url=":memory:",
                                        num_workers=1, batch_size=64, distance_overrides={"v": "Cosine"})
        self.target = open_target(parse_target_url(":memory:"))
        self.plan = migrate(self.options, UI(quiet=True), target=self.target).plan
        self.lookup = SourceLookup(db.url, self.plan)
        self.stats = SyncStats()
        self.warnings: list[str] = []
        self.applier = Applier(self.plan, self.target, self.lookup, batch_size=64, stats=self.stats,
                               on_partial_truncate=self._unexpected)
        self.receiver = Receiver(self.plan, self.lookup, self.stats, self.warnings.append)
        self.oid = self.plan.table.oid
        self.at = {r.column: i for i, r in enumerate(self.plan.reads)}

    @staticmethod
    def _unexpected(truncated, remaining):
        raise AssertionError("no partial TRUNCATE here")

    def relation(self) -> bytes:
        columns = [(c.name == "id", c.name, c.declared_oid, c.typmod) for c in self.plan.table.columns]
        return relation(self.oid, self.plan.table.schema, self.plan.table.name, "d", columns)

    def row(self, k: int, title, n, v) -> list:
        return [struct.pack(">q", k), None if title is None else title.encode(),
                U if n is U else struct.pack(">i", n), U if v is U else _vec(v)]

    def pid(self, k: int):
        return normalize_point_id(make_point_id(self.plan.key, (k,)))

    def close(self):
        self.lookup.close()
        self.target.close()


@pytest.fixture
def parts(db):
    p = Parts(db)
    yield p
    p.close()


def test_fold_of_a_transaction_received_as_pgoutput_messages(parts):
    """Insert, an update with its vector unchanged (TOAST), a key change and a delete, folded per point."""
    p = parts
    for message in (p.relation(), begin(0x200, 0, 1),
                    insert(p.oid, p.row(4, "four", 40, [4, 0, 0])),
                    update(p.oid, p.row(1, "one", 11, U)),
                    update(p.oid, p.row(5, "five", 50, [5, 0, 0]), old=[struct.pack(">q", 2), None, None, None]),
                    delete(p.oid, [struct.pack(">q", 3), None, None, None]),
                    commit(0x200, 0x210, 0)):
        p.receiver.take(decode_message(message))
    batch = p.receiver.take_batch()
    assert (batch.rows, batch.commit_end, len(batch.commit_times)) == (4, 0x210, 1)
    assert [c.op for c in batch.items] == ["I", "U", "U", "D"]
    p.lookup.decoder.resolve()
    states: dict = {}
    for change in batch.items:
        p.applier.fold(states, change, False)
    assert {k: states[p.pid(k)].kind for k in (1, 2, 3, 4, 5)} == {
        1: Kind.PARTIAL, 2: Kind.DELETE, 3: Kind.DELETE, 4: Kind.FULL, 5: Kind.FULL}
    one = states[p.pid(1)]
    assert one.key == (1,) and one.row[p.at["title"]] == "one" and one.row[p.at["v"]] is UNCHANGED
    assert states[p.pid(5)].row[p.at["title"]] == "five" and states[p.pid(2)] == PointState(Kind.DELETE, (2,))


def test_fold_merges_changes_of_one_key_and_rereads_what_it_cannot_know(parts):
    p = parts
    p.receiver.take(decode_message(p.relation()))
    for message in (insert(p.oid, p.row(4, "four", 40, [4, 0, 0])),
                    update(p.oid, p.row(4, "FOUR", U, U)),  # merged into the full row before it
                    insert(p.oid, p.row(6, "six", 60, U)),  # an insert missing a value: read again
                    update(p.oid, p.row(1, "one", 11, U))):
        p.receiver.take(decode_message(message))
    p.lookup.decoder.resolve()
    changes = p.receiver.take_batch().items
    states: dict = {}
    for change in changes:
        p.applier.fold(states, change, False)
    four = states[p.pid(4)]
    assert four.kind is Kind.FULL and four.row[p.at["title"]] == "FOUR" and four.row[p.at["n"]] == 40
    assert states[p.pid(6)] == PointState(Kind.REREAD, (6,))
    assert states[p.pid(1)].kind is Kind.PARTIAL
    cleared: dict = {}
    p.applier.fold(cleared, changes[3], True)  # after a TRUNCATE in the batch the point is gone: read again
    assert cleared[p.pid(1)] == PointState(Kind.REREAD, (1,))


def test_stream_applies_then_acknowledges_and_never_passes_an_unapplied_commit(parts):
    p = parts
    p.stats.acked_lsn = 0x100  # resumed from a slot confirmed at 0x100
    log = FeedbackLog()
    stream = Stream(p.receiver, p.applier, Acknowledger(log, p.stats), p.stats, observer=NullObserver(),
                    stop=threading.Event(), until_lsn=None)

    def data(lsn: int, message: bytes) -> None:
        stream.receive(XLogData(lsn, 0x900, 0, message))

    data(0x180, p.relation())
    data(0x200, begin(0x280, 0, 1))
    data(0x200, update(p.oid, p.row(1, "one", 11, U)))
    data(0x280, commit(0x280, 0x290, 0))
    stream.receive(Keepalive(0x900, 0, True))  # received but not applied: the slot keeps it
    assert log.flushed == 0x100 and p.stats.server_lsn == 0x900
    data(0x300, begin(0x380, 0, 2))
    data(0x300, insert(p.oid, p.row(7, "seven", 70, [7, 0, 0])))  # its commit has not arrived
    stream.flush()
    assert log.flushed == 0x290  # the first transaction, applied; not the open one
    assert p.stats.pending_since is not None  # the open transaction's changes are applied, not committed
    records = {normalize_point_id(r.id): r for r in p.target.retrieve("c", [p.pid(1), p.pid(7)], with_vectors=True)}
    assert records[p.pid(1)].payload["title"] == "one" and records[p.pid(1)].payload["n"] == 11
    assert records[p.pid(1)].vector  # unchanged TOAST: the payload updated in place, the vector kept
    assert p.pid(7) in records
    stream.receive(Keepalive(0x900, 0, True))  # a transaction is open: still not past it
    assert log.flushed == 0x290
    data(0x380, commit(0x380, 0x390, 0))
    stream.flush()
    assert log.flushed == 0x390 and p.stats.pending_since is None
    stream.receive(Keepalive(0x900, 0, False))  # everything applied: the slot moves on
    assert log.flushed == 0x900
    assert (p.stats.changes, p.stats.transactions) == (2, 2)
