"""The gRPC front-end: qdrant-client's own generated servicers, subclassed.

Messages become qdrant-client models with qdrant-client's ``GrpcToRest`` and results
go back with ``RestToGrpc``: no protobuf field is mapped by hand here. An interceptor
does what is common to every call (request log, API key, size limit, faults). The
server listens behind a small TCP proxy (proxy.py) so that a fault can cut the very
connection a call came on, and a stop() refuses connections like a server going away.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from qdrant_client import grpc as pb
from qdrant_client import models
from qdrant_client.conversions.conversion import GrpcToRest as G
from qdrant_client.conversions.conversion import RestToGrpc as R

from . import convert
from . import faults as F
from .engine import ApiError

if TYPE_CHECKING:
    from . import QdrantEndpoint

# gRPC method -> operation name used by fault rules and the request log.
OPS = {
    "/qdrant.Points/Upsert": F.UPSERT, "/qdrant.Points/Delete": F.DELETE_POINTS,
    "/qdrant.Points/Get": F.RETRIEVE, "/qdrant.Points/UpdateVectors": F.UPDATE_VECTORS,
    "/qdrant.Points/DeleteVectors": F.DELETE_VECTORS, "/qdrant.Points/SetPayload": F.SET_PAYLOAD,
    "/qdrant.Points/OverwritePayload": F.OVERWRITE_PAYLOAD, "/qdrant.Points/DeletePayload": F.DELETE_PAYLOAD,
    "/qdrant.Points/ClearPayload": F.CLEAR_PAYLOAD, "/qdrant.Points/CreateFieldIndex": F.CREATE_INDEX,
    "/qdrant.Points/DeleteFieldIndex": F.DELETE_INDEX, "/qdrant.Points/Scroll": F.SCROLL,
    "/qdrant.Points/Count": F.COUNT, "/qdrant.Points/UpdateBatch": F.BATCH, "/qdrant.Points/Query": F.QUERY,
    "/qdrant.Collections/Get": F.GET_COLLECTION, "/qdrant.Collections/List": F.LIST_COLLECTIONS,
    "/qdrant.Collections/Create": F.CREATE_COLLECTION, "/qdrant.Collections/Update": F.UPDATE_COLLECTION,
    "/qdrant.Collections/Delete": F.DELETE_COLLECTION, "/qdrant.Collections/CollectionExists": F.COLLECTION_EXISTS,
    "/qdrant.Qdrant/HealthCheck": F.HEALTH, "/qdrant.Collections/UpdateAliases": F.UPDATE_ALIASES,
    "/qdrant.Collections/ListAliases": F.LIST_ALIASES, "/qdrant.Collections/ListCollectionAliases": F.LIST_ALIASES,
}


def _opt(message: Any, name: str, convert_fn: Callable[[Any], Any]) -> Any:
    return convert_fn(getattr(message, name)) if message.HasField(name) else None


def _selector(message: Any, name: str = "points_selector") -> Any:
    return G.convert_points_selector(getattr(message, name))


def _grpc_record(r: Any, convert_fn: Callable[[Any], Any]) -> Any:
    """gRPC has no "payload not requested": an empty map, as Qdrant sends it."""
    if r.payload is None:
        r = r.model_copy(update={"payload": {}})
    return convert_fn(r)


def _ids(upsert: pb.UpsertPoints | pb.UpdateBatchPoints) -> list:
    if isinstance(upsert, pb.UpsertPoints):
        return [G.convert_point_id(p.id) for p in upsert.points]
    return [G.convert_point_id(p.id) for op in upsert.operations if op.WhichOneof("operation") == "upsert"
            for p in op.upsert.points]


class Collections(pb.CollectionsServicer):
    def __init__(self, endpoint: QdrantEndpoint):
        self.e = endpoint.engine

    def Get(self, request, context):
        return pb.GetCollectionInfoResponse(result=R.convert_collection_info(self.e.info(request.collection_name)))

    def List(self, request, context):
        return pb.ListCollectionsResponse(collections=[pb.CollectionDescription(name=n)
                                                       for n in self.e.list_collections()])

    def CollectionExists(self, request, context):
        return pb.CollectionExistsResponse(result=pb.CollectionExists(exists=self.e.exists(request.collection_name)))

    def Create(self, m, context):
        req = models.CreateCollection(
            vectors=_opt(m, "vectors_config", G.convert_vectors_config),
            sparse_vectors=_opt(m, "sparse_vectors_config", G.convert_sparse_vector_config),
            hnsw_config=_opt(m, "hnsw_config", G.convert_hnsw_config_diff),
            optimizers_config=_opt(m, "optimizers_config", G.convert_optimizers_config_diff),
            quantization_config=_opt(m, "quantization_config", G.convert_quantization_config),
            shard_number=m.shard_number if m.HasField("shard_number") else None,
            replication_factor=m.replication_factor if m.HasField("replication_factor") else None,
            on_disk_payload=m.on_disk_payload if m.HasField("on_disk_payload") else None,
            strict_mode_config=_opt(m, "strict_mode_config", G.convert_strict_mode_config),
            metadata=G.convert_payload(m.metadata) if len(m.metadata) else None)
        return pb.CollectionOperationResponse(result=self.e.create_collection(m.collection_name, req))

    def Update(self, m, context):
        return pb.CollectionOperationResponse(result=self.e.update_collection(
            m.collection_name, G.convert_update_collection(m)))

    def Delete(self, m, context):
        return pb.CollectionOperationResponse(result=self.e.delete_collection(m.collection_name))

    def UpdateAliases(self, m, context):
        return pb.CollectionOperationResponse(result=self.e.update_aliases(
            [G.convert_alias_operations(a) for a in m.actions]))

    def ListAliases(self, m, context):
        return pb.ListAliasesResponse(aliases=[R.convert_alias_description(a) for a in self.e.list_aliases()])

    def ListCollectionAliases(self, m, context):
        return pb.ListAliasesResponse(aliases=[R.convert_alias_description(a)
                                               for a in self.e.list_aliases(m.collection_name)])


class Points(pb.PointsServicer):
    def __init__(self, endpoint: QdrantEndpoint):
        self.e = endpoint.engine

    def _update(self, m, operation) -> pb.PointsOperationResponse:
        (result,) = self.e.update(m.collection_name, [operation], m.wait)
        return pb.PointsOperationResponse(result=R.convert_update_result(result))

    def Upsert(self, m, context):
        points = [G.convert_point_struct(p) for p in m.points]
        return self._update(m, models.UpsertOperation(upsert=models.PointsList(points=points)))

    def Delete(self, m, context):
        return self._update(m, models.DeleteOperation(delete=_selector(m, "points")))

    def SetPayload(self, m, context):
        return self._update(m, models.SetPayloadOperation(set_payload=self._set_payload(m)))

    def OverwritePayload(self, m, context):
        return self._update(m, models.OverwritePayloadOperation(overwrite_payload=self._set_payload(m)))

    @staticmethod
    def _set_payload(m) -> models.SetPayload:
        sel = _selector(m)
        return models.SetPayload(payload=G.convert_payload(m.payload), key=m.key if m.HasField("key") else None,
                                 points=getattr(sel, "points", None), filter=getattr(sel, "filter", None))

    def DeletePayload(self, m, context):
        sel = _selector(m)
        return self._update(m, models.DeletePayloadOperation(delete_payload=models.DeletePayload(
            keys=list(m.keys), points=getattr(sel, "points", None), filter=getattr(sel, "filter", None))))

    def ClearPayload(self, m, context):
        return self._update(m, models.ClearPayloadOperation(clear_payload=_selector(m, "points")))

    def UpdateVectors(self, m, context):
        return self._update(m, models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(
            points=[G.convert_point_vectors(p) for p in m.points])))

    def DeleteVectors(self, m, context):
        sel = _selector(m)
        return self._update(m, models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(
            vector=list(m.vectors.names), points=getattr(sel, "points", None), filter=getattr(sel, "filter", None))))

    def UpdateBatch(self, m, context):
        ops = [G.convert_points_update_operation(op) for op in m.operations]
        results = self.e.update(m.collection_name, ops, m.wait)
        return pb.UpdateBatchResponse(result=[R.convert_update_result(r) for r in results])

    def CreateFieldIndex(self, m, context):
        if m.HasField("field_index_params"):
            schema = G.convert_payload_schema_params(m.field_index_params)
        else:
            schema = pb.FieldType.Name(m.field_type).removeprefix("FieldType").lower()
        result = self.e.create_field_index(m.collection_name, m.field_name, schema, m.wait)
        return pb.PointsOperationResponse(result=R.convert_update_result(result))

    def DeleteFieldIndex(self, m, context):
        result = self.e.delete_field_index(m.collection_name, m.field_name, m.wait)
        return pb.PointsOperationResponse(result=R.convert_update_result(result))

    def Get(self, m, context):
        records = self.e.retrieve(
            m.collection_name, [G.convert_point_id(i) for i in m.ids],
            _opt(m, "with_payload", G.convert_with_payload_selector) or False,
            _opt(m, "with_vectors", G.convert_with_vectors_selector) or False)
        return pb.GetResponse(result=[_grpc_record(r, R.convert_record) for r in records])

    def Scroll(self, m, context):
        req = models.ScrollRequest(
            offset=_opt(m, "offset", G.convert_point_id), limit=m.limit if m.HasField("limit") else 10,
            filter=_opt(m, "filter", G.convert_filter),
            with_payload=_opt(m, "with_payload", G.convert_with_payload_selector) or False,
            with_vector=_opt(m, "with_vectors", G.convert_with_vectors_selector) or False,
            order_by=_opt(m, "order_by", G.convert_order_by))
        records, nxt = self.e.scroll(m.collection_name, req)
        response = pb.ScrollResponse(result=[_grpc_record(r, R.convert_record) for r in records])
        if nxt is not None:
            response.next_page_offset.CopyFrom(R.convert_extended_point_id(nxt))
        return response

    def Count(self, m, context):
        n = self.e.count(m.collection_name, _opt(m, "filter", G.convert_filter), m.exact if m.HasField("exact") else True)
        return pb.CountResponse(result=pb.CountResult(count=n))

    def Query(self, m, context):
        points = self.e.query(m.collection_name, G.convert_query_points(m))
        return pb.QueryResponse(result=[_grpc_record(p, R.convert_scored_point) for p in points])


class Health(pb.QdrantServicer):
    def __init__(self, endpoint: QdrantEndpoint):
        self.endpoint = endpoint

    def HealthCheck(self, request, context):
        return pb.HealthCheckReply(title="qdrant - vector search engine (pg2qdrant test endpoint over Qdrant Edge)",
                                   version=self.endpoint.version)


class Interceptor(grpc.ServerInterceptor):
    """Request log, API key, request size limit and faults, around every unary call."""

    def __init__(self, endpoint: QdrantEndpoint):
        self.endpoint = endpoint

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method

        def behavior(request, context):
            return self._call(method, inner, request, context)
        return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    def _call(self, method: str, inner, request, context):
        endpoint = self.endpoint
        started = time.perf_counter()
        metadata = {k.lower(): v for k, v in context.invocation_metadata()}
        collection = getattr(request, "collection_name", None) or None
        req = F.SeenRequest("grpc", OPS.get(method), collection, method, method, request.ByteSize(), metadata)
        endpoint._log(req)
        if method in ("/qdrant.Points/Upsert", "/qdrant.Points/UpdateBatch"):
            req.ids = _ids(request)
        if endpoint.keep_bodies:
            req.body = request
        if endpoint.api_key is not None and method != "/qdrant.Qdrant/HealthCheck":
            problem = endpoint._key_problem(metadata)
            if problem:
                req.outcome = "unauthorized"
                self._abort(req, context, "UNAUTHENTICATED", problem)
        if req.size > endpoint.max_request_bytes:
            req.outcome = "too_large"
            self._abort(req, context, "OUT_OF_RANGE",
                        F.too_large_message(req.size, endpoint.max_request_bytes, grpc=True))
        fault = endpoint.faults.pick(req)
        if fault is None:
            return self._serve(req, inner, request, context)
        req.fault = fault
        return self._act(req, fault.action, inner, request, context, started, None)

    def _serve(self, req: F.SeenRequest, inner, request, context, send: bool = True):
        try:
            response = inner(request, context)
        except ApiError as exc:
            if req.outcome == "pending":
                req.outcome = "error"
            if exc.retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(exc.retry_after)),))
            self._abort(req, context, F.GRPC_CODES.get(exc.status, "UNKNOWN"), exc.message)
        except convert.Unsupported as exc:
            req.outcome = "error"
            self._abort(req, context, "INVALID_ARGUMENT", f"qdrant test endpoint does not support {exc}")
        except Exception as exc:
            req.outcome = "error"  # a bug in the endpoint: say so
            self._abort(req, context, "INTERNAL", f"qdrant test endpoint internal error: {type(exc).__name__}: {exc}")
        if hasattr(response, "time"):
            response.time = 0.001
        if req.outcome == "pending":
            req.outcome, req.status = "ok", "OK"
        return response

    def _act(self, req: F.SeenRequest, action: F.Action, inner, request, context, started: float, applied: Any):
        if action.after_apply and applied is None:
            try:
                applied = ("ok", self._serve(req, inner, request, context))
            except Exception as exc:  # context.abort's exception: the served request failed by itself
                applied = ("error", exc)
            req.outcome = "pending"
        if isinstance(action, F.Delay):
            self.endpoint._stopping.wait(action.seconds)
            if action.then is not None:
                return self._act(req, action.then, inner, request, context, started, applied)
            req.outcome = "fault"
            if applied is not None:
                if applied[0] == "error":
                    raise applied[1]
                req.status = "OK"
                return applied[1]
            response = self._serve(req, inner, request, context)
            req.outcome, req.status = "fault", "OK"  # served late, like REST's 200 after a Delay
            return response
        req.outcome = "fault"
        if isinstance(action, F.Respond):
            if action.retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(action.retry_after)),))
            self._abort(req, context, action.code, action.details)
        if isinstance(action, F.Drop):
            req.outcome = "dropped"
            self.endpoint._grpc_proxy.cut(context.peer(), reset=action.reset)
            self._abort(req, context, "UNAVAILABLE", "connection dropped by the test endpoint", record=False)
        raise TypeError(f"unknown fault action {action!r}")

    @staticmethod
    def _abort(req: F.SeenRequest, context, code: str, message: str, record: bool = True):
        if record:
            req.status = code
        context.abort(getattr(grpc.StatusCode, code), message)


def start_server(endpoint: QdrantEndpoint, credentials: grpc.ServerCredentials | None) -> tuple[grpc.Server, int]:
    """The gRPC server on a free loopback port (the proxy in front is what clients reach)."""
    # The real limit is applied (and logged) by the interceptor, with Qdrant's message.
    limit = max(endpoint.max_request_bytes, 64 * 1024 * 1024) + 1024 * 1024
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="qdrant-endpoint-grpc"),
                         interceptors=[Interceptor(endpoint)],
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", limit),
                                  ("grpc.so_reuseport", 0)])
    pb.add_CollectionsServicer_to_server(Collections(endpoint), server)
    pb.add_PointsServicer_to_server(Points(endpoint), server)
    pb.add_QdrantServicer_to_server(Health(endpoint), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port
