"""FakeQdrant: a FAULT-INJECTING STAND-IN for a Qdrant server, for tests only. It is NOT Qdrant.

Why it exists: no Qdrant server binary can be installed on our machines, and even a real
server cannot be made to fail on command (a 429, a 503 from a proxy, a dropped connection,
a "Please retry", a request rejected as too large, a reply that comes too late). The retry,
split and stop-on-permanent-error logic of pg2qdrant (issue 4, "Faults") has to be tested
against exactly those failures, through the real qdrant-client, so this module speaks
enough of Qdrant's REST API (the JSON API on http; not gRPC) for pg2qdrant's server path
to run end to end against it, and fails when a test tells it to.

What it is: ``http.server`` + ``threading`` on 127.0.0.1 (a free port), serving the REST
paths qdrant-client 1.x calls for collections, payload indexes, upsert, retrieve, scroll,
count, delete, batch updates and query (brute force), with Qdrant's response envelope
``{"result": ..., "status": "ok", "time": ...}`` and Qdrant-like error bodies
``{"result": null, "status": {"error": "..."}, "time": ...}``. Points are kept in memory in
dicts exactly as sent (JSON parsed by Python's ``json``, which round-trips floats exactly).

What it is not: a search engine or a faithful model of Qdrant. It does not normalize Cosine
vectors, does not round to float32/float16/uint8, builds no index (``indexed_vectors_count``
is a rule of thumb, overridable), has no WAL, snapshots, shards, aliases, gRPC or TLS, and
supports only the filter conditions listed in :func:`_condition_matches` (others are
rejected loudly with a 400 naming the stand-in). Anything it does not serve answers 404
with ``fake_qdrant: no route for ...`` so a missing piece is obvious.

Use::

    from fake_qdrant import FakeQdrant, Respond, Drop, Delay, UPSERT   # tests/ is on sys.path

    with FakeQdrant() as fake:                      # fake.url == "http://127.0.0.1:PORT"
        fake.faults.add(UPSERT, "PUT", times=2, action=Respond(503, "Service unavailable"))
        client = fake.client()                      # QdrantClient(prefer_grpc=False, ...)
        ...                                         # run the code under test
        assert len(fake.seen(UPSERT, "PUT")) == 3   # two failures, then the retry that worked
        assert fake.points("docs")[1]["payload"] == {...}
"""

from __future__ import annotations

import bisect
import io
import json
import math
import queue
import re
import socket
import struct
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "FakeQdrant", "FaultPlan", "Fault", "SeenRequest", "Action", "Respond", "Drop", "Delay",
    "rate_limited", "bad_gateway", "service_unavailable", "gateway_timeout", "please_retry",
    "wrong_input", "server_error", "too_large",
    "UPSERT", "POINTS", "BATCH", "COUNT", "SCROLL", "QUERY", "DELETE_POINTS", "COLLECTION", "INDEX",
]

# Path patterns for FaultPlan.add / FakeQdrant.seen (matched with re.search on the URL path).
POINTS = r"^/collections/[^/]+/points$"        # PUT = upsert, POST = retrieve by ids
UPSERT = POINTS                                  # use with method "PUT"
BATCH = r"^/collections/[^/]+/points/batch$"
COUNT = r"^/collections/[^/]+/points/count$"
SCROLL = r"^/collections/[^/]+/points/scroll$"
QUERY = r"^/collections/[^/]+/points/query$"
DELETE_POINTS = r"^/collections/[^/]+/points/delete$"
COLLECTION = r"^/collections/[^/]+$"             # GET info, PUT create, PATCH update, DELETE
INDEX = r"^/collections/[^/]+/index$"

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024     # Qdrant's service.max_request_size_mb default
_PUBLIC_PATHS = ("/", "/healthz", "/readyz", "/livez")  # Qdrant does not ask for a key on these


# ---------------------------------------------------------------------------------------
# Fault actions
# ---------------------------------------------------------------------------------------

class Action:
    """What the stand-in does instead of (or after) serving a request.

    ``after_apply=True`` serves the request first (a write is stored) and then fails:
    the client sees an error for a write that did happen (lost acknowledgement).
    """

    after_apply: bool = False

    def describe(self) -> str:
        return type(self).__name__


@dataclass
class Respond(Action):
    """Answer with ``status`` and a Qdrant-like error body carrying ``message``.

    ``body`` (bytes) replaces the JSON body entirely (e.g. a proxy's HTML page);
    ``retry_after`` sets a Retry-After header (qdrant-client then raises
    ResourceExhaustedResponse for a 429 instead of UnexpectedResponse).
    """

    status: int
    message: str = ""
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    after_apply: bool = False

    def describe(self) -> str:
        return f"Respond({self.status}, {self.message!r})"


@dataclass
class Drop(Action):
    """Close the connection without any response.

    reset=False: orderly close (FIN); httpx raises RemoteProtocolError
    ("Server disconnected without sending a response.").
    reset=True: abortive close (RST); httpx raises ReadError ("Connection reset by peer").
    """

    reset: bool = False
    after_apply: bool = False

    def describe(self) -> str:
        return f"Drop(reset={self.reset}, after_apply={self.after_apply})"


@dataclass
class Delay(Action):
    """Sleep ``seconds`` (interrupted when the stand-in stops), then do ``then``
    (another action) or, when ``then`` is None, serve the request normally.
    With ``after_apply=True`` the write is stored before the sleep."""

    seconds: float
    then: Action | None = None
    after_apply: bool = False

    def describe(self) -> str:
        return f"Delay({self.seconds}, then={self.then.describe() if self.then else None})"


