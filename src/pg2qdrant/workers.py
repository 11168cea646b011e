"""Reader workers: each imports the coordinator's snapshot, takes ranges, reads, maps and writes them.

With one worker the reader is a thread of the main process; with more, each
worker is a separate process (the row decoding and mapping are CPU-bound
Python, and threads would share one interpreter lock).

Where the points go (a worker's *sink*):
- a Qdrant server: the worker writes them itself, through its own connection and a
  :class:`~pg2qdrant.writer.Writer` (several requests in flight), and tells the
  coordinator only how many points Qdrant acknowledged; nothing per row passes
  through the coordinator.
- an in-process target (Edge, local mode): the folder is locked by the coordinator's
  client, so workers send mapped :class:`~pg2qdrant.mapping.PointBatch` objects through
  a bounded queue and the coordinator writes them with the same Writer class.
- the dry run: workers encode each batch as a write would and discard it.

Tasks are (ReadRange, attempt); a range that fails because PostgreSQL dropped
the connection is reported and the coordinator queues it again (the worker
reconnects); rows already written by the failed attempt are harmless, since
writes are idempotent upserts by point ID.

Messages on the result queue (``tag`` is (range index, attempt)):
  ("batch", tag, PointBatch)           in-process target: for the coordinator's writer
  ("written", tag, points)             points acknowledged by Qdrant (or encoded, dry run)
  ("range_done", tag, rows_read)       after every "written" of that range (worker-written)
  ("range_failed", tag, message)
  ("retried", worker_id, count)        transient Qdrant failures the worker retried
  ("note", worker_id, message)
  ("error", worker_id, exception)      fatal
  ("exit", worker_id, None)
:meth:`ReaderPool.messages` also yields ("tick", None, None) whenever the queue
stays empty for a moment, so the coordinator can account for finished writes.

A worker process dies with its coordinator, whatever killed it (SIGKILL, the OOM
killer): see :mod:`pg2qdrant.lifeline`.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pg2qdrant import lifeline, redaction, retry
from pg2qdrant.destination import wire
from pg2qdrant.errors import Pg2QdrantError, SourceError
from pg2qdrant.mapping import PointBatch, RowMapper
from pg2qdrant.plan import Plan
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


@dataclass(frozen=True)
class WriteSpec:
    """How a worker writes to a server itself: settings to open its own connection (never a client)."""

    target: Any  # destination.TargetSettings (API key included, never shown)
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
    dry_run: bool
    secrets: tuple[str, ...] = ()
    write: WriteSpec | None = None  # the worker writes (a server); None: batches go to the coordinator


def read_and_map(conn: connect.Connection, spec: ReaderSpec, rng: ReadRange, mapper: RowMapper,
                 oids: list[int]) -> Iterator[Any]:
    """Mapped batches of one range (the plain function both worker kinds run)."""
    for rows in reader.read_range(conn, spec.plan, rng, oids, spec.batch_rows):
        yield mapper.map_rows(rows)


def dry_run_encode(batch: PointBatch) -> None:
    """The dry run's encoding: build the gRPC request bytes a write to a server would send
    (the default --qdrant.url is gRPC), then drop them, so the dry run measures the same
    work as a real run's workers, less the network."""
    wire.encode(batch, wire.GRPC)


def _open(spec: ReaderSpec, results, stop, worker_id: int) -> tuple[connect.Connection, list[int]]:
    """Connect and import the snapshot (a fresh one if the coordinator's is gone)."""
    conn = connect.connect(spec.pg_url, autocommit=True)
    if not snapshot.attach_or_fresh(conn, spec.snapshot_id):
        _put(results, ("note", worker_id, "the copy's snapshot is gone (server restarted?); remaining "
                                          "ranges are read in a newer snapshot"), stop)
    return conn, reader.prepare_connection(conn, spec.plan)


class _Sink:
    """Where a worker's mapped batches go: the coordinator (in-process target), a dry-run encoder,
    or Qdrant through the worker's own writer."""

    def __init__(self, spec: ReaderSpec, worker_id: int, results, stop):
        self.spec, self.worker_id, self.results, self.stop = spec, worker_id, results, stop
        self.acked: dict[tuple[int, int], int] = {}  # tag -> points acknowledged, not yet reported
        self.target = self.writer = None
        self.retries_reported = 0
        if spec.write is not None:
            from pg2qdrant.writer import Writer
            w = spec.write
            self.target = w.target.open(check=False)  # the coordinator checked it
            self.writer = Writer(self.target, w.collection, batch_size=w.batch_size, delay_s=w.delay_s,
                                 on_written=self._acknowledged)

    def _acknowledged(self, tag, n: int) -> None:
        self.acked[tag] = self.acked.get(tag, 0) + n

    def put(self, tag, batch: PointBatch) -> None:
        if self.writer is not None:
            self.writer.write(tag, batch)
            self.writer.poll()
        elif self.spec.dry_run:
            dry_run_encode(batch)
            self._acknowledged(tag, len(batch))
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
        if self.target is not None:
            self.target.close()


