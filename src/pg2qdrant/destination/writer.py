"""Writing to Qdrant: requests bounded by points and bytes, several in flight for a server.

One Writer serves every flow that writes points: each reader worker of a copy into a
server (it owns its connection), the coordinator of a copy into an in-process target
(Edge, local mode: one writer, they lock their folder), and sync (CDC apply, poll,
reconcile). A request the server still refuses as too large is split by the target
(server.split_when_too_large).

Several requests in flight: a target that can send without waiting (a reader's gRPC
writer: ``start_upsert``) keeps them in grpc's own threads and the Writer reads their
answers oldest first; other server targets (REST, the coordinator's qdrant-client) send
from a small pool of threads, as does --migration.batch-delay (each thread pauses after
its request). Sync's ordered operations (:meth:`Writer.apply`) use that pool too, for
requests that touch disjoint points only: those commute, so a round trip to a remote
server is not paid once per request.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from pg2qdrant.core.errors import DataError
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.ids import PointId, normalize_point_id
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination.base import Target


class Writer:
    """Writes batches as requests bounded by points and bytes, several in flight for a server.

    Every request is sent with wait=true, so a write counts as done (and a range as
    complete) only once Qdrant has applied it; concurrency comes from requests in
    flight, not from skipping the acknowledgement.
    """

    def __init__(self, target: Target, collection: str, *, batch_size: int, delay_s: float = 0.0,
                 on_written: Callable[[Any, int], None] | None = None):
        self.target = target
        self.collection = collection
        self.batch_size = request_points(target, collection, batch_size)
        capabilities = target.capabilities
        self.max_bytes = capabilities.max_request_bytes
        # Points encoded once, requests sized by their bytes.
        self._encode = target.encode if capabilities.encodes_wire else None
        self.delay_s = delay_s
        self.on_written = on_written or (lambda tag, n: None)  # (tag, points) once Qdrant acknowledged them
        self.in_flight = max(1, capabilities.max_in_flight)
        self._pool: ThreadPoolExecutor | None = None  # started by the first write with several in flight
        self._pending: set[Future] = set()
        # Requests sent without waiting, oldest first: (answer, when sent, tag, request).
        self._start = getattr(target, "start_upsert", None) if self.in_flight > 1 and not delay_s else None
        self._sent: deque = deque()

    def _slices(self, batch: PointBatch) -> Iterator[tuple[PointBatch, int]]:
        """(slice, estimated bytes) of ``batch`` within the point and (for servers) byte limits."""
        if self.max_bytes is None:
            for start in range(0, len(batch), self.batch_size):
                yield batch.slice(start, start + self.batch_size), 0
            return
        sizes = batch.point_sizes()
        start = 0
        while start < len(batch):
            end, total = start, 0
            while end < len(batch) and end - start < self.batch_size and (end == start or total + sizes[end] <= self.max_bytes):
                total += sizes[end]
                end += 1
            if sizes[start] > self.max_bytes:
                raise DataError(
                    f"Point {batch.ids[start]!r} is about {sizes[start] / 2**20:.1f} MiB, larger than the "
                    f"{self.max_bytes / 2**20:.0f} MiB we allow per request (the server rejects 32 MiB).",
                    fix="leave the large columns out with --pg.columns, or raise the server's "
                        "service.max_request_size_mb and use a smaller --migration.batch-size.",
                )
            yield batch.slice(start, end), total
            start = end

    def requests(self, batch: PointBatch) -> Iterator[PointBatch]:
        """Slices of ``batch`` within the point and (for servers) byte limits."""
        return (part for part, _ in self._slices(batch))

    # -- the copy: upserts, several in flight ----------------------------------------------
    def write(self, tag: Any, batch: PointBatch) -> None:
        """Send ``batch``; ``on_written(tag, n)`` runs in this thread once Qdrant acknowledged n points."""
        if self._encode is not None:
            batch = self._encode(batch)
        for request in self.requests(batch):
            if self.in_flight == 1:
                self._send(tag, request)
                self.on_written(tag, len(request))
                continue
            if self._start is not None:
                while len(self._sent) >= self.in_flight:
                    self._finish_oldest()
                sent_at = time.monotonic()
                self._sent.append((self._start(self.collection, request), sent_at, tag, request))
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="pg2qdrant-writer")
            while len(self._pending) >= self.in_flight:
                self._collect(wait(self._pending, return_when=FIRST_COMPLETED).done)
            self._pending.add(self._pool.submit(self._send, tag, request))

    def _send(self, tag: Any, request: PointBatch) -> tuple[Any, int]:
        self.target.upsert(self.collection, request, wait=True)
        if self.delay_s:
            time.sleep(self.delay_s)
        return tag, len(request)

    def _finish_oldest(self) -> None:
        """Wait for the oldest request sent without waiting; a failed one is written again as a plain
        upsert (retried, split or reported: the target counts the failure as its first attempt)."""
        answer, started, tag, request = self._sent.popleft()
        error = self.target.failure(answer)
        if error is not None:
            self.target.upsert(self.collection, request, wait=True, failed=error, started=started)
        self.on_written(tag, len(request))

    def _collect(self, done) -> None:
        for future in done:
            self._pending.discard(future)
            tag, n = future.result()  # re-raises the request's error here
            self.on_written(tag, n)

    def poll(self) -> None:
        """Account for requests that finished meanwhile, without waiting for the others."""
        while self._sent and self._sent[0][0].done():
            self._finish_oldest()
        done = [f for f in self._pending if f.done()]
        if done:
            self._collect(done)

    def drain(self) -> None:
        while self._sent:
            self._finish_oldest()
        while self._pending:
            self._collect(wait(self._pending, return_when=FIRST_COMPLETED).done)

    # -- sync: ordered operations ------------------------------------------------------------
    def apply(self, operations: list[ops.Operation]) -> None:
        """Apply ``operations`` as if in order (wait=true), in requests within the point and byte
        bounds (a large upsert becomes several). A server gets several requests at once when they
        touch disjoint points (they commute); a request touching a point of one in flight, or
        clearing the collection, waits for it. Returns once every request is applied; on a
        failure, once none is in flight any more."""
        requests = list(self._requests(operations))
        if self.in_flight == 1 or self.delay_s or len(requests) == 1:  # in this thread (Ctrl-C stops it)
            for request in requests:
                self._apply(request)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="pg2qdrant-writer")
        pending: dict[Future, frozenset[PointId] | None] = {}  # request -> its points (None: all)
        try:
            for request in requests:
                points = _points_of(request)
                while pending and (len(pending) >= self.in_flight
                                   or any(_overlap(points, other) for other in pending.values())):
                    _settle(pending, wait(pending, return_when=FIRST_COMPLETED).done)
                pending[self._pool.submit(self._apply, request)] = points
            while pending:
                _settle(pending, wait(pending, return_when=FIRST_COMPLETED).done)
        finally:
            wait(pending)  # a failed request is reported once the others have answered

    def _requests(self, operations: list[ops.Operation]) -> Iterator[list[ops.Operation]]:
        """``operations`` cut into requests within the point and byte bounds, in order."""
        request: list[ops.Operation] = []
        points = size = 0
        for op, n, b in self._bounded(operations):
            if request and (points + n > self.batch_size or (self.max_bytes is not None and size + b > self.max_bytes)):
                yield request
                request, points, size = [], 0, 0
            request.append(op)
            points += n
            size += b
        if request:
            yield request

    def _bounded(self, operations: list[ops.Operation]) -> Iterator[tuple[ops.Operation, int, int]]:
        """(operation, points, estimated bytes), upserts and deletes cut to the bounds (a delete counts its
        ids: strict mode's write rate limit charges the points a request touches)."""
        for op in operations:
            if isinstance(op, ops.Upsert):
                for part, b in self._slices(op.batch):
                    yield ops.Upsert(part), len(part), b
            elif isinstance(op, ops.DeletePoints) and len(op.ids) > 1:
                for start in range(0, len(op.ids), self.batch_size):
                    part = ops.DeletePoints(op.ids[start:start + self.batch_size])
                    yield part, len(part.ids), (ops.estimated_bytes(part) if self.max_bytes is not None else 0)
            else:
                yield op, 1, (ops.estimated_bytes(op) if self.max_bytes is not None else 0)

    def _apply(self, request: list[ops.Operation]) -> None:
        self.target.apply(self.collection, request, wait=True)
        if self.delay_s:
            time.sleep(self.delay_s)

    def close(self) -> None:
        """Stop: requests not started are cancelled, requests already sent are awaited (those sent
        without waiting are cancelled: their points are not counted as written)."""
        while self._sent:
            self._sent.popleft()[0].cancel()
        if self._pool is not None:
            for f in self._pending:
                f.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def request_points(target: Any, collection: str, batch_size: int) -> int:
    """Points per request: ``batch_size``, or fewer where the collection's strict mode allows fewer
    (runtime.target says so once)."""
    limit = getattr(target, "points_per_request", lambda c: None)(collection)
    return min(batch_size, limit) if limit else batch_size


def _points_of(request: list[ops.Operation]) -> frozenset[PointId] | None:
    """The points a request writes (None: the whole collection)."""
    out: set[PointId] = set()
    for op in request:
        if isinstance(op, ops.ClearCollection):
            return None
        ids = op.batch.ids if isinstance(op, ops.Upsert) else op.ids if isinstance(op, ops.DeletePoints) \
            else (op.point_id,)
        out.update(normalize_point_id(i) for i in ids)
    return frozenset(out)


def _overlap(a: frozenset[PointId] | None, b: frozenset[PointId] | None) -> bool:
    return a is None or b is None or not a.isdisjoint(b)


def _settle(pending: dict[Future, Any], done) -> None:
    """Forget the finished requests; re-raise the first failure among them."""
    for future in done:
        pending.pop(future)
    for future in done:
        future.result()