def rate_limited(retry_after: int | None = None, message: str = "Rate limiting exceeded: Write rate limit exceeded, retry later") -> Respond:
    """429 like Qdrant's strict-mode rate limiter (with Retry-After when given)."""
    return Respond(429, message, retry_after=retry_after)


def bad_gateway() -> Respond:
    """502 as a reverse proxy in front of Qdrant sends it (HTML body, not Qdrant JSON)."""
    return Respond(502, body=b"<html><head><title>502 Bad Gateway</title></head><body>"
                             b"<center><h1>502 Bad Gateway</h1></center></body></html>",
                   content_type="text/html")


def service_unavailable(message: str = "Service unavailable: No active replica for shard 0, please retry") -> Respond:
    """503 like Qdrant's ShardUnavailable error."""
    return Respond(503, message)


def gateway_timeout() -> Respond:
    """504 as a reverse proxy sends it when Qdrant answers too late."""
    return Respond(504, body=b"<html><head><title>504 Gateway Time-out</title></head><body>"
                             b"<center><h1>504 Gateway Time-out</h1></center></body></html>",
                   content_type="text/html")


def please_retry(status: int = 500) -> Respond:
    """A server error whose message asks to retry (status 500 unless told)."""
    return Respond(status, "Service internal error: Operation was interrupted by a concurrent "
                           "collection update. Please retry")


def wrong_input(message: str = "Vector dimension error: expected dim: 4, got 3") -> Respond:
    """A permanent 400 "Wrong input: ..." like Qdrant's BadInput."""
    return Respond(400, f"Wrong input: {message}")


def server_error(message: str = "Service internal error: No space left on device") -> Respond:
    """A permanent-looking 500 (no "retry" in the message)."""
    return Respond(500, message)


def too_large(size: int = 40_000_000, limit: int = DEFAULT_MAX_REQUEST_BYTES, status: int = 400) -> Respond:
    """The rejection of an oversized body, whatever its real size (see max_request_bytes)."""
    return Respond(status, _too_large_message(size, limit))


def _too_large_message(size: int, limit: int) -> str:
    # Qdrant (actix-web-validator around actix's JsonPayloadError::Overflow), status 400.
    return f"Payload error: JSON payload ({size} bytes) is larger than allowed (limit: {limit} bytes)"


# ---------------------------------------------------------------------------------------
# Fault plan and request log
# ---------------------------------------------------------------------------------------

@dataclass
class SeenRequest:
    """One request as the stand-in received it (faulted ones included)."""

    method: str
    path: str
    query: dict[str, str]
    size: int                      # body bytes
    headers: dict[str, str]        # lower-case names
    ids: list | None = None        # point ids of an upsert (PUT points) or of batch upserts
    status: int | None = None      # HTTP status sent; None when dropped
    outcome: str = "pending"       # ok | error | fault | dropped | unauthorized
    fault: "Fault | None" = None
    body: Any = None               # parsed JSON, only when FakeQdrant(keep_bodies=True)

    @property
    def collection(self) -> str | None:
        m = re.match(r"^/collections/([^/]+)", self.path)
        return m.group(1) if m else None


@dataclass
class Fault:
    path: str                                   # regex, re.search on the URL path
    method: str | None                          # None: any method
    action: Action
    times: int | None = 1                       # None: every matching request
    skip: int = 0                               # let this many matching requests through first
    when: Callable[[SeenRequest], bool] | None = None
    matched: int = 0                            # matching requests seen (skipped ones included)
    fired: int = 0                              # times the action was taken

    def _wants(self, req: SeenRequest) -> bool:
        if self.method is not None and self.method.upper() != req.method:
            return False
        if not re.search(self.path, req.path):
            return False
        if self.when is not None and not self.when(req):
            return False
        self.matched += 1
        if self.matched <= self.skip:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultPlan:
    """Faults to inject; the first matching, not exhausted fault (in order added) fires."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, path: str, method: str | None = None, *, action: Action, times: int | None = 1,
            skip: int = 0, when: Callable[[SeenRequest], bool] | None = None) -> Fault:
        """Fail ``times`` requests (None: all) whose method and path match, after ``skip``.

        ``when(req)`` narrows further (req.size, req.ids, req.query, req.headers are set).
        """
        re.compile(path)
        fault = Fault(path, method, action, times, skip, when)
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __iter__(self):
        with self._lock:
            return iter(list(self._faults))

    def _pick(self, req: SeenRequest) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault._wants(req):
                    return fault
        return None


# ---------------------------------------------------------------------------------------
# In-memory store
# ---------------------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"Not found: Collection `{name}` doesn't exist!")


def _point_key(value: Any) -> int | str:
    """Qdrant's ExtendedPointId: an unsigned 64-bit integer or a UUID (canonical form)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 64:
        return value
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise ApiError(400, f"Format error in JSON body: value {value!r} is not a valid point ID, "
                        "valid values are either an unsigned integer or a UUID")


def _sort_key(key: int | str) -> tuple:
    return (0, key, "") if isinstance(key, int) else (1, 0, key)


@dataclass
class Point:
    id: int | str
    vectors: dict[str, Any]        # "" for the unnamed vector; values exactly as sent
    payload: dict[str, Any]
    version: int


DEFAULT_HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "max_indexing_threads": 0,
                "on_disk": False}
DEFAULT_OPTIMIZERS = {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000, "default_segment_number": 0,
                      "max_segment_size": None, "memmap_threshold": None, "indexing_threshold": 10000,
                      "flush_interval_sec": 5, "max_optimization_threads": None}
DISTANCES = ("Cosine", "Dot", "Euclid", "Manhattan")


