"""The REST front-end: the JSON routes qdrant-client 1.x calls, on ``http.server``.

Request bodies are parsed into qdrant-client's models (pydantic, the schema qdrant-client
itself sends), the engine is called, and results go back in Qdrant's envelope
``{"result": ..., "status": "ok", "time": ...}``; errors as ``{"status": {"error": ...}}``.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError
from qdrant_client import models

from . import convert
from . import faults as F
from .engine import ApiError, points_of

if TYPE_CHECKING:
    from . import QdrantEndpoint

_PUBLIC_PATHS = ("/", "/healthz", "/readyz", "/livez")  # Qdrant asks no key for these
_ADAPTERS: dict[Any, TypeAdapter] = {}


def parse(kind: Any, body: Any) -> Any:
    """A JSON body as the qdrant-client model (or union of models) it was sent as."""
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    try:
        return adapter.validate_python(body if body is not None else {})
    except ValidationError as exc:
        raise ApiError(400, f"Format error in JSON body: {exc.errors()[0].get('msg')} "
                            f"at {exc.errors()[0].get('loc')}") from None


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=False)
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def _wait(query: dict) -> bool:
    return query.get("wait", "false").lower() == "true"


class Route:
    """Which operation a request is, and the function that serves it."""

    def __init__(self, op: str | None, collection: str | None, serve: Callable[[Any, dict], Any],
                 ids: Callable[[Any], list | None] | None = None):
        self.op, self.collection, self.serve, self.ids = op, collection, serve, ids


# REST routes of the single point-update calls: (path under the collection, method) ->
# (operation name, wrap the parsed body as an update operation, the body's model).
_POINT_UPDATES: dict[tuple[tuple[str, ...], str], tuple[str, Any, Any]] = {
    (("points", "delete"), "POST"): (F.DELETE_POINTS, lambda s: models.DeleteOperation(delete=s),
                                     models.PointsSelector),
    (("points", "payload"), "POST"): (F.SET_PAYLOAD, lambda s: models.SetPayloadOperation(set_payload=s),
                                      models.SetPayload),
    (("points", "payload"), "PUT"): (F.OVERWRITE_PAYLOAD,
                                     lambda s: models.OverwritePayloadOperation(overwrite_payload=s), models.SetPayload),
    (("points", "payload", "delete"), "POST"): (F.DELETE_PAYLOAD,
                                                lambda s: models.DeletePayloadOperation(delete_payload=s),
                                                models.DeletePayload),
    (("points", "payload", "clear"), "POST"): (F.CLEAR_PAYLOAD,
                                               lambda s: models.ClearPayloadOperation(clear_payload=s),
                                               models.PointsSelector),
    (("points", "vectors"), "PUT"): (F.UPDATE_VECTORS, lambda s: models.UpdateVectorsOperation(update_vectors=s),
                                     models.UpdateVectors),
    (("points", "vectors", "delete"), "POST"): (F.DELETE_VECTORS,
                                                lambda s: models.DeleteVectorsOperation(delete_vectors=s),
                                                models.DeleteVectors),
}


def route(endpoint: QdrantEndpoint, method: str, path: str) -> Route:
    """The route for METHOD PATH; ``serve(body, query)`` returns the result (or raises ApiError)."""
    e = endpoint.engine
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if method == "GET" and not parts:
        return Route(F.HEALTH, None, lambda b, q: {"title": "qdrant - vector search engine (pg2qdrant test "
                                                             "endpoint over Qdrant Edge)",
                                                   "version": endpoint.version, "raw": True})
    if method == "GET" and parts in (["healthz"], ["livez"], ["readyz"]):
        return Route(F.HEALTH, None, lambda b, q: "healthz check passed")
    if parts == ["aliases"] and method == "GET":
        return Route(F.LIST_ALIASES, None, lambda b, q: {"aliases": e.list_aliases()})
    if parts == ["collections", "aliases"] and method == "POST":
        return Route(F.UPDATE_ALIASES, None, lambda b, q: e.update_aliases(
            parse(models.ChangeAliasesOperation, b).actions))
    if not parts or parts[0] != "collections":
        return Route(None, None, _no_route(method, path))
    if len(parts) == 1:
        if method == "GET":
            return Route(F.LIST_COLLECTIONS, None, lambda b, q: {
                "collections": [{"name": n} for n in e.list_collections()]})
        return Route(None, None, _no_route(method, path))
    name, rest = parts[1], tuple(parts[2:])

    def r(op: str | None, serve: Callable[[Any, dict], Any], ids=None) -> Route:
        return Route(op, name, serve, ids)

    def update(op: str, wrap: Callable[[Any], Any], kind: Any) -> Route:
        def serve(b: Any, q: dict) -> Any:
            return e.update(name, [wrap(parse(kind, b))], _wait(q))[0]
        return r(op, serve)

    if not rest:
        if method == "GET":
            return r(F.GET_COLLECTION, lambda b, q: e.info(name))
        if method == "PUT":
            return r(F.CREATE_COLLECTION, lambda b, q: e.create_collection(name, parse(models.CreateCollection, b)))
        if method == "PATCH":
            return r(F.UPDATE_COLLECTION, lambda b, q: e.update_collection(name, parse(models.UpdateCollection, b)))
        if method == "DELETE":
            return r(F.DELETE_COLLECTION, lambda b, q: e.delete_collection(name))
    if rest == ("exists",) and method == "GET":
        return r(F.COLLECTION_EXISTS, lambda b, q: {"exists": e.exists(name)})
    if rest == ("aliases",) and method == "GET":
        return r(F.LIST_ALIASES, lambda b, q: {"aliases": e.list_aliases(name)})
    if rest == ("index",) and method == "PUT":
        def create_index(b: Any, q: dict) -> Any:
            req = parse(models.CreateFieldIndex, b)
            return e.create_field_index(name, req.field_name, req.field_schema, _wait(q))
        return r(F.CREATE_INDEX, create_index)
    if len(rest) == 2 and rest[0] == "index" and method == "DELETE":
        return r(F.DELETE_INDEX, lambda b, q: e.delete_field_index(name, rest[1], _wait(q)))
    if rest == ("points",) and method == "PUT":
        return r(F.UPSERT, lambda b, q: e.update(name, [models.UpsertOperation(
            upsert=parse(models.PointInsertOperations, b))], _wait(q))[0],
            ids=lambda b: [p.id for p in points_of(parse(models.PointInsertOperations, b))])
    if rest == ("points",) and method == "POST":
        def retrieve(b: Any, q: dict) -> Any:
            req = parse(models.PointRequest, b)
            return e.retrieve(name, req.ids, req.with_payload if req.with_payload is not None else True,
                              req.with_vector or False)
        return r(F.RETRIEVE, retrieve)
    if len(rest) == 2 and rest[0] == "points" and method == "GET":
        pid = int(rest[1]) if rest[1].isdigit() else rest[1]

        def get_point(b: Any, q: dict) -> Any:
            found = e.retrieve(name, [pid], True, True)
            if not found:
                raise ApiError(404, f"Not found: No point with id {rest[1]} found")
            return found[0]
        return r(F.RETRIEVE, get_point)
    if rest == ("points", "count") and method == "POST":
        def count(b: Any, q: dict) -> Any:
            req = parse(models.CountRequest, b)
            return {"count": e.count(name, req.filter, req.exact if req.exact is not None else True)}
        return r(F.COUNT, count)
    if rest == ("points", "scroll") and method == "POST":
        def scroll(b: Any, q: dict) -> Any:
            records, nxt = e.scroll(name, parse(models.ScrollRequest, b))
            return {"points": records, "next_page_offset": nxt}
        return r(F.SCROLL, scroll)
    if rest == ("points", "query") and method == "POST":
        return r(F.QUERY, lambda b, q: {"points": e.query(name, parse(models.QueryRequest, b))})
    if (rest, method) in _POINT_UPDATES:
        op, wrap, model = _POINT_UPDATES[(rest, method)]
        return update(op, wrap, model)
    if rest == ("points", "batch") and method == "POST":
        def batch_ids(b: Any) -> list:
            ops = parse(models.UpdateOperations, b).operations
            return [p.id for op in ops if isinstance(op, models.UpsertOperation) for p in points_of(op.upsert)]
        return r(F.BATCH, lambda b, q: e.update(name, parse(models.UpdateOperations, b).operations, _wait(q)),
                 ids=batch_ids)
    return r(None, _no_route(method, path))


def _no_route(method: str, path: str) -> Callable[[Any, dict], Any]:
    def serve(b: Any, q: dict) -> Any:
        raise ApiError(404, f"qdrant test endpoint: no route for {method} {path}")
    return serve


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    endpoint: QdrantEndpoint


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.endpoint._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.endpoint._track(self.connection, False)

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        endpoint = self.server.endpoint
        started = time.perf_counter()
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        rt = route(endpoint, self.command, split.path)
        req = F.SeenRequest("rest", rt.op, rt.collection, self.command, split.path, len(raw), headers)
        endpoint._log(req)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body = exc
        if not isinstance(body, Exception) and req.size <= endpoint.max_request_bytes:
            if rt.ids is not None:
                try:
                    req.ids = rt.ids(body)
                except Exception:
                    req.ids = None
            if endpoint.keep_bodies:
                req.body = body
        try:
            if endpoint.api_key is not None and split.path not in _PUBLIC_PATHS:
                problem = endpoint._key_problem(headers)
                if problem:
                    req.outcome = "unauthorized"
                    self._send(req, 401, problem.encode(), "text/plain; charset=utf-8")
                    return
            fault = endpoint.faults.pick(req)
            if fault is not None:
                req.fault = fault
                self._act(req, fault.action, rt, body, query, started)
                return
            self._serve(req, rt, body, query, started)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            req.outcome = "dropped" if req.status is None else req.outcome
            self.close_connection = True

    def _serve(self, req: F.SeenRequest, rt: Route, body: Any, query: dict, started: float,
               send: bool = True) -> tuple[int, bytes, str]:
        endpoint = self.server.endpoint
        headers: dict[str, str] = {}
        if req.size > endpoint.max_request_bytes:
            req.outcome = "too_large"
            status, payload = endpoint.too_large_status, _error_body(
                F.too_large_message(req.size, endpoint.max_request_bytes), started)
        elif isinstance(body, Exception):
            status, payload = 400, _error_body(f"Format error in JSON body: {body}", started)
        else:
            try:
                result = rt.serve(body, query)
                status = 200
                if isinstance(result, str) or (isinstance(result, dict) and result.pop("raw", False)):
                    payload = result
                else:
                    payload = {"result": jsonable(result), "status": "ok", "time": time.perf_counter() - started}
            except ApiError as exc:
                status, payload = exc.status, _error_body(exc.message, started)
                if exc.retry_after is not None:
                    headers = {"Retry-After": str(exc.retry_after)}
            except convert.Unsupported as exc:
                status, payload = 400, _error_body(f"qdrant test endpoint does not support {exc}", started)
            except Exception as exc:  # a bug in the endpoint: say so, as a 500
                status, payload = 500, _error_body(
                    f"qdrant test endpoint internal error: {type(exc).__name__}: {exc}", started)
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        if send:
            if req.outcome == "pending":
                req.outcome = "ok" if status < 400 else "error"
            self._send(req, status, data, ctype, headers)
        return status, data, ctype

    def _act(self, req: F.SeenRequest, action: F.Action, rt: Route, body: Any, query: dict, started: float,
             applied: tuple[int, bytes, str] | None = None) -> None:
        if action.after_apply and applied is None:
            applied = self._serve(req, rt, body, query, started, send=False)
        if isinstance(action, F.Delay):
            self.server.endpoint._stopping.wait(action.seconds)
            if action.then is not None:
                self._act(req, action.then, rt, body, query, started, applied)
            elif applied is not None:
                req.outcome = "fault"
                self._send(req, *applied)
            else:
                self._serve(req, rt, body, query, started)
                req.outcome = "fault"
            return
        req.outcome = "fault"
        if isinstance(action, F.Respond):
            if action.body is not None:
                data, ctype = action.body, action.content_type
            else:
                data, ctype = json.dumps(_error_body(action.message, started)).encode(), "application/json"
            headers = dict(action.headers)
            if action.retry_after is not None:
                headers["Retry-After"] = str(action.retry_after)
            self._send(req, action.status, data, ctype, headers)
        elif isinstance(action, F.Drop):
            req.outcome = "dropped"
            self.close_connection = True
            if action.reset:
                # SO_LINGER 0 + close: the kernel answers with RST instead of FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.wfile = io.BytesIO()  # http.server flushes wfile after the handler returns
        else:
            raise TypeError(f"unknown fault action {action!r}")

    def _send(self, req: F.SeenRequest, status: int, data: bytes, ctype: str,
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
