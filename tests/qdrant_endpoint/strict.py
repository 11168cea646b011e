"""Strict mode as a Qdrant server enforces it, for the subset the endpoint implements.

A collection's ``strict_mode_config`` (qdrant-client's StrictModeConfig) is kept by the
engine; when ``enabled`` is true, the requests are checked as Qdrant's
``lib/collection/src/operations/verification`` does, and refused with its words:

* filters on a key with no suitable payload index: ``unindexed_filtering_update=false``
  (delete, set/overwrite/delete/clear payload and delete vectors by filter) and
  ``unindexed_filtering_retrieve=false`` (count, scroll, query with a filter);
* ``upsert_max_batchsize`` (points of one upsert: "upsert limit"; of one update vectors:
  "update limit"), ``max_query_limit`` (scroll's and query's ``limit``),
  ``max_payload_index_count`` (creating an index when the collection has that many);
* ``write_rate_limit`` (per minute): a token bucket holding that many tokens, refilled at
  limit/60 per second; a write costs its points (ids for a delete by ids), 1 otherwise.

A violation is HTTP 400 "Bad request: <what>. Help: <fix>" (gRPC INVALID_ARGUMENT), as
Qdrant >= 1.13 answers (older servers: 403 "Forbidden: ..."); a rate limit is HTTP 429
"Rate limiting exceeded: Write rate limit exceeded: ..." with Retry-After (gRPC
RESOURCE_EXHAUSTED with ``retry-after`` metadata). Not enforced: the read rate limit,
timeouts, search parameters, payload/vector storage sizes, point counts, filter sizes.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from qdrant_client import models

UPDATE_SELECTORS = (models.DeleteOperation, models.SetPayloadOperation, models.OverwritePayloadOperation,
                    models.DeletePayloadOperation, models.ClearPayloadOperation, models.DeleteVectorsOperation)


class StrictModeError(Exception):
    """A strict-mode refusal: the engine turns it into ApiError (400, or 429 with Retry-After)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def _refuse(error: str, solution: str) -> StrictModeError:
    return StrictModeError(400, f"Bad request: {error}. Help: {solution}")


def check_limit(value: int | None, limit: int | None, name: str) -> None:
    if value is None or limit is None or value <= limit:
        return
    raise _refuse(f'Limit exceeded {value} > {limit} for "{name}"',
                  f'Reduce the "{name}" parameter to or below {limit}.')


class RateLimiter:
    """Qdrant's per-minute token bucket (capacity = the limit, refilled at limit/60 per second)."""

    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = float(per_minute)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def drain(self) -> None:
        """Tests: spend every token now."""
        with self.lock:
            self.tokens, self.stamp = 0.0, time.monotonic()

    def consume(self, cost: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if cost > self.capacity:
                raise StrictModeError(429, "Rate limiting exceeded: Write rate limit exceeded, request larger "
                                           "than rate limiter capacity, please try to split your request")
            if self.tokens < cost:
                wait = math.ceil((cost - self.tokens) / self.rate)
                raise StrictModeError(429, f"Rate limiting exceeded: Write rate limit exceeded: Operation "
                                           f"requires {cost} tokens but only {self.tokens:.1f} were available. "
                                           f"Retry after {wait}s", retry_after=wait)
            self.tokens -= cost


def _schemas_for(condition: models.FieldCondition) -> list[str]:
    """The index types that serve a field condition (Qdrant lists them in its refusal)."""
    match = condition.match
    if isinstance(match, models.MatchText):
        return ["text"]
    if isinstance(match, (models.MatchValue, models.MatchAny, models.MatchExcept)):
        value = getattr(match, "value", None)
        if value is None:
            values = getattr(match, "any", None) or getattr(match, "except_", None) or []
            value = values[0] if values else ""
        if isinstance(value, bool):
            return ["bool"]
        if isinstance(value, int):
            return ["integer"]
        return ["keyword", "uuid"]
    if isinstance(condition.range, models.DatetimeRange):
        return ["datetime"]
    if condition.range is not None:
        return ["integer", "float"]
    if condition.geo_radius is not None or condition.geo_bounding_box is not None or condition.geo_polygon is not None:
        return ["geo"]
    return ["keyword", "integer", "float", "bool", "datetime", "uuid", "text", "geo"]


def _conditions(flt: Any):
    if flt is None:
        return
    for part in (flt.must, flt.should, flt.must_not, getattr(flt.min_should, "conditions", None)):
        if part is None:
            continue
        for cond in part if isinstance(part, list) else [part]:
            if isinstance(cond, models.Filter):
                yield from _conditions(cond)
            elif isinstance(cond, models.NestedCondition):
                yield from _conditions(cond.nested.filter)
            else:
                yield cond


def _key_of(cond: Any) -> str | None:
    if isinstance(cond, models.FieldCondition):
        return cond.key
    inner = getattr(cond, "is_empty", None) or getattr(cond, "is_null", None)
    return getattr(inner, "key", None)


def check_filter(flt: Any, indexed: dict[str, str]) -> None:
    """Refuse a filter on a key without an index of a type that serves the condition."""
    for cond in _conditions(flt):
        key = _key_of(cond)
        if key is None:
            continue  # has_id, has_vector: no payload key
        schemas = _schemas_for(cond) if isinstance(cond, models.FieldCondition) else \
            ["keyword", "integer", "float", "bool", "datetime", "uuid", "text", "geo"]
        if indexed.get(key) not in schemas:
            raise _refuse(f'Index required but not found for "{key}" of one of the following types: '
                          f"[{', '.join(schemas)}]", "Create an index for this key or use a different filter.")


def update_filter(operation: Any) -> Any:
    """The filter an update operation selects its points by (None: by ids)."""
    if not isinstance(operation, UPDATE_SELECTORS):
        return None
    body = next(v for k, v in operation if v is not None)
    if isinstance(body, models.FilterSelector):
        return body.filter
    if isinstance(body, models.Filter):
        return body
    return getattr(body, "filter", None)


def write_cost(operation: Any, points: int | None) -> int:
    """Tokens a write takes: its points (ids of a delete by ids), else 1."""
    if points is not None:
        return max(1, points)
    if isinstance(operation, models.DeleteOperation):
        sel = operation.delete
        ids = sel if isinstance(sel, list) else getattr(sel, "points", None)
        if isinstance(ids, list):
            return max(1, len(ids))
    return 1