class Collection:
    def __init__(self, name: str, body: dict):
        self.name = name
        vectors = body.get("vectors")
        self.unnamed = isinstance(vectors, dict) and "size" in vectors
        dense = {"": vectors} if self.unnamed else dict(vectors or {})
        for vname, params in dense.items():
            if not isinstance(params, dict) or not isinstance(params.get("size"), int) or params["size"] <= 0:
                raise ApiError(400, f"Wrong input: bad vector params for {vname!r}: {params!r}")
            if params.get("distance") not in DISTANCES:
                raise ApiError(400, f"Format error in JSON body: unknown variant `{params.get('distance')}`, "
                                    f"expected one of {', '.join(f'`{d}`' for d in DISTANCES)}")
        self.dense: dict[str, dict] = dense
        self.sparse: dict[str, dict] = dict(body.get("sparse_vectors") or {})
        for vname in self.sparse:
            if vname in self.dense:
                raise ApiError(400, f"Wrong input: vector name {vname!r} is used by a dense and a sparse vector")
        self.hnsw = {**DEFAULT_HNSW, **(body.get("hnsw_config") or {})}
        self.optimizers = {**DEFAULT_OPTIMIZERS, **(body.get("optimizers_config") or {})}
        self.quantization = body.get("quantization_config")
        self.metadata = dict(body.get("metadata") or {}) or None
        self.params_extra = {k: body[k] for k in ("shard_number", "replication_factor", "write_consistency_factor",
                                                  "on_disk_payload", "sharding_method") if body.get(k) is not None}
        self.created_body = body
        self.points: dict[int | str, Point] = {}
        self.payload_schema: dict[str, dict] = {}
        self._sorted: list | None = None
        # Test knobs: override what GET /collections/{name} reports.
        self.status = "green"
        self.indexed_vectors_count: int | None = None

    # -- info ------------------------------------------------------------------------
    def info(self) -> dict:
        vectors = self.dense[""] if self.unnamed else self.dense
        indexed = self.indexed_vectors_count
        if indexed is None:  # rule of thumb: everything is indexed once HNSW is on (m > 0)
            indexed = sum(1 for p in self.points.values() for n in p.vectors if n in self.dense) \
                if self.hnsw.get("m", 16) > 0 else 0
        for key, schema in self.payload_schema.items():
            schema["points"] = sum(1 for p in self.points.values() if _values_at(p.payload, key))
        return {
            "status": self.status,
            "optimizer_status": "ok",
            "indexed_vectors_count": indexed,
            "points_count": len(self.points),
            "segments_count": 1,
            "config": {
                "params": {"vectors": vectors, "shard_number": 1, "replication_factor": 1,
                           "write_consistency_factor": 1, "on_disk_payload": True,
                           **self.params_extra, "sparse_vectors": self.sparse or None},
                "hnsw_config": self.hnsw,
                "optimizer_config": self.optimizers,
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                "quantization_config": self.quantization,
                "metadata": self.metadata,
            },
            "payload_schema": self.payload_schema,
        }

    def update(self, body: dict) -> None:
        if body.get("hnsw_config"):
            self.hnsw.update(body["hnsw_config"])
        if body.get("optimizers_config"):
            self.optimizers.update(body["optimizers_config"])
        if body.get("quantization_config") is not None:
            self.quantization = body["quantization_config"]
        for vname, diff in (body.get("vectors") or {}).items():
            if vname not in self.dense:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {vname}")
            self.dense[vname].update({k: v for k, v in diff.items() if v is not None})
        for vname, diff in (body.get("sparse_vectors") or {}).items():
            if vname not in self.sparse:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {vname}")
            self.sparse[vname].update(diff or {})
        if body.get("params"):
            self.params_extra.update({k: v for k, v in body["params"].items() if v is not None})
        if body.get("metadata"):
            self.metadata = {**(self.metadata or {}), **body["metadata"]}

    # -- points ----------------------------------------------------------------------
    def sorted_keys(self) -> list:
        if self._sorted is None:
            self._sorted = sorted(self.points, key=_sort_key)
        return self._sorted

    def check_vectors(self, vector: Any, *, partial: bool = False) -> dict[str, Any]:
        """Validate a point's ``vector`` field like Qdrant; return {name: value as sent}."""
        if vector is None:
            return {}
        if isinstance(vector, list):
            vectors = {"": vector}
        elif isinstance(vector, dict) and not ("indices" in vector and "values" in vector):
            vectors = vector
        else:
            raise ApiError(400, "Wrong input: Conversion between sparse and regular vectors failed")
        for name, value in vectors.items():
            if name in self.dense:
                params = self.dense[name]
                if isinstance(value, dict):
                    raise ApiError(400, "Wrong input: Conversion between sparse and regular vectors failed")
                if not isinstance(value, list):
                    raise ApiError(400, f"Format error in JSON body: invalid vector {name!r}")
                rows = value if params.get("multivector_config") else [value]
                for row in rows:
                    if not isinstance(row, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                            for x in row):
                        raise ApiError(400, f"Format error in JSON body: invalid vector {name!r}")
                    if len(row) != params["size"]:
                        raise ApiError(400, f"Wrong input: Vector dimension error: expected dim: {params['size']}, "
                                            f"got {len(row)}")
            elif name in self.sparse:
                if not (isinstance(value, dict) and isinstance(value.get("indices"), list)
                        and isinstance(value.get("values"), list)):
                    raise ApiError(400, "Wrong input: Conversion between sparse and regular vectors failed")
                if len(value["indices"]) != len(value["values"]):
                    raise ApiError(422, "Validation error in JSON body: [points[0].vector.indices: "
                                        "must be the same length as values]")
                if len(set(value["indices"])) != len(value["indices"]):
                    raise ApiError(422, "Validation error in JSON body: [indices: must be unique]")
            else:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {name}")
        if not partial and self.unnamed and "" not in vectors:
            raise ApiError(400, "Wrong input: Missing vector: the collection has an unnamed vector")
        return vectors

    def matching(self, flt: dict | None) -> list:
        if not flt:
            return self.sorted_keys()
        return [k for k in self.sorted_keys() if _filter_matches(self.points[k], flt)]

    def selected(self, body: dict) -> list:
        """PointsSelector: {"points": [...]} or {"filter": {...}} (keys that exist)."""
        if body.get("points") is not None:
            keys = [_point_key(i) for i in body["points"]]
            return [k for k in keys if k in self.points]
        if "filter" in body:
            return list(self.matching(body["filter"]))
        raise ApiError(400, "Format error in JSON body: expected `points` or `filter`")

    def record(self, key, with_payload: Any, with_vector: Any, score: float | None = None) -> dict:
        point = self.points[key]
        out: dict[str, Any] = {"id": point.id}
        if score is not None:
            out["version"] = point.version
            out["score"] = score
        out["payload"] = _select_payload(point.payload, with_payload)
        out["vector"] = self._select_vectors(point.vectors, with_vector)
        return out

    def _select_vectors(self, vectors: dict, with_vector: Any) -> Any:
        if not with_vector:
            return None
        if isinstance(with_vector, list):
            vectors = {n: v for n, v in vectors.items() if n in with_vector}
        if self.unnamed and set(vectors) <= {""}:
            return vectors.get("")
        return vectors


