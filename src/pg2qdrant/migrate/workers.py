"""Reader workers: each imports the coordinator's snapshot, takes ranges, reads, maps and writes them.

With one worker the reader is a thread of the main process; with more, each
worker is a separate process (the row decoding and mapping are CPU-bound
Python, and threads would share one interpreter lock).

Where the points go (a worker's *sink*):
- a Qdrant server: the worker writes them itself, through its own connection and a
  :class:`~pg2qdrant.destination.writer.Writer` (several requests in flight), and tells the
  coordinator only how many points Qdrant acknowledged; nothing per row passes
  through the coordinator.
- an in-process target (Edge, local mode): the folder is locked by the coordinator's
  client, so workers send mapped :class:`~pg2qdrant.core.mapping.batch.PointBatch` objects through
  a bounded queue and the coordinator writes them with the same Writer class.
- the dry run: workers write through the same Writer into :class:`DryRunTarget`, which builds
  each request to the last byte and drops it.

A pool serves one table, or several one after another (``migrate --config
--migration.consistent``: :class:`SharedReaders`, processes started once for every
table). Tasks are (table key, ReaderSpec, ReadRange, attempt), the spec pickled once per
table for processes (a worker unpickles it only when the table changes): a worker keeps its
PostgreSQL connection (one snapshot, one database) and its Qdrant connections
across tables. A range that fails because PostgreSQL dropped the connection is
reported and the coordinator queues it again (the worker reconnects); rows already
written by the failed attempt are harmless, since writes are idempotent upserts by
point ID.

Messages on the result queue are (table key, message), the key being that of the
table the worker was reading (None for "exit"); a message (``tag`` is (range index, attempt)):
  ("batch", tag, PointBatch)           in-process target: for the coordinator's writer
  ("written", tag, points)             points acknowledged by Qdrant (or encoded, dry run)
  ("range_done", tag, rows_read)       after every "written" of that range (worker-written)
  ("range_failed", tag, message)
  ("retried", worker_id, count)        transient Qdrant failures the worker retried
  ("note", worker_id, message)
  ("error", worker_id, exception)      fatal
  ("exit", worker_id, None)
:meth:`TableReads.messages` yields one table's messages, and ("tick", None, None)
whenever the queue stays empty for a moment, so the coordinator can account for
finished writes.

A worker process dies with its coordinator, whatever killed it (SIGKILL, the OOM
killer): see :mod:`pg2qdrant.migrate.lifeline`.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pg2qdrant.core import redaction, retry
from pg2qdrant.core.errors import Pg2QdrantError, SourceError
from pg2qdrant.core.mapping.batch import PointBatch, RowMapper
from pg2qdrant.core.plan import Plan
from pg2qdrant.destination import wire
from pg2qdrant.destination.base import Capabilities
from pg2qdrant.migrate import lifeline
from pg2qdrant.runtime.mapping import row_mapper
from pg2qdrant.source import connect, reader, snapshot
from pg2qdrant.source.reader import ReadRange

# Batches in flight between readers and the writer, per worker: enough to keep the
# writer busy while a reader waits on PostgreSQL, small enough to bound memory
# (a 1,024-row batch of 1536-d vectors is ~6 MiB).
QUEUE_BATCHES_PER_WORKER = 3
# Workers that write themselves send only counts: a longer queue costs nothing.
QUEUE_MESSAGES_PER_WORKER = 64
POLL_S = 0.2
STOP_GRACE_S = 2.0  # a reader finishing its batch; then it is terminated
RECONNECT_PAUSE_S = 1.0  # first pause before re-reading a range PostgreSQL dropped (a restart takes ~1 s)
RECONNECT_MAX_PAUSE_S = 30.0  # pauses double per attempt up to this
log = logging.getLogger("pg2qdrant.migrate.workers")


@dataclass(frozen=True)
class WriteSpec:
    """How a worker writes to a server itself: settings to open its own connection (never a client)."""

    target: Any  # destination.TargetSettings (API key included, never shown), or the dry run's DryRunTarget
    collection: str
    batch_size: int
    delay_s: float


@dataclass(frozen=True)
class ReaderSpec:
    """Everything a worker needs, picklable (sent to worker processes)."""

    pg_url: str
    snapshot_id: str
    plan: Plan
    batch_rows: int
    secrets: tuple[str, ...] = ()
    write: WriteSpec | None = None  # the worker writes (a server, or the dry run); None: batches go to the coordinator


def read_and_map(conn: connect.Connection, spec: ReaderSpec, rng: ReadRange, mapper: RowMapper,
                 oids: list[int]) -> Iterator[Any]:
    """Mapped batches of one range (the plain function both worker kinds run)."""
    for rows in reader.read_range(conn, spec.plan, rng, oids, spec.batch_rows):
        yield mapper.map_rows(rows)


class DryRunTarget:
    """The dry run's target: the requests a real run would send to a server, sliced by points and
    bytes by the same Writer and built to the last byte in its wire (gRPC protobuf, or REST JSON),
    then dropped. So the dry run does a real run's work less the network, and a point too large
    for any request stops it as it would stop the run. For Edge and local mode (points handed over
    in process, no request bytes) batches are only sliced by points. It travels in
    WriteSpec.target and opens itself there."""

    def __init__(self, wire_format: str | None, max_request_bytes: int | None):
        """``wire_format``: wire.GRPC or wire.REST for a server, None for an in-process target."""
        self.wire = wire_format
        self.capabilities = Capabilities(in_process=False, max_in_flight=1, max_request_bytes=max_request_bytes,
                                         hnsw=True, payload_indexes=True, encodes_wire=wire_format is not None)
        self.retries = 0

    def open_writer(self) -> DryRunTarget:
        return self

    def encode(self, batch: PointBatch) -> PointBatch:
        return wire.encode(batch, self.wire) if self.wire else batch

    def upsert(self, collection: str, batch: PointBatch, *, wait: bool = True) -> None:
        if self.wire == wire.GRPC:
            wire.grpc_request(collection, wire.encode(batch, self.wire).encoded, wait=wait)
        elif self.wire == wire.REST:
            wire.rest_body(wire.encode(batch, self.wire).encoded)

    def close(self) -> None:
        pass


def _open(spec: ReaderSpec, results, stop, worker_id: int) -> tuple[connect.Connection, list[int]]:
    """Connect and import the snapshot (a fresh one if the coordinator's is gone)."""
    conn = connect.connect(spec.pg_url, autocommit=True)
    if not snapshot.attach_or_fresh(conn, spec.snapshot_id):
        _put(results, ("note", worker_id, "the copy's snapshot is gone (server restarted?); remaining "
                                          "ranges are read in a newer snapshot"), stop)
    return conn, reader.prepare_connection(conn, spec.plan)


class _Sink:
    """Where a worker's mapped batches go: the coordinator (in-process target), or the worker's own
    writer (to Qdrant, or to the dry run's DryRunTarget)."""

    def __init__(self, spec: ReaderSpec, worker_id: int, results, stop, target=None):
        """``target``: the worker's open connection to ``spec.write.target`` (closed by the worker)."""
        self.spec, self.worker_id, self.results, self.stop = spec, worker_id, results, stop
        self.acked: dict[tuple[int, int], int] = {}  # tag -> points acknowledged, not yet reported
        self.target = self.writer = None
        self.retries_reported = 0
        if spec.write is not None:
            from pg2qdrant.destination.writer import Writer
            w = spec.write
            self.target = target
            self.retries_reported = target.retries  # an earlier table's retries were reported with it
            self.writer = Writer(self.target, w.collection, batch_size=w.batch_size, delay_s=w.delay_s,
                                 on_written=self._acknowledged)

    def _acknowledged(self, tag, n: int) -> None:
        self.acked[tag] = self.acked.get(tag, 0) + n

    def put(self, tag, batch: PointBatch) -> None:
        if self.writer is not None:
            self.writer.write(tag, batch)
            self.writer.poll()
        else:
            _put(self.results, ("batch", tag, batch), self.stop)
        self.report()

    def finish_range(self) -> None:
        """Before a range is reported done: every point of it acknowledged (and reported)."""
        if self.writer is not None:
            self.writer.drain()
        self.report()

    def report(self) -> None:
        for tag, n in self.acked.items():
            _put(self.results, ("written", tag, n), self.stop)
        self.acked.clear()
        retries = self.target.retries if self.target is not None else 0
        if retries > self.retries_reported:
            _put(self.results, ("retried", self.worker_id, retries - self.retries_reported), self.stop)
            self.retries_reported = retries

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _Tagged:
    """The result queue as one table's worker writes to it: each message goes with the table's key."""

    def __init__(self, results, key):
        self.results, self.key = results, key

    def put(self, message, timeout=None) -> None:
        self.results.put((self.key, message), timeout=timeout)


class _Reader:
    """One worker's state across the tables it serves: its PostgreSQL connection (every table of a
    pool reads one snapshot of one database: one connection serves them all), its Qdrant
    connections (one per target settings), and the current table's mapper and sink."""

    def __init__(self, worker_id: int, results, stop):
        self.worker_id, self.results, self.stop = worker_id, results, stop
        self.key = self.spec = self.mapper = self.sink = None
        self.out = _Tagged(results, None)
        self.conn = self.oids = None
        self.conn_for: tuple[str, str] | None = None  # (pg_url, snapshot_id) the connection serves
        self.targets: list[tuple[Any, Any]] = []  # (TargetSettings, open target): compared by value

    def table(self, key, spec: ReaderSpec | bytes) -> None:
        """Serve ``spec``'s table from now on (the previous table is complete: its sink is drained);
        ``spec`` may still be pickled (a process's task)."""
        if key == self.key:
            return
        if isinstance(spec, bytes):
            spec = pickle.loads(spec)
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        self.key, self.spec, self.oids = key, spec, None
        self.out = _Tagged(self.results, key)
        for secret in spec.secrets:
            redaction.register(secret)
        self.mapper = row_mapper(spec.plan)
        target = self._target(spec.write.target) if spec.write is not None else None
        self.sink = _Sink(spec, self.worker_id, self.out, self.stop, target)

    def _target(self, settings):
        for known, target in self.targets:
            if known == settings:
                return target
        target = settings.open_writer()  # the coordinator checked it
        self.targets.append((settings, target))
        return target

    def _connection(self) -> tuple[connect.Connection, list[int]]:
        spec = self.spec
        if self.conn is not None and (self.conn.closed or self.conn_for != (spec.pg_url, spec.snapshot_id)):
            self.drop_connection()
        if self.conn is None:
            self.conn, self.oids = _open(spec, self.out, self.stop, self.worker_id)
            self.conn_for = (spec.pg_url, spec.snapshot_id)
        elif self.oids is None:
            # Loaders of several plans on one connection never conflict: raw loaders are registered
            # only for vector type OIDs, which every plan reads unparsed.
            self.oids = reader.prepare_connection(self.conn, spec.plan)
        return self.conn, self.oids

    def drop_connection(self) -> None:
        _close(self.conn)
        self.conn = self.oids = self.conn_for = None

    def read(self, rng: ReadRange, attempt: int) -> bool:
        """Read, map and hand on one range of the current table; False when asked to stop."""
        tag = (rng.index, attempt)
        try:
            conn, oids = self._connection()
            rows = 0
            for batch in read_and_map(conn, self.spec, rng, self.mapper, oids):
                rows += len(batch)
                self.sink.put(tag, batch)
                if self.stop.is_set():
                    return False
            self.sink.finish_range()
            _put(self.out, ("range_done", tag, rows), self.stop)
        except (*connect.CONNECTION_LOST, SourceError) as exc:
            self.drop_connection()
            text = exc.message if isinstance(exc, SourceError) else str(exc)
            _put(self.out, ("range_failed", tag, redaction.redact(text)), self.stop)
        return True

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        for _, target in self.targets:
            target.close()
        self.drop_connection()


def _worker(worker_id: int, tasks, results, stop) -> None:
    """A worker's loop: tasks (table key, spec, range, attempt) until None, a stop, or its coordinator's end."""
    state = _Reader(worker_id, results, stop)
    try:
        while not stop.is_set():
            try:
                task = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if not lifeline.alive():
                    return
                continue
            if task is None:
                break
            key, spec, rng, attempt = task
            state.table(key, spec)
            if attempt:  # a retried range: give a restarting server time, more each attempt
                time.sleep(retry.pause(attempt - 1, RECONNECT_PAUSE_S, RECONNECT_MAX_PAUSE_S))
            if not state.read(rng, attempt):
                return
        _put(results, (None, ("exit", worker_id, None)), stop)
    except Pg2QdrantError as exc:
        _put(state.out, ("error", worker_id, exc), stop)
    except BaseException as exc:  # report, never hang the coordinator
        detail = redaction.redact("".join(traceback.format_exception(exc)))
        _put(state.out, ("error", worker_id, RuntimeError(f"reader {worker_id} failed: {detail}")), stop)
    finally:
        state.close()


def _close(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


def _put(results, message, stop) -> None:
    """Put with backpressure, giving up when the coordinator asked everyone to stop."""
    while True:
        try:
            results.put(message, timeout=POLL_S)
            return
        except queue.Full:
            if stop.is_set() or not lifeline.alive():
                return


class ReaderPool:
    """N readers over a queue of ranges: :meth:`start` them, give them a table's ranges with
    :meth:`reads` (one table after another: the processes serve them all), :meth:`stop` them."""

    def __init__(self, workers: int, *, sends_batches: bool):
        """``sends_batches``: the workers send mapped batches to the coordinator (in-process target),
        which bounds the result queue to a few batches per worker; else they send only counts."""
        self.workers = max(1, workers)
        self.sends_batches = sends_batches
        self.use_processes = self.workers > 1
        self.alive = self.workers  # workers that have not said goodbye
        if self.use_processes:
            ctx = multiprocessing.get_context("spawn")  # fork is unsafe with gRPC/threads in the parent
            self.tasks = ctx.Queue()
            self.results = ctx.Queue(maxsize=self._queue_size())
            self.stop_event = ctx.Event()
            # lifeline.run ties each process to this one before anything else is imported or unpickled.
            self._procs = [ctx.Process(target=lifeline.run, name=f"pg2qdrant-reader-{i}", daemon=True,
                                       args=(f"{__name__}:_worker", pickle.dumps((i,)), self.tasks,
                                             self.results, self.stop_event))
                           for i in range(self.workers)]
        else:
            self.tasks = queue.Queue()
            self.results = queue.Queue(maxsize=self._queue_size())
            self.stop_event = threading.Event()
            self._procs = [threading.Thread(target=_worker, name="pg2qdrant-reader", daemon=True,
                                            args=(0, self.tasks, self.results, self.stop_event))]
        self._keys = itertools.count()
        self._stopped = False

    def _queue_size(self) -> int:
        return (QUEUE_BATCHES_PER_WORKER if self.sends_batches else QUEUE_MESSAGES_PER_WORKER) * self.workers

    def start(self) -> ReaderPool:
        """Start the readers; should that fail (Ctrl-C during the spawns), those started are stopped."""
        try:
            for p in self._procs:
                p.start()
        except BaseException:
            self._procs = [p for p in self._procs if p.ident is not None]
            self.stop()
            raise
        log.debug("started %s", self.describe())
        return self

    def describe(self) -> str:
        """The readers, with their process IDs (--debug shows which processes serve each table)."""
        if not self.use_processes:
            return "1 reader thread"
        return f"{self.workers} reader processes (pids {', '.join(str(p.pid) for p in self._procs)})"

    def reads(self, spec: ReaderSpec, ranges: list[ReadRange]) -> TableReads:
        """Queue one table's ranges (the previous table's are all complete)."""
        return TableReads(self, next(self._keys), spec, ranges)

    def stop(self) -> None:
        """Let idle readers exit, ask busy ones to stop; processes that do not exit promptly are
        terminated (the coordinator must stop within a few seconds of Ctrl-C/SIGTERM)."""
        if self._stopped:
            return
        self._stopped = True
        for _ in self._procs:
            self.tasks.put(None)
        self.stop_event.set()
        for p in self._procs:
            p.join(timeout=STOP_GRACE_S)
        if self.use_processes:
            for p in self._procs:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
            for q in (self.tasks, self.results):
                q.cancel_join_thread()
                q.close()


class TableReads:
    """One table's ranges on a pool: iterate :meth:`messages`, :meth:`requeue` failed ranges,
    :meth:`finish` once every range is complete."""

    def __init__(self, pool: ReaderPool, key: int, spec: ReaderSpec, ranges: list[ReadRange]):
        self.pool, self.key, self.spec = pool, key, spec
        # Processes get the spec (the plan: every column) pickled once here, not once per range.
        self._task_spec = pickle.dumps(spec, pickle.HIGHEST_PROTOCOL) if pool.use_processes else spec
        self._finished = False
        for rng in ranges:
            self.requeue(rng, 0)

    def requeue(self, rng: ReadRange, attempt: int) -> None:
        self.pool.tasks.put((self.key, self._task_spec, rng, attempt))

    def finish(self) -> None:
        """No more ranges of this table: :meth:`messages` ends."""
        self._finished = True

    def messages(self) -> Iterator[tuple]:
        pool = self.pool
        while pool.alive and not self._finished:
            try:
                key, message = pool.results.get(timeout=POLL_S)
            except queue.Empty:
                if pool.use_processes and not any(p.is_alive() for p in pool._procs):
                    # Every process is gone without saying goodbye: killed from outside.
                    raise SourceError("All reader processes exited unexpectedly.",
                                      fix="rerun to resume; if it repeats, use --migration.num-workers 1 --debug.") from None
                yield ("tick", None, None)
                continue
            kind = message[0]
            if kind == "exit":
                pool.alive -= 1
            elif kind == "error":
                raise message[2]
            elif key == self.key:  # else a late message of an earlier table (an attempt given up)
                yield message


class SharedReaders:
    """The reader pool of a run that copies several tables one after another (``migrate --config
    --migration.consistent``): started for the first table, kept for the next ones (a process
    start costs about a second: imports), stopped by :meth:`close` after the last table.

    A table that fails stops it (its readers may be mid-range): the next table starts a new one.
    """

    def __init__(self):
        self.pool: ReaderPool | None = None

    def pool_for(self, workers: int, most: int, *, sends_batches: bool) -> ReaderPool:
        """A started pool of at least ``workers`` and at most ``most`` readers (the table's
        --migration.num-workers): the running one when it fits, else a new one."""
        pool = self.pool
        if pool is not None and pool.sends_batches == sends_batches and workers <= pool.workers <= most:
            log.debug("reusing %s, started for an earlier table", pool.describe())
            return pool
        self.close()
        self.pool = ReaderPool(workers, sends_batches=sends_batches).start()
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool, pool = None, self.pool
            pool.stop()

    def __enter__(self) -> SharedReaders:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
