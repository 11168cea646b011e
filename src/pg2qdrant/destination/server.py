"""A Qdrant server as pg2qdrant reaches it, without qdrant-client: what it can do, which failures
are worth retrying and how they read to a user (its address: :mod:`.address`).

Shared by the qdrant-client target (qdrant.py) and the reader processes' gRPC writer
(grpc_writer.py), which import no qdrant-client: a reader starts in a fraction of the
second that importing qdrant-client takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import DataError, InputError, TargetError
from pg2qdrant.core.retry import RetryPolicy, call_with_retries
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination import wire
from pg2qdrant.destination.address import TargetAddress
from pg2qdrant.destination.base import Capabilities

# The client's gRPC default is 4 MB per message (the reference tool's users hit it with large
# batches); ours is 64 MiB, above the server's 32 MiB request limit, so that the server's own
# answer (and not the client) refuses a request too large (requests are kept to MAX_REQUEST_BYTES).
GRPC_MAX_MESSAGE = 64 * 1024 * 1024
REQUEST_TIMEOUT_S = 120
# Keep each write request well under the server's 32 MiB limit (estimated size).
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# Qdrant's bulk-load advice: 2-4 requests in flight (or one per shard).
SERVER_REQUESTS_IN_FLIGHT = 4

T = TypeVar("T")


def capabilities_for(address: TargetAddress) -> Capabilities:
    """What qdrant-client's target (and the readers' writer) can do at ``address``."""
    if address.kind == "server":
        # Qdrant's bulk-load advice: several requests in flight; requests under its size limit.
        return Capabilities(in_process=False, max_in_flight=SERVER_REQUESTS_IN_FLIGHT,
                            max_request_bytes=MAX_REQUEST_BYTES, hnsw=True, payload_indexes=True,
                            encodes_wire=True)
    # Local mode: in-process, locks its folder, searches exhaustively, has no payload indexes
    # (qdrant-client would only warn) and takes PointStructs.
    return Capabilities(in_process=True, max_in_flight=1, max_request_bytes=None, hnsw=False,
                        payload_indexes=False, encodes_wire=False)


def wire_for(address: TargetAddress) -> str | None:
    """The wire a target's upserts are encoded for: wire.GRPC or wire.REST for a server; None for
    local mode and Edge, which take points in process."""
    if not capabilities_for(address).encodes_wire:
        return None
    return wire.GRPC if address.grpc else wire.REST


class RetryAfter(Exception):
    """RESOURCE_EXHAUSTED with a ``retry-after`` (seconds) from a server over gRPC: retried after
    that long (qdrant-client raises its ResourceExhaustedResponse for the same)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Retrying:
    """A connection to a server whose requests retry transient failures and count them in
    ``retries`` (the summary shows it); the rest become our errors. Subclasses set ``address``,
    ``retry`` and ``retries``."""

    address: TargetAddress
    retry: RetryPolicy
    retries: int

    def call(self, what: str, fn: Callable[[], T], *, failed: BaseException | None = None,
             started: float | None = None) -> T:
        """Run one request, retried as ``retry`` says; ``failed``/``started``: its first attempt,
        already made (retry.call_with_retries)."""
        def counted(attempt: int, exc: BaseException, delay: float) -> None:
            self.retries += 1
        try:
            return call_with_retries(fn, policy=self.retry, is_transient=is_transient, what=what, on_retry=counted,
                                     failed=failed, started=started)
        except (InputError, TargetError):
            raise
        except Exception as exc:  # qdrant-client raises httpx, grpc and its own types
            raise translate_error(exc, what, self.address) from exc


def split_when_too_large(request, send: Callable[[Any], None]) -> None:
    """``send(request)``; when the server refuses it for its size, send its halves instead (in order).

    Used by upsert (a PointBatch, encoded once: its halves keep their bytes) and apply (a list of
    operations): whatever the writer estimated, the server's limit (or a proxy's) is what counts.
    """
    try:
        send(request)
    except TargetError as exc:
        if not is_too_large(exc.__cause__):
            raise
        halves = ops.halves(request)
        if halves is None:
            raise DataError(
                f"Qdrant rejected point {ops.first_point_id(request)!r} as too large: {exc.message}",
                fix="leave large columns out with --pg.columns, or raise the server's "
                    "service.max_request_size_mb.") from None
        for half in halves:
            split_when_too_large(half, send)


_TRANSIENT_STATUS = {429, 502, 503, 504}
_TRANSIENT_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
_TRANSPORT_NAMES = ("ConnectError", "ReadError", "WriteError", "RemoteProtocolError", "ReadTimeout",
                    "WriteTimeout", "ConnectTimeout", "PoolTimeout", "ConnectionResetError",
                    "ConnectionRefusedError", "BrokenPipeError", "IncompleteRead")


def _grpc_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            return code().name
        except Exception:
            return None
    return None


