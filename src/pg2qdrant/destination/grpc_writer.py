"""A reader process's writes to a Qdrant server over gRPC, without qdrant-client.

Reader processes only upsert points, already encoded as ``UpsertPoints`` bytes by wire.py;
for that, one grpc channel and one method are enough. Importing qdrant-client costs a
process more than a second of CPU (its pydantic models), which every reader paid before it
read a row: with W readers on W cores that is a second added to every migration. The
channel is built as qdrant-client builds its own (connection.get_channel: TLS with the
system's roots for https/grpcs, the ``api-key`` header on every call, unlimited message
sizes there, our 64 MiB here), and errors go through the same retry and translation rules
(server.py), so a reader behaves as the qdrant-client target does. The coordinator keeps
using qdrant-client to create collections and read them back; its own gRPC upserts (sync's
reconcile and poll) go through a writer of this module too.
"""

from __future__ import annotations

import grpc

from pg2qdrant.core import redaction
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.retry import RetryPolicy
from pg2qdrant.destination import wire
from pg2qdrant.destination.address import TargetAddress
from pg2qdrant.destination.server import (
    GRPC_MAX_MESSAGE,
    REQUEST_TIMEOUT_S,
    RetryAfter,
    Retrying,
    capabilities_for,
    split_when_too_large,
)

UPSERT_METHOD = "/qdrant.Points/Upsert"  # points_service.proto


class GrpcPointsWriter(Retrying):
    """What a reader's Writer needs of a server target (capabilities, encode, upsert, retries, close);
    qdrant.py's target sends its gRPC upserts through one too (:meth:`send`)."""

    def __init__(self, address: TargetAddress, *, api_key: str | None = None, timeout: int = REQUEST_TIMEOUT_S,
                 retry: RetryPolicy | None = None):
        if address.kind != "server" or not address.grpc:  # pragma: no cover - TargetSettings.open_writer checks
            raise ValueError(f"not a gRPC server address: {address.display()}")
        redaction.register(api_key)
        self.address = address
        self.capabilities = capabilities_for(address)
        self.retry = retry or RetryPolicy()
        self.retries = 0  # transient failures retried (reported in the summary)
        self.timeout = timeout
        self._metadata = (("api-key", api_key),) if api_key else None
        options = [("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
                   ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE)]
        where = f"{address.host}:{address.port}"
        self._channel = grpc.secure_channel(where, grpc.ssl_channel_credentials(), options) if address.https \
            else grpc.insecure_channel(where, options)
        # Bytes in, bytes out: the request is already serialized, the answer only has to arrive.
        self._upsert = self._channel.unary_unary(UPSERT_METHOD, request_serializer=None, response_deserializer=None)

    def encode(self, batch: PointBatch) -> PointBatch:
        return wire.encode(batch, wire.GRPC)

    def upsert(self, collection: str, batch: PointBatch, *, wait: bool = True,
               failed: BaseException | None = None, started: float | None = None) -> None:
        """Write points; a request the server rejects as too large is split in halves and retried.
        ``failed``: the error of a first attempt already made (:meth:`start_upsert`, begun at
        ``started``), handled as this call's own first attempt would be (retried within the same
        deadline, split or reported)."""
        first = [(failed, started)] if failed is not None else []  # the request as a whole, not its halves

        def call(part: wire.EncodedBatch) -> None:
            error, began = first.pop() if first else (None, None)
            self.call("write points", lambda: self.send(collection, part, wait), failed=error, started=began)
        split_when_too_large(self.encode(batch), call)

    def send(self, collection: str, batch: wire.EncodedBatch, wait: bool) -> None:
        """One ``UpsertPoints`` request with the batch's bytes as they are (no retry, no split)."""
        try:
            self._upsert(wire.grpc_request(collection, batch.encoded, wait=wait), timeout=self.timeout,
                         metadata=self._metadata)
        except grpc.RpcError as exc:
            ours = _ours(exc)
            if ours is exc:
                raise
            raise ours from exc

    def start_upsert(self, collection: str, batch: wire.EncodedBatch) -> grpc.Future:
        """Send one ``UpsertPoints`` (wait=true) without waiting for its answer: grpc's own threads
        carry it, so a reader keeps several requests in flight with no thread of ours per request
        (each such thread took the GIL back from the reader for every request). :meth:`failure`
        reads the outcome; a failed request goes to :meth:`upsert` with ``failed=``."""
        return self._upsert.future(wire.grpc_request(collection, batch.encoded, wait=True), timeout=self.timeout,
                                   metadata=self._metadata)

    @staticmethod
    def failure(future: grpc.Future) -> BaseException | None:
        """The error of a request :meth:`start_upsert` sent (waits for its answer), as :meth:`send`
        would have raised it; None once the server applied the points."""
        exc = future.exception()
        return _ours(exc) if isinstance(exc, grpc.RpcError) else exc

    def close(self) -> None:
        self._channel.close()


def _ours(exc: grpc.RpcError) -> Exception:
    """RESOURCE_EXHAUSTED with a ``retry-after`` trailer becomes RetryAfter (as qdrant-client turns
    it into its ResourceExhaustedResponse); any other error stays as grpc raised it."""
    seconds = _retry_after(exc)
    if not seconds:
        return exc
    ours = RetryAfter(exc.details() or "", seconds)
    ours.__cause__ = exc  # as `raise ... from exc` would (failure() returns it rather than raising)
    return ours


def _retry_after(exc: grpc.RpcError) -> int | None:
    """The seconds of a RESOURCE_EXHAUSTED answer's ``retry-after`` trailer, if it has one."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after":
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None