def _select_payload(payload: dict, with_payload: Any) -> dict | None:
    if with_payload is None or with_payload is True:
        return payload
    if with_payload is False:
        return None
    if isinstance(with_payload, list):
        return {k: v for k, v in payload.items() if k in with_payload}
    if isinstance(with_payload, dict):
        if "include" in with_payload:
            keep = with_payload["include"] or []
            return {k: v for k, v in payload.items() if k in keep}
        if "exclude" in with_payload:
            drop = with_payload["exclude"] or []
            return {k: v for k, v in payload.items() if k not in drop}
    raise ApiError(400, f"fake_qdrant does not support with_payload={with_payload!r}")


# -- filters (the subset the stand-in understands) ------------------------------------

def _values_at(payload: Any, key: str) -> list:
    """Values at a dotted payload path ("a.b", "a[].b"); arrays are flattened like Qdrant."""
    current = [payload]
    for part in key.split("."):
        flat = part.endswith("[]")
        name = part[:-2] if flat else part
        nxt = []
        for value in current:
            if isinstance(value, dict) and name in value:
                nxt.append(value[name])
        current = []
        for value in nxt:
            if isinstance(value, list):
                current.extend(value)
            else:
                current.append(value)
    return current


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def _filter_matches(point: Point, flt: dict) -> bool:
    must = flt.get("must") or []
    should = flt.get("should") or []
    must_not = flt.get("must_not") or []
    must = [must] if isinstance(must, dict) else must
    should = [should] if isinstance(should, dict) else should
    must_not = [must_not] if isinstance(must_not, dict) else must_not
    if flt.get("min_should"):
        raise ApiError(400, "fake_qdrant does not support min_should")
    if not all(_condition_matches(point, c) for c in must):
        return False
    if should and not any(_condition_matches(point, c) for c in should):
        return False
    return not any(_condition_matches(point, c) for c in must_not)


def _condition_matches(point: Point, cond: dict) -> bool:
    """Supported: nested filters (must/should/must_not), has_id, has_vector, is_empty,
    is_null, and field conditions with match {value | any | except}, range and values_count."""
    if any(k in cond for k in ("must", "should", "must_not")):
        return _filter_matches(point, cond)
    if "has_id" in cond:
        return point.id in {_point_key(i) for i in cond["has_id"]}
    if "has_vector" in cond:
        return cond["has_vector"] in point.vectors
    if "is_empty" in cond:
        values = _values_at(point.payload, cond["is_empty"]["key"])
        return all(v is None for v in values) or not values
    if "is_null" in cond:
        values = _values_at(point.payload, cond["is_null"]["key"])
        return any(v is None for v in values)
    if "key" in cond:
        values = [v for v in _values_at(point.payload, cond["key"]) if v is not None]
        if cond.get("match") is not None:
            match = cond["match"]
            if "value" in match:
                return any(_same(v, match["value"]) for v in values)
            if "any" in match:
                return any(_same(v, m) for v in values for m in match["any"])
            if "except" in match:
                return bool(values) and not any(_same(v, m) for v in values for m in match["except"])
            raise ApiError(400, f"fake_qdrant does not support match {match!r}")
        if cond.get("range") is not None:
            rng = cond["range"]
            nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]

            def ok(v: float) -> bool:
                return ((rng.get("gt") is None or v > rng["gt"]) and (rng.get("gte") is None or v >= rng["gte"])
                        and (rng.get("lt") is None or v < rng["lt"]) and (rng.get("lte") is None or v <= rng["lte"]))
            return any(ok(v) for v in nums)
        if cond.get("values_count") is not None:
            rng, n = cond["values_count"], len(values)
            return ((rng.get("gt") is None or n > rng["gt"]) and (rng.get("gte") is None or n >= rng["gte"])
                    and (rng.get("lt") is None or n < rng["lt"]) and (rng.get("lte") is None or n <= rng["lte"]))
    raise ApiError(400, f"fake_qdrant does not support the filter condition {cond!r}")


# -- scoring (brute force) --------------------------------------------------------------