def is_too_large(exc: BaseException | None) -> bool:
    """The server refused the request for its size: splitting it (not retrying it) helps."""
    if exc is None:
        return False
    if getattr(exc, "status_code", None) == 413:
        return True
    text = f"{exc} {server_message(exc)}".lower()
    return any(s in text for s in ("too large", "larger than allowed", "larger than max", "message length",
                                   "max_request_size"))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: overload, restarts, dropped connections; never input or auth errors."""
    if is_too_large(exc):
        return False
    if isinstance(exc, RetryAfter) or type(exc).__name__ == "ResourceExhaustedResponse":  # qdrant-client's
        return True
    status = getattr(exc, "status_code", None)
    if status in _TRANSIENT_STATUS:
        return True
    if status is not None:
        return "please retry" in f"{exc}".lower()
    code = _grpc_code(exc)
    if code is not None:  # a server error that asks to be retried, whatever its code
        return code in _TRANSIENT_GRPC or "please retry" in f"{exc}".lower()
    chain: BaseException | None = exc
    seen: set[int] = set()
    while chain is not None and id(chain) not in seen:  # ResponseHandlingException wraps httpx's as .source
        seen.add(id(chain))
        if type(chain).__name__ in _TRANSPORT_NAMES or "please retry" in f"{chain}".lower():
            return True
        chain = getattr(chain, "source", None) or chain.__cause__ or chain.__context__
    return False


def server_message(exc: BaseException) -> str:
    """The server's own words: Qdrant's JSON status.error when there is one, else the exception text
    (qdrant-client's str() of an UnexpectedResponse cuts the body at 200 bytes)."""
    structured = getattr(exc, "structured", None)
    if callable(structured):
        try:
            error = structured().get("status", {}).get("error")
            if error:
                return str(error)
        except Exception:
            pass
        content = getattr(exc, "content", b"")
        if content:
            return content.decode("utf-8", "replace").strip()[:500]
    source = getattr(exc, "source", None)
    if source is not None:
        return f"{type(source).__name__}: {source}"
    code, details = _grpc_code(exc), getattr(exc, "details", None)
    if code and callable(details):  # grpc's str() is a multi-line repr named after its private class
        return f"{code}: {details() or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


# Strict mode's refusals (Qdrant's lib/collection/src/operations/verification): (words of the
# message, the limit it hit, the fix).
_STRICT_REFUSALS = (
    ('"upsert limit"', "upsert_max_batchsize", "lower --migration.batch-size to the limit above (pg2qdrant "
                                               "lowers it by itself when it can read the collection's strict mode)."),
    ('"update limit"', "upsert_max_batchsize", "lower --migration.batch-size to the limit above."),
    ('for "limit"', "max_query_limit", "raise the collection's strict_mode_config.max_query_limit, or lower the "
                                       "number of results asked for (verify: --verify.k)."),
    ("Index required but not found", "unindexed_filtering_update/retrieve",
     "create the payload index it names (--qdrant.payload-index COLUMN:TYPE, or PUT /collections/NAME/index), "
     "or allow unindexed filtering in the collection's strict_mode_config."),
    ("maximum number of payload indices", "max_payload_index_count",
     "delete an unused payload index, raise the collection's strict_mode_config.max_payload_index_count, or "
     "create fewer (--qdrant.auto-payload-index false, fewer --qdrant.payload-index)."),
    ("larger than rate limiter capacity", "write_rate_limit",
     "lower --migration.batch-size below the collection's write_rate_limit (points per minute)."),
)


def strict_mode_refusal(text: str) -> tuple[str, str] | None:
    """(the strict-mode limit, its fix) when ``text`` is a strict-mode refusal; None otherwise."""
    for words, limit, fix in _STRICT_REFUSALS:
        if words in text:
            return limit, fix
    return None


def translate_error(exc: Exception, what: str, address: TargetAddress) -> Exception:
    """Turn a qdrant-client/httpx/grpc exception into our error with the fix in it."""
    where = address.display()
    text = redaction.redact(server_message(exc)).strip()
    status = getattr(exc, "status_code", None)
    code = _grpc_code(exc)
    strict = strict_mode_refusal(text)
    if strict is not None:
        return InputError(f"Qdrant at {where} refused to {what}: the collection's strict mode ({strict[0]}): {text}",
                          fix=strict[1])
    if status in (401, 403) or code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return InputError(f"Qdrant at {where} rejected the request to {what} (HTTP {status or code}): {text}",
                          fix="check --qdrant.api-key (or QDRANT_API_KEY); it needs write access.")
    low = f"{type(exc).__name__} {text}".lower()
    if "certificate" in low or "ssl" in low:
        return TargetError(f"TLS failed with Qdrant at {where}: {text}",
                           fix="use the server's real host name and a trusted certificate, or pass "
                               "--skip-tls-verification if you accept an unverified connection.")
    if "timeout" in low or "timed out" in low or code == "DEADLINE_EXCEEDED":
        return TargetError(f"Qdrant at {where} did not answer in time (while trying to {what}): {text}",
                           fix="check the server's load and network; rerun the same command to resume.")
    if code == "UNAVAILABLE" or any(s in low for s in ("connecterror", "connection refused", "connect error",
                                                        "name or service not known", "failed to connect",
                                                        "nodename nor servname")):
        return TargetError(f"Cannot reach Qdrant at {where} (while trying to {what}): {text}",
                           fix="check --qdrant.url (host, port: 6334 is gRPC, 6333 is REST) and that "
                               "Qdrant is running and reachable from here.")
    detail = f" (HTTP {status})" if status else (f" (gRPC {code})" if code else "")
    return TargetError(f"Qdrant at {where} failed to {what}{detail}: {text}",
                       fix="see the server's message above (and Qdrant's log); once it is resolved, rerun the "
                           "same command: saved progress is resumed.")
