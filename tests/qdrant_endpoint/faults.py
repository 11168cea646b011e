"""Fault injection in front of the engine, one rule list for the REST and the gRPC front-ends.

A request is named by its operation (``UPSERT``, ``COUNT``, ... the same for both
front-ends) and its collection; the first matching rule that is not exhausted decides
what happens instead of (or, with ``after_apply``, after) serving it. Each action is
what a real failure looks like on that protocol: an HTTP status and body (Qdrant's JSON
or a proxy's HTML), a gRPC status with trailing metadata, a connection reset or closed
with nothing sent, or an answer that comes too late.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Operations (SeenRequest.op), the same names on both front-ends.
UPSERT = "upsert"
BATCH = "batch"                     # batch update (several operations in one request)
DELETE_POINTS = "delete_points"
SET_PAYLOAD = "set_payload"
OVERWRITE_PAYLOAD = "overwrite_payload"
DELETE_PAYLOAD = "delete_payload"
CLEAR_PAYLOAD = "clear_payload"
UPDATE_VECTORS = "update_vectors"
DELETE_VECTORS = "delete_vectors"
COUNT = "count"
RETRIEVE = "retrieve"
SCROLL = "scroll"
QUERY = "query"
CREATE_INDEX = "create_index"
DELETE_INDEX = "delete_index"
CREATE_COLLECTION = "create_collection"
GET_COLLECTION = "get_collection"
UPDATE_COLLECTION = "update_collection"
DELETE_COLLECTION = "delete_collection"
LIST_COLLECTIONS = "list_collections"
COLLECTION_EXISTS = "collection_exists"
HEALTH = "health"
UPDATE_ALIASES = "update_aliases"
LIST_ALIASES = "list_aliases"
WRITES = (UPSERT, BATCH, DELETE_POINTS, SET_PAYLOAD, OVERWRITE_PAYLOAD, DELETE_PAYLOAD, CLEAR_PAYLOAD,
          UPDATE_VECTORS, DELETE_VECTORS, CREATE_INDEX, DELETE_INDEX)

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Qdrant's service.max_request_size_mb default

# HTTP status -> the gRPC code Qdrant (tonic) or a gRPC proxy answers for the same failure.
GRPC_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
              409: "ALREADY_EXISTS", 413: "OUT_OF_RANGE", 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
              500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class Action:
    """What the endpoint does instead of serving a request. ``after_apply=True`` serves it
    first (the write happens) and then fails: an acknowledgement lost on the way back."""

    after_apply: bool = False


@dataclass
class Respond(Action):
    """An error answer. REST: ``status`` with Qdrant's JSON error body carrying ``message``
    (or ``body`` verbatim, e.g. a proxy's HTML page) and Retry-After when given. gRPC:
    ``grpc_code`` (default: the code for ``status``), details ``message`` (or the body's
    text), ``retry-after`` trailing metadata when given."""

    status: int
    message: str = ""
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    grpc_code: str | None = None
    after_apply: bool = False

    @property
    def code(self) -> str:
        return self.grpc_code or GRPC_CODES.get(self.status, "UNKNOWN")

    @property
    def details(self) -> str:
        return self.message or (self.body or b"").decode("utf-8", "replace")


@dataclass
class Drop(Action):
    """Close the connection with nothing sent back (REST: the request's connection; gRPC: the
    TCP connection carrying the call, so every call on it fails). ``reset=True``: RST, else FIN."""

    reset: bool = False
    after_apply: bool = False


@dataclass
class Delay(Action):
    """Wait ``seconds`` (cut short when the endpoint stops), then do ``then`` or serve."""

    seconds: float
    then: Action | None = None
    after_apply: bool = False


def rate_limited(retry_after: int | None = None,
                 message: str = "Rate limiting exceeded: Write rate limit exceeded, retry later") -> Respond:
    """Qdrant's strict-mode rate limiter: 429 / RESOURCE_EXHAUSTED, with Retry-After when given."""
    return Respond(429, message, retry_after=retry_after)


def bad_gateway() -> Respond:
    """A reverse proxy's 502 (HTML, not Qdrant JSON); a gRPC proxy answers UNAVAILABLE."""
    return Respond(502, body=b"<html><head><title>502 Bad Gateway</title></head><body>"
                             b"<center><h1>502 Bad Gateway</h1></center></body></html>",
                   content_type="text/html")


def service_unavailable(message: str = "Service unavailable: No active replica for shard 0, please retry") -> Respond:
    return Respond(503, message)


def gateway_timeout() -> Respond:
    """A proxy gave up waiting: 504 HTML / DEADLINE_EXCEEDED."""
    return Respond(504, body=b"<html><head><title>504 Gateway Time-out</title></head><body>"
                             b"<center><h1>504 Gateway Time-out</h1></center></body></html>",
                   content_type="text/html")


def please_retry(status: int = 500, grpc_code: str | None = None) -> Respond:
    """A server error whose message asks to retry (gRPC: INTERNAL unless told)."""
    return Respond(status, "Service internal error: Operation was interrupted by a concurrent collection update. "
                           "Please retry", grpc_code=grpc_code)


def wrong_input(message: str = "Vector dimension error: expected dim: 4, got 3") -> Respond:
    """A permanent 400 / INVALID_ARGUMENT "Wrong input: ..."."""
    return Respond(400, f"Wrong input: {message}")


def server_error(message: str = "Service internal error: No space left on device") -> Respond:
    return Respond(500, message)


def grpc_status(code: str, message: str, retry_after: int | None = None) -> Respond:
    """A gRPC status as such (REST answers 500 with the message)."""
    return Respond(500, message, retry_after=retry_after, grpc_code=code)


def message_larger_than_max(size: int = 40_000_000, limit: int = 4 * 1024 * 1024) -> Respond:
    """grpc-core's RESOURCE_EXHAUSTED for a message over a channel's limit (not worth retrying)."""
    return grpc_status("RESOURCE_EXHAUSTED", f"Received message larger than max ({size} vs. {limit})")


def too_large(size: int = 40_000_000, limit: int = DEFAULT_MAX_REQUEST_BYTES, status: int = 400) -> Respond:
    """The rejection of an oversized request, whatever its real size (see max_request_bytes)."""
    return Respond(status, too_large_message(size, limit), grpc_code="OUT_OF_RANGE")


def too_large_message(size: int, limit: int, grpc: bool = False) -> str:
    if grpc:  # tonic's decode limit, as Qdrant's gRPC server answers (OUT_OF_RANGE)
        return f"Error, decoded message length too large: found {size} bytes, the limit is: {limit} bytes"
    # actix-web's JsonPayloadError::Overflow, as Qdrant's REST server answers (400)
    return f"Payload error: JSON payload ({size} bytes) is larger than allowed (limit: {limit} bytes)"


@dataclass
class SeenRequest:
    """One request as the endpoint received it (faulted and refused ones included)."""

    front: str                      # "rest" | "grpc"
    op: str | None                  # UPSERT, COUNT, ... (None: not a known operation)
    collection: str | None
    method: str                     # HTTP method, or the gRPC method path
    path: str                       # URL path, or the gRPC method path
    size: int                       # request body / message bytes
    headers: dict[str, str]         # lower-case names (HTTP headers or gRPC metadata)
    ids: list | None = None         # point ids written by an upsert (or a batch's upserts)
    status: int | str | None = None  # HTTP status or gRPC code name sent; None when dropped
    outcome: str = "pending"        # ok | error | fault | dropped | unauthorized | too_large
    fault: Fault | None = None
    body: Any = None                # the request as qdrant-client models, when keep_bodies

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class Fault:
    op: str | None                  # an operation name, or a regex on SeenRequest.path; None: any
    action: Action
    collection: str | None = None   # None: any collection (the _pg2qdrant_state one included!)
    times: int | None = 1           # None: every matching request
    skip: int = 0
    front: str | None = None        # "rest" | "grpc" | None
    when: Callable[[SeenRequest], bool] | None = None
    matched: int = 0
    fired: int = 0

    def _wants(self, req: SeenRequest) -> bool:
        if self.front is not None and self.front != req.front:
            return False
        if self.op is not None and self.op != req.op and not re.search(self.op, req.path):
            return False
        if self.collection is not None and self.collection != req.collection:
            return False
        if self.when is not None and not self.when(req):
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultPlan:
    """The rules; the first matching, not exhausted one (in order added) fires."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, op: str | None, *, action: Action, collection: str | None = None, times: int | None = 1,
            skip: int = 0, front: str | None = None, when: Callable[[SeenRequest], bool] | None = None) -> Fault:
        """Fail ``times`` requests (None: all) for ``op`` on ``collection``, after ``skip`` of them."""
        fault = Fault(op, action, collection, times, skip, front, when)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pick(self, req: SeenRequest) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault._wants(req):
                    return fault
        return None