def _score(distance: str, a: list, b: list) -> float:
    if distance == "Cosine":
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else 0.0
    if distance == "Dot":
        return sum(x * y for x, y in zip(a, b))
    if distance == "Euclid":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    return sum(abs(x - y) for x, y in zip(a, b))  # Manhattan


def _sparse_score(q: dict, v: dict) -> float | None:
    lookup = dict(zip(v["indices"], v["values"]))
    common = [(val, lookup[i]) for i, val in zip(q["indices"], q["values"]) if i in lookup]
    return sum(a * b for a, b in common) if common else None


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------

class FakeQdrant:
    """A fault-injecting stand-in for a Qdrant server (REST only), in a background thread.

    Parameters:
      api_key            require this key (``api-key`` header or ``Authorization: Bearer``);
                         401 "Must provide an API key ..." / "Invalid API key or JWT" otherwise
      max_request_bytes  bodies larger than this are rejected like Qdrant does
                         (400 "Payload error: JSON payload (N bytes) is larger than allowed ...")
      too_large_status   status for that rejection: 400 like Qdrant, or 413 like a proxy
      apply_delay        seconds before a write is applied; with wait=false the write is
                         acknowledged at once and applied later (in order); wait=true waits
      keep_bodies        keep every request's parsed JSON body in the log (memory!)
      version            what GET / reports
      tls                an ssl.SSLContext: serve https (self-signed certificates in tests)
    """

    def __init__(self, *, api_key: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 too_large_status: int = 400, apply_delay: float = 0.0, keep_bodies: bool = False,
                 version: str | None = None, tls=None):
        self.tls = tls  # an ssl.SSLContext (server side): serve https, to test certificate checks
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.too_large_status = too_large_status
        self.apply_delay = apply_delay
        self.keep_bodies = keep_bodies
        self.version = version or _client_version()
        self.faults = FaultPlan()
        self.requests: list[SeenRequest] = []
        self.collections: dict[str, Collection] = {}
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.RLock()               # the store
        self._op_id = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self) -> "FakeQdrant":
        """Start serving (again, on the same port and with the same data after stop())."""
        if self._server is not None:
            return self
        self._stopping.clear()
        while True:
            server = _Server((self.host, self.port), _Handler)
            if server.server_address[1] != 6334:  # 6334 would make pg2qdrant pick gRPC
                break
            server.server_close()
        server.fake = self
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-qdrant-{self.port}", daemon=True)
        self._thread.start()
        self._queue = queue.Queue()
        self._worker = threading.Thread(target=self._apply_worker, args=(self._queue,),
                                        name=f"fake-qdrant-apply-{self.port}", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop serving: new connections are refused, open ones are closed, sleeps end.
        The stored data stays (start() again to simulate a restart)."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._queue is not None:
            self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = self._worker = self._queue = None

    def __enter__(self) -> "FakeQdrant":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def client(self, **kwargs: Any):
        """A qdrant-client QdrantClient for this stand-in (REST; extra kwargs pass through)."""
        from qdrant_client import QdrantClient
        options: dict[str, Any] = dict(host=self.host, port=self.port, prefer_grpc=False, https=False,
                                       check_compatibility=False, api_key=self.api_key)
        options.update(kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
            return QdrantClient(**options)

    # -- what tests look at ----------------------------------------------------------
    def seen(self, path: str | None = None, method: str | None = None) -> list[SeenRequest]:
        """Requests received (faulted ones included), optionally by path regex and method."""
        return [r for r in list(self.requests)
                if (method is None or r.method == method.upper()) and (path is None or re.search(path, r.path))]

    def upserts(self, collection: str | None = None) -> list[SeenRequest]:
        """Upsert requests (PUT /collections/{c}/points), with .ids, .size, .status, .outcome."""
        return [r for r in self.seen(UPSERT, "PUT") if collection is None or r.collection == collection]

    def clear_log(self) -> None:
        self.requests.clear()

    def points(self, collection: str) -> dict[Any, dict]:
        """{id: {"vector": {name: value}, "payload": {...}}} as stored (unnamed vector under "")."""
        with self._lock:
            coll = self.collections[collection]
            return {k: {"vector": dict(p.vectors), "payload": p.payload} for k, p in coll.points.items()}

    def collection(self, name: str) -> Collection:
        return self.collections[name]

    # -- writes ----------------------------------------------------------------------
    def _next_op(self) -> int:
        self._op_id += 1
        return self._op_id

    def _commit(self, name: str, apply: Callable[[Collection, int], None], wait: bool) -> dict:
        """Apply a validated write now, or (apply_delay > 0) through the ordered queue."""
        with self._lock:
            op_id = self._next_op()
            if self.apply_delay <= 0 or self._queue is None:
                apply(self._get(name), op_id)
                return {"operation_id": op_id, "status": "completed" if wait else "acknowledged"}
            done = threading.Event()
            self._queue.put((name, apply, op_id, done))
        if wait:
            done.wait()
            return {"operation_id": op_id, "status": "completed"}
        return {"operation_id": op_id, "status": "acknowledged"}

    def _apply_worker(self, q: queue.Queue) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            name, apply, op_id, done = item
            # Returns early when stopping: what was acknowledged is applied (Qdrant's WAL would replay it).
            self._stopping.wait(self.apply_delay)
            with self._lock:
                coll = self.collections.get(name)
                if coll is not None:
                    try:
                        apply(coll, op_id)
                    except ApiError:
                        pass
            done.set()

    def _get(self, name: str) -> Collection:
        coll = self.collections.get(name)
        if coll is None:
            raise _not_found(name)
        return coll

    # -- request handling (called by _Handler) ---------------------------------------
    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        wait = query.get("wait", "false").lower() == "true"
        if method == "GET" and not parts:
            return 200, {"title": "qdrant - vector search engine (fake_qdrant stand-in)",
                         "version": self.version, "commit": "fake_qdrant"}
        if method == "GET" and parts in (["healthz"], ["livez"], ["readyz"]):
            return 200, "healthz check passed"
        if parts == ["aliases"] and method == "GET":
            return 200, _ok({"aliases": []})
        if not parts or parts[0] != "collections":
            raise ApiError(404, f"fake_qdrant: no route for {method} {path}")
        if len(parts) == 1 and method == "GET":
            with self._lock:
                return 200, _ok({"collections": [{"name": n} for n in self.collections]})
        name = parts[1] if len(parts) > 1 else ""
        rest = parts[2:]
        with self._lock:
            if not rest:
                return self._collection_op(method, name, body)
            if rest == ["exists"] and method == "GET":
                return 200, _ok({"exists": name in self.collections})
            if rest == ["aliases"] and method == "GET":
                self._get(name)
                return 200, _ok({"aliases": []})
            if rest == ["index"] and method == "PUT":
                return 200, _ok(self._create_index(name, body, wait))
            if len(rest) == 2 and rest[0] == "index" and method == "DELETE":
                self._get(name).payload_schema.pop(rest[1], None)
                return 200, _ok({"operation_id": self._next_op(), "status": "completed"})
        if rest == ["points"] and method == "PUT":
            return 200, _ok(self._upsert(name, body, wait))
        with self._lock:
            if rest == ["points"] and method == "POST":
                return 200, _ok(self._retrieve(name, body))
            if len(rest) == 2 and rest[0] == "points" and method == "GET" and rest[1] not in ("count", "scroll"):
                coll = self._get(name)
                key = _point_key(int(rest[1]) if rest[1].isdigit() else rest[1])
                if key not in coll.points:
                    raise ApiError(404, f"Not found: No point with id {rest[1]} found")
                return 200, _ok(coll.record(key, True, True))
            if rest == ["points", "count"] and method == "POST":
                coll = self._get(name)
                return 200, _ok({"count": len(coll.matching((body or {}).get("filter")))})
            if rest == ["points", "scroll"] and method == "POST":
                return 200, _ok(self._scroll(name, body or {}))
            if rest == ["points", "query"] and method == "POST":
                return 200, _ok(self._query(name, body or {}))
        ops = {
            ("points", "delete"): "delete",
            ("points", "payload"): "set_payload" if method == "POST" else "overwrite_payload",
            ("points", "payload", "delete"): "delete_payload",
            ("points", "payload", "clear"): "clear_payload",
            ("points", "vectors"): "update_vectors",
            ("points", "vectors", "delete"): "delete_vectors",
        }
        op = ops.get(tuple(rest))
        if op and method in ("POST", "PUT"):
            if op == "update_vectors" and method != "PUT" or op == "overwrite_payload" and method != "PUT":
                raise ApiError(404, f"fake_qdrant: no route for {method} {path}")
            return 200, _ok(self._update(name, {op: body or {}}, wait))
        if rest == ["points", "batch"] and method == "POST":
            return 200, _ok([self._update(name, operation, wait) for operation in (body or {}).get("operations", [])])
        raise ApiError(404, f"fake_qdrant: no route for {method} {path}")

    def _collection_op(self, method: str, name: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            return 200, _ok(self._get(name).info())
        if method == "PUT":
            if name in self.collections:
                raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
            self.collections[name] = Collection(name, body or {})
            return 200, _ok(True)
        if method == "PATCH":
            self._get(name).update(body or {})
            return 200, _ok(True)
        if method == "DELETE":
            return 200, _ok(self.collections.pop(name, None) is not None)
        raise ApiError(405, f"fake_qdrant: method {method} not allowed")

    def _create_index(self, name: str, body: dict, wait: bool) -> dict:
        coll = self._get(name)
        schema = body.get("field_schema")
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if kind not in ("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid"):
            raise ApiError(400, f"Format error in JSON body: unknown field schema {schema!r}")
        entry: dict[str, Any] = {"data_type": kind, "points": 0}
        if isinstance(schema, dict):
            entry["params"] = schema
        coll.payload_schema[body["field_name"]] = entry
        return {"operation_id": self._next_op(), "status": "completed" if wait else "acknowledged"}

    def _upsert(self, name: str, body: dict, wait: bool) -> dict:
        return self._update(name, {"upsert": body}, wait)

    def _update(self, name: str, operation: dict, wait: bool) -> dict:
        """One update operation (as in a batch): validate now, then commit."""
        if not isinstance(operation, dict) or len(operation) != 1:
            raise ApiError(400, f"Format error in JSON body: bad update operation {operation!r}")
        (kind, body), = operation.items()
        body = body or {}
        with self._lock:
            coll = self._get(name)
            if kind == "upsert":
                points = _points_of(body)
                checked = []
                for pt in points:
                    key = _point_key(pt.get("id"))
                    vectors = coll.check_vectors(pt.get("vector"))
                    payload = pt.get("payload") or {}
                    if not isinstance(payload, dict):
                        raise ApiError(400, "Format error in JSON body: payload must be a JSON object")
                    checked.append((key, vectors, payload))

                def apply(c: Collection, op_id: int) -> None:
                    for key, vectors, payload in checked:
                        if key not in c.points:
                            c._sorted = None
                        c.points[key] = Point(key, vectors, payload, op_id)
            elif kind == "delete":
                selector = body

                def apply(c: Collection, op_id: int) -> None:
                    for key in c.selected(selector):
                        c.points.pop(key, None)
                    c._sorted = None
                coll.selected(selector)  # validate now
            elif kind in ("set_payload", "overwrite_payload"):
                if not isinstance(body.get("payload"), dict):
                    raise ApiError(400, "Format error in JSON body: missing field `payload`")
                if body.get("key"):
                    raise ApiError(400, "fake_qdrant does not support set_payload with key")
                coll.selected(body)

                def apply(c: Collection, op_id: int, body=body, kind=kind) -> None:
                    for key in c.selected(body):
                        p = c.points[key]
                        p.payload = dict(body["payload"]) if kind == "overwrite_payload" \
                            else {**p.payload, **body["payload"]}
                        p.version = op_id
            elif kind == "delete_payload":
                coll.selected(body)

                def apply(c: Collection, op_id: int, body=body) -> None:
                    for key in c.selected(body):
                        p = c.points[key]
                        p.payload = {k: v for k, v in p.payload.items() if k not in body.get("keys", [])}
                        p.version = op_id
            elif kind == "clear_payload":
                coll.selected(body)

                def apply(c: Collection, op_id: int, body=body) -> None:
                    for key in c.selected(body):
                        c.points[key].payload = {}
                        c.points[key].version = op_id
            elif kind == "update_vectors":
                updates = []
                for pv in body.get("points") or []:
                    key = _point_key(pv.get("id"))
                    if key not in coll.points:
                        raise ApiError(404, f"Not found: No point with id {pv.get('id')} found")
                    updates.append((key, coll.check_vectors(pv.get("vector"), partial=True)))

                def apply(c: Collection, op_id: int) -> None:
                    for key, vectors in updates:
                        if key in c.points:
                            c.points[key].vectors.update(vectors)
                            c.points[key].version = op_id
            elif kind == "delete_vectors":
                names = body.get("vector") or []
                for n in names:
                    if n not in coll.dense and n not in coll.sparse:
                        raise ApiError(400, f"Wrong input: Not existing vector name error: {n}")
                coll.selected(body)

                def apply(c: Collection, op_id: int, body=body) -> None:
                    for key in c.selected(body):
                        p = c.points[key]
                        p.vectors = {n: v for n, v in p.vectors.items() if n not in names}
                        p.version = op_id
            else:
                raise ApiError(400, f"fake_qdrant does not support the update operation {kind!r}")
        return self._commit(name, apply, wait)

    def _retrieve(self, name: str, body: dict) -> list:
        coll = self._get(name)
        out = []
        for pid in body.get("ids") or []:
            key = _point_key(pid)
            if key in coll.points:
                out.append(coll.record(key, body.get("with_payload", True), body.get("with_vector", False)))
        return out

    def _scroll(self, name: str, body: dict) -> dict:
        coll = self._get(name)
        if body.get("order_by"):
            raise ApiError(400, "fake_qdrant does not support order_by")
        keys = coll.matching(body.get("filter"))
        start = 0
        if body.get("offset") is not None:
            start = bisect.bisect_left([_sort_key(k) for k in keys], _sort_key(_point_key(body["offset"])))
        limit = body.get("limit") or 10
        page = keys[start:start + limit]
        nxt = keys[start + limit] if start + limit < len(keys) else None
        return {"points": [coll.record(k, body.get("with_payload", True), body.get("with_vector", False))
                           for k in page], "next_page_offset": nxt}

    def _query(self, name: str, body: dict) -> dict:
        coll = self._get(name)
        if body.get("prefetch"):
            raise ApiError(400, "fake_qdrant does not support prefetch")
        query = body.get("query")
        if isinstance(query, dict) and "nearest" in query:
            query = query["nearest"]
        using = body.get("using") or ""
        limit = body.get("limit") or 10
        offset = body.get("offset") or 0
        with_payload = body.get("with_payload", False)
        with_vector = body.get("with_vector", False)
        keys = coll.matching(body.get("filter"))
        if query is None:
            return {"points": [coll.record(k, with_payload, with_vector, 0.0) for k in keys[offset:offset + limit]]}
        if isinstance(query, (int, str)) and not isinstance(query, bool):
            key = _point_key(query)
            if key not in coll.points:
                raise ApiError(404, f"Not found: No point with id {query} found")
            query = coll.points[key].vectors.get(using)
            if query is None:
                raise ApiError(400, f"Wrong input: point {key} has no vector {using!r}")
            keys = [k for k in keys if k != key]
        scored = []
        if isinstance(query, dict) and "indices" in query:
            if using not in coll.sparse:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {using}")
            for k in keys:
                v = coll.points[k].vectors.get(using)
                s = _sparse_score(query, v) if v is not None else None
                if s is not None:
                    scored.append((s, k))
            scored.sort(key=lambda t: -t[0])
        elif isinstance(query, list) and all(isinstance(x, (int, float)) for x in query):
            if using not in coll.dense:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {using}")
            params = coll.dense[using]
            if len(query) != params["size"]:
                raise ApiError(400, f"Wrong input: Vector dimension error: expected dim: {params['size']}, "
                                    f"got {len(query)}")
            distance = params["distance"]
            for k in keys:
                v = coll.points[k].vectors.get(using)
                if v is not None:
                    scored.append((_score(distance, query, v), k))
            ascending = distance in ("Euclid", "Manhattan")
            scored.sort(key=lambda t: t[0] if ascending else -t[0])
        else:
            raise ApiError(400, f"fake_qdrant does not support the query {query!r:.80}")
        threshold = body.get("score_threshold")
        if threshold is not None:
            ascending = isinstance(query, list) and coll.dense[using]["distance"] in ("Euclid", "Manhattan")
            scored = [(s, k) for s, k in scored if (s <= threshold if ascending else s >= threshold)]
        return {"points": [coll.record(k, with_payload, with_vector, s) for s, k in scored[offset:offset + limit]]}


def _points_of(body: dict) -> list[dict]:
    """PointInsertOperations: {"points": [...]} or {"batch": {"ids", "vectors", "payloads"}}."""
    if isinstance(body.get("points"), list):
        return body["points"]
    batch = body.get("batch")
    if isinstance(batch, dict):
        ids = batch.get("ids") or []
        vectors = batch.get("vectors")
        payloads = batch.get("payloads") or [None] * len(ids)
        out = []
        for i, pid in enumerate(ids):
            if isinstance(vectors, list):
                vec = vectors[i]
            elif isinstance(vectors, dict):
                vec = {n: vs[i] for n, vs in vectors.items()}
            else:
                vec = None
            out.append({"id": pid, "vector": vec, "payload": payloads[i]})
        return out
    raise ApiError(400, "Format error in JSON body: expected `points` or `batch`")


def _upsert_ids(method: str, path: str, body: Any) -> list | None:
    try:
        if method == "PUT" and re.search(UPSERT, path):
            return [p.get("id") for p in _points_of(body)]
        if method == "POST" and re.search(BATCH, path):
            return [p.get("id") for op in body.get("operations", []) if "upsert" in op
                    for p in _points_of(op["upsert"])]
    except Exception:
        return None
    return None


def _ok(result: Any) -> dict:
    return {"result": result, "status": "ok"}


def _client_version() -> str:
    try:
        from importlib.metadata import version
        return version("qdrant-client")
    except Exception:
        return "1.16.0"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeQdrant


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.fake._conn_lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.fake._conn_lock:
                self.server.fake._connections.discard(self.connection)

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    # -----------------------------------------------------------------------------
    def _handle(self) -> None:
        fake = self.server.fake
        started = time.perf_counter()
        split = urlsplit(self.path)
        path = split.path
        query = dict(parse_qsl(split.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = SeenRequest(self.command, path, query, len(raw), headers)
        fake.requests.append(req)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body = exc
        if not isinstance(body, Exception):
            req.ids = _upsert_ids(self.command, path, body)
            if fake.keep_bodies:
                req.body = body
        try:
            # 1. the API key (before anything else, like Qdrant's middleware)
            if fake.api_key is not None and path not in _PUBLIC_PATHS:
                given = headers.get("api-key")
                if given is None and headers.get("authorization", "").startswith("Bearer "):
                    given = headers["authorization"][len("Bearer "):]
                if given != fake.api_key:
                    text = ("Must provide an API key or an Authorization bearer token" if given is None
                            else "Invalid API key or JWT")
                    req.outcome = "unauthorized"
                    self._send(req, 401, text.encode(), "text/plain; charset=utf-8")
                    return
            # 2. an injected fault
            fault = fake.faults._pick(req)
            if fault is not None:
                req.fault = fault
                self._act(req, fault.action, body, started)
                return
            # 3. serve
            self._serve(req, body, started)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            req.outcome = "dropped" if req.status is None else req.outcome
            self.close_connection = True

    def _serve(self, req: SeenRequest, body: Any, started: float, send: bool = True) -> tuple[int, bytes, str]:
        fake = self.server.fake
        if req.size > fake.max_request_bytes:
            status, payload = fake.too_large_status, _error_body(
                _too_large_message(req.size, fake.max_request_bytes), started)
        elif isinstance(body, Exception):
            status, payload = 400, _error_body(f"Format error in JSON body: {body}", started)
        else:
            try:
                status, result = fake._route(req.method, req.path, req.query, body)
                if isinstance(result, dict) and result.get("status") == "ok":
                    result["time"] = time.perf_counter() - started
                payload = result
            except ApiError as exc:
                status, payload = exc.status, _error_body(exc.message, started)
            except Exception as exc:  # a bug in the stand-in: say so, as a 500
                status, payload = 500, _error_body(f"fake_qdrant internal error: {type(exc).__name__}: {exc}",
                                                   started)
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        if send:
            req.outcome = "ok" if status < 400 else "error"
            self._send(req, status, data, ctype)
        return status, data, ctype

    def _act(self, req: SeenRequest, action: Action, body: Any, started: float,
             applied: tuple[int, bytes, str] | None = None) -> None:
        if action.after_apply and applied is None:
            # Serve (store the write) but keep the answer: the fault replaces it.
            applied = self._serve(req, body, started, send=False)
        if isinstance(action, Delay):
            self.server.fake._stopping.wait(action.seconds)
            if action.then is not None:
                self._act(req, action.then, body, started, applied)
            elif applied is not None:
                req.outcome = "fault"
                self._send(req, *applied)
            else:
                self._serve(req, body, started)
                req.outcome = "fault"
            return
        req.outcome = "fault"
        if isinstance(action, Respond):
            if action.body is not None:
                data, ctype = action.body, action.content_type
            else:
                data, ctype = json.dumps(_error_body(action.message, started)).encode(), "application/json"
            headers = dict(action.headers)
            if action.retry_after is not None:
                headers["Retry-After"] = str(action.retry_after)
            self._send(req, action.status, data, ctype, headers)
        elif isinstance(action, Drop):
            req.outcome = "dropped"
            self.close_connection = True
            if action.reset:
                # SO_LINGER 0 + close: the kernel answers with RST instead of FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                # http.server flushes wfile after the handler returns: give it a harmless one.
                self.wfile = io.BytesIO()
        else:
            raise TypeError(f"unknown fault action {action!r}")

    def _send(self, req: SeenRequest, status: int, data: bytes, ctype: str,
              headers: dict[str, str] | None = None) -> None:
        req.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _error_body(message: str, started: float) -> dict:
    return {"result": None, "status": {"error": message}, "time": time.perf_counter() - started}
