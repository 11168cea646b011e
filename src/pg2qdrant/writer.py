"""Writing to Qdrant: requests bounded by points and bytes, several in flight for a server."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Iterator

from pg2qdrant.errors import DataError
from pg2qdrant.mapping import PointBatch


class Writer:
    """Writes batches as requests bounded by points and bytes, several in flight for a server.

    Every request is sent with wait=true, so a write counts as done (and a range as
    complete) only once Qdrant has applied it; concurrency comes from requests in
    flight, not from skipping the acknowledgement.
    """

    def __init__(self, target, collection: str, *, batch_size: int, delay_s: float, on_written):
        self.target = target
        self.collection = collection
        self.batch_size = batch_size
        self.max_bytes = target.max_request_bytes
        self._encode = getattr(target, "encode", None)  # points encoded once, sized by their bytes
        self.delay_s = delay_s
        self.on_written = on_written  # (tag, points) after Qdrant acknowledged them
        self.in_flight = max(1, target.max_in_flight)
        self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="pg2qdrant-writer") \
            if self.in_flight > 1 else None
        self._pending: set[Future] = set()

    def requests(self, batch: PointBatch) -> Iterator[PointBatch]:
        """Slices of ``batch`` within the point and (for servers) byte limits."""
        if self.max_bytes is None:
            for start in range(0, len(batch), self.batch_size):
                yield batch.slice(start, start + self.batch_size)
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
            yield batch.slice(start, end)
            start = end

    def write(self, tag: Any, batch: PointBatch) -> None:
        """Send ``batch``; ``on_written(tag, n)`` runs in this thread once Qdrant acknowledged n points."""
        if self._encode is not None:
            batch = self._encode(batch)
        for request in self.requests(batch):
            if self._pool is None:
                self._send(tag, request)
            else:
                while len(self._pending) >= self.in_flight:
                    self._collect(wait(self._pending, return_when=FIRST_COMPLETED).done)
                self._pending.add(self._pool.submit(self._send, tag, request))

    def _send(self, tag: Any, request: PointBatch) -> tuple[Any, int]:
        self.target.upsert(self.collection, request, wait=True)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self._pool is None:
            self.on_written(tag, len(request))
        return tag, len(request)

    def _collect(self, done) -> None:
        for future in done:
            self._pending.discard(future)
            tag, n = future.result()  # re-raises the request's error here
            self.on_written(tag, n)

    def poll(self) -> None:
        """Account for requests that finished meanwhile, without waiting for the others."""
        done = [f for f in self._pending if f.done()]
        if done:
            self._collect(done)

    def drain(self) -> None:
        while self._pending:
            self._collect(wait(self._pending, return_when=FIRST_COMPLETED).done)

    def close(self) -> None:
        """Stop: requests not started are cancelled, requests already sent are awaited."""
        if self._pool is not None:
            for f in self._pending:
                f.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
