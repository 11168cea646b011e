"""Reader workers: each imports the coordinator's snapshot, takes ranges, reads and maps them.

With one worker the reader is a thread of the main process; with more, each
worker is a separate process (the row decoding and mapping are CPU-bound
Python, and threads would share one interpreter lock). Workers send mapped
:class:`~pg2qdrant.mapping.PointBatch` objects to the main process through a
bounded queue, so memory stays flat however large the table is: when the
writer is slower, readers wait.

Messages on the result queue:
  ("batch", range_index, PointBatch)
  ("range_done", range_index, rows_read)
  ("error", worker_id, exception)
  ("exit", worker_id, None)
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Iterator

import psycopg

from pg2qdrant import redaction
from pg2qdrant.errors import Pg2QdrantError, SourceError
from pg2qdrant.mapping import RowMapper
from pg2qdrant.plan import Plan
from pg2qdrant.source import connect, reader, snapshot
from pg2qdrant.source.reader import ReadRange

# Batches in flight between readers and the writer, per worker: enough to keep the
# writer busy while a reader waits on PostgreSQL, small enough to bound memory
# (a 1,024-row batch of 1536-d vectors is ~6 MiB).
QUEUE_BATCHES_PER_WORKER = 3
POLL_S = 0.2


@dataclass(frozen=True)
class ReaderSpec:
    """Everything a worker needs, picklable (sent to worker processes)."""

    pg_url: str
    snapshot_id: str
    plan: Plan
    batch_rows: int
    dry_run: bool
    secrets: tuple[str, ...] = ()


def read_and_map(conn: psycopg.Connection, spec: ReaderSpec, rng: ReadRange, mapper: RowMapper,
                 oids: list[int]) -> Iterator[Any]:
    """Mapped batches of one range (the plain function both worker kinds run)."""
    for rows in reader.read_range(conn, spec.plan, rng, oids, spec.batch_rows):
        yield mapper.map_rows(rows)


def _worker(spec: ReaderSpec, worker_id: int, tasks, results, stop) -> None:
    for secret in spec.secrets:
        redaction.register(secret)
    conn = None
    try:
        conn = connect.connect(spec.pg_url, autocommit=True)
        snapshot.attach_snapshot(conn, spec.snapshot_id)
        oids = reader.prepare_connection(conn, spec.plan)
        mapper = RowMapper(spec.plan)
        while not stop.is_set():
            rng = tasks.get()
            if rng is None:
                break
            rows = 0
            for batch in read_and_map(conn, spec, rng, mapper, oids):
                rows += len(batch)
                if not spec.dry_run:
                    _put(results, ("batch", rng.index, batch), stop)
                if stop.is_set():
                    return
            _put(results, ("range_done", rng.index, rows), stop)
        _put(results, ("exit", worker_id, None), stop)
    except Pg2QdrantError as exc:
        _put(results, ("error", worker_id, exc), stop)
    except psycopg.OperationalError as exc:
        _put(results, ("error", worker_id, SourceError(
            f"PostgreSQL failed while reading: {redaction.redact(exc)}",
            fix="rerun the same command when the server is back.")), stop)
    except BaseException as exc:  # report, never hang the coordinator
        detail = redaction.redact("".join(traceback.format_exception(exc)))
        _put(results, ("error", worker_id, RuntimeError(f"reader {worker_id} failed: {detail}")), stop)
    finally:
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
            if stop.is_set():
                return


class ReaderPool:
    """N readers over a list of ranges; iterate :meth:`messages` until all have exited."""

    def __init__(self, spec: ReaderSpec, ranges: list[ReadRange], workers: int):
        self.spec = spec
        self.workers = max(1, min(workers, len(ranges) or 1))
        self.use_processes = self.workers > 1
        if self.use_processes:
            ctx = multiprocessing.get_context("spawn")  # fork is unsafe with gRPC/threads in the parent
            self.tasks = ctx.Queue()
            self.results = ctx.Queue(maxsize=QUEUE_BATCHES_PER_WORKER * self.workers)
            self.stop_event = ctx.Event()
            self._procs = [ctx.Process(target=_worker, name=f"pg2qdrant-reader-{i}", daemon=True,
                                       args=(spec, i, self.tasks, self.results, self.stop_event))
                           for i in range(self.workers)]
        else:
            self.tasks = queue.Queue()
            self.results = queue.Queue(maxsize=QUEUE_BATCHES_PER_WORKER)
            self.stop_event = threading.Event()
            self._procs = [threading.Thread(target=_worker, name="pg2qdrant-reader", daemon=True,
                                            args=(spec, 0, self.tasks, self.results, self.stop_event))]
        for rng in ranges:
            self.tasks.put(rng)
        for _ in range(self.workers):
            self.tasks.put(None)

    def start(self) -> "ReaderPool":
        for p in self._procs:
            p.start()
        return self

    def messages(self) -> Iterator[tuple]:
        alive = self.workers
        while alive:
            try:
                message = self.results.get(timeout=POLL_S)
            except queue.Empty:
                if self.use_processes and not any(p.is_alive() for p in self._procs):
                    # Every process is gone without saying goodbye: killed from outside.
                    raise SourceError("All reader processes exited unexpectedly.",
                                      fix="rerun; if it repeats, run with --migration.num-workers 1 --debug.")
                continue
            kind = message[0]
            if kind == "exit":
                alive -= 1
            elif kind == "error":
                raise message[2]
            else:
                yield message

    def stop(self) -> None:
        self.stop_event.set()
        for p in self._procs:
            p.join(timeout=5)
        if self.use_processes:
            for p in self._procs:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
            for q in (self.tasks, self.results):
                q.cancel_join_thread()
                q.close()