def _worker(spec: ReaderSpec, worker_id: int, tasks, results, stop) -> None:
    for secret in spec.secrets:
        redaction.register(secret)
    conn = sink = None
    mapper = RowMapper(spec.plan)
    try:
        sink = _Sink(spec, worker_id, results, stop)
        while not stop.is_set():
            try:
                task = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if not lifeline.alive():
                    return
                continue
            if task is None:
                break
            rng, attempt = task
            tag = (rng.index, attempt)
            if attempt:  # a retried range: give a restarting server time, more each attempt
                time.sleep(retry.pause(attempt - 1, RECONNECT_PAUSE_S, RECONNECT_MAX_PAUSE_S))
            try:
                if conn is None or conn.closed:
                    conn, oids = _open(spec, results, stop, worker_id)
                rows = 0
                for batch in read_and_map(conn, spec, rng, mapper, oids):
                    rows += len(batch)
                    sink.put(tag, batch)
                    if stop.is_set():
                        return
                sink.finish_range()
                _put(results, ("range_done", tag, rows), stop)
            except (*connect.CONNECTION_LOST, SourceError) as exc:
                _close(conn)
                conn = None
                text = exc.message if isinstance(exc, SourceError) else str(exc)
                _put(results, ("range_failed", tag, redaction.redact(text)), stop)
        _put(results, ("exit", worker_id, None), stop)
    except Pg2QdrantError as exc:
        _put(results, ("error", worker_id, exc), stop)
    except BaseException as exc:  # report, never hang the coordinator
        detail = redaction.redact("".join(traceback.format_exception(exc)))
        _put(results, ("error", worker_id, RuntimeError(f"reader {worker_id} failed: {detail}")), stop)
    finally:
        if sink is not None:
            sink.close()
        _close(conn)


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
    """N readers over a queue of ranges; iterate :meth:`messages`, :meth:`requeue` failed ranges,
    :meth:`finish` once every range is complete."""

    def __init__(self, spec: ReaderSpec, ranges: list[ReadRange], workers: int):
        self.spec = spec
        self.workers = max(1, min(workers, len(ranges) or 1))
        self.use_processes = self.workers > 1
        if self.use_processes:
            ctx = multiprocessing.get_context("spawn")  # fork is unsafe with gRPC/threads in the parent
            self.tasks = ctx.Queue()
            self.results = ctx.Queue(maxsize=self._queue_size())
            self.stop_event = ctx.Event()
            # lifeline.run ties each process to this one before the spec is unpickled.
            self._procs = [ctx.Process(target=lifeline.run, name=f"pg2qdrant-reader-{i}", daemon=True,
                                       args=(f"{__name__}:_worker", pickle.dumps((spec, i)), self.tasks,
                                             self.results, self.stop_event))
                           for i in range(self.workers)]
        else:
            self.tasks = queue.Queue()
            self.results = queue.Queue(maxsize=self._queue_size())
            self.stop_event = threading.Event()
            self._procs = [threading.Thread(target=_worker, name="pg2qdrant-reader", daemon=True,
                                            args=(spec, 0, self.tasks, self.results, self.stop_event))]
        for rng in ranges:
            self.tasks.put((rng, 0))
        self._finished = False

    def _queue_size(self) -> int:
        sends_batches = self.spec.write is None and not self.spec.dry_run
        return (QUEUE_BATCHES_PER_WORKER if sends_batches else QUEUE_MESSAGES_PER_WORKER) * self.workers

    def start(self) -> ReaderPool:
        for p in self._procs:
            p.start()
        return self

    def requeue(self, rng: ReadRange, attempt: int) -> None:
        self.tasks.put((rng, attempt))

    def finish(self) -> None:
        """No more ranges: let every worker exit."""
        if not self._finished:
            self._finished = True
            for _ in range(self.workers):
                self.tasks.put(None)

    def messages(self) -> Iterator[tuple]:
        alive = self.workers
        while alive:
            try:
                message = self.results.get(timeout=POLL_S)
            except queue.Empty:
                if self.use_processes and not any(p.is_alive() for p in self._procs):
                    # Every process is gone without saying goodbye: killed from outside.
                    raise SourceError("All reader processes exited unexpectedly.",
                                      fix="rerun to resume; if it repeats, use --migration.num-workers 1 --debug.") from None
                yield ("tick", None, None)
                continue
            kind = message[0]
            if kind == "exit":
                alive -= 1
            elif kind == "error":
                raise message[2]
            else:
                yield message

    def stop(self) -> None:
        """Ask readers to stop; processes that do not exit promptly are terminated (the
        coordinator must stop within a few seconds of Ctrl-C/SIGTERM)."""
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
