"""A counting gRPC sink: answers the Qdrant gRPC calls `pg2qdrant migrate` makes, parses every
UpsertPoints and counts its points, and stores nothing else. It is NOT Qdrant.

Why: to measure the client side of a server migration (reading, mapping, encoding,
sending) without a server's cost, since no Qdrant server can be installed here
(benchmarks/bench_migrate.py `server`), and to receive a real migration over gRPC in
tests (tests/test_wire.py, ``record=True`` keeps every request).

What it serves (qdrant_client.grpc servicers, one grpc.server):
  Qdrant.HealthCheck; Collections List, CollectionExists, Get, Create, Update, Delete;
  Points Upsert, Count, CreateFieldIndex, and Get/Scroll/Delete for the small
  payload-only collection where migrate keeps its progress records.
Each request is parsed by the protobuf runtime, as a server would; a collection's
points are counted by distinct ID; points are kept only for collections without
vectors (the progress records) or with ``record=True``.

    python benchmarks/grpc_sink.py            # prints its URL, serves until stopped
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from qdrant_client import grpc as q


@dataclass
class Collection:
    create: q.CreateCollection
    ids: set = field(default_factory=set)
    points: dict = field(default_factory=dict)  # id -> PointStruct, when kept
    upserts: int = 0
    updates: list = field(default_factory=list)

    @property
    def has_vectors(self) -> bool:
        config = self.create.vectors_config
        return config.HasField("params") or len(config.params_map.map) > 0 or \
            len(self.create.sparse_vectors_config.map) > 0

    def info(self) -> q.CollectionInfo:
        create = self.create
        params = q.CollectionParams(shard_number=create.shard_number or 1, on_disk_payload=True)
        if create.HasField("vectors_config"):
            params.vectors_config.CopyFrom(create.vectors_config)
        if create.HasField("sparse_vectors_config"):
            params.sparse_vectors_config.CopyFrom(create.sparse_vectors_config)
        hnsw = q.HnswConfigDiff(m=16, ef_construct=100, full_scan_threshold=10000)
        hnsw.MergeFrom(create.hnsw_config)
        for update in self.updates:
            hnsw.MergeFrom(update.hnsw_config)
        return q.CollectionInfo(
            status=q.CollectionStatus.Green, optimizer_status=q.OptimizerStatus(ok=True),
            segments_count=1, points_count=len(self.ids), indexed_vectors_count=0,
            config=q.CollectionConfig(params=params, hnsw_config=hnsw,
                                      optimizer_config=q.OptimizersConfigDiff(
                                          deleted_threshold=0.2, vacuum_min_vector_number=1000,
                                          default_segment_number=0, indexing_threshold=10000,
                                          flush_interval_sec=5),
                                      wal_config=q.WalConfigDiff(wal_capacity_mb=32, wal_segments_ahead=0)))


def _key(point_id: q.PointId):
    return point_id.num if point_id.HasField("num") else point_id.uuid


class Sink:
    """The servicers' shared state, and the server's life cycle (``with Sink() as sink``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: bool = False,
                 api_key: str | None = None, max_receive_bytes: int = 64 << 20, threads: int = 8):
        self.host = host
        self.port = port  # 0: a free port, known once started
        self.record = record
        self.requests: list[q.UpsertPoints] = []  # with record=True
        self.points_received = 0
        self.collections: dict[str, Collection] = {}
        self.lock = threading.Lock()
        # A request over max_receive_bytes is refused by grpc itself (RESOURCE_EXHAUSTED, "Received
        # message larger than max"), as Qdrant refuses one over its limit.
        self.server = grpc.server(
            futures.ThreadPoolExecutor(threads), interceptors=[_ApiKey(api_key)] if api_key else [],
            options=[("grpc.max_receive_message_length", max_receive_bytes),
                     ("grpc.max_send_message_length", 64 << 20)])
        q.add_QdrantServicer_to_server(_Root(), self.server)
        q.add_CollectionsServicer_to_server(_Collections(self), self.server)
        q.add_PointsServicer_to_server(_Points(self), self.server)

    @property
    def url(self) -> str:
        """grpc:// makes pg2qdrant speak gRPC on any port."""
        return f"grpc://{self.host}:{self.port}"

    def start(self) -> Sink:
        self.port = self.server.add_insecure_port(f"{self.host}:{self.port}")
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None).wait()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def collection(self, name: str, context) -> Collection:
        found = self.collections.get(name)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Not found: Collection `{name}` doesn't exist!")
        return found


class _ApiKey(grpc.ServerInterceptor):
    """Every call needs the ``api-key`` metadata, as a Qdrant server with an API key configured."""

    def __init__(self, key: str):
        self.key = key

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid api-key")
        self.deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        if dict(details.invocation_metadata).get("api-key") == self.key:
            return continuation(details)
        return self.deny


def _done() -> q.PointsOperationResponse:
    return q.PointsOperationResponse(result=q.UpdateResult(operation_id=0, status=q.UpdateStatus.Completed),
                                     time=0.0)


class _Root(q.QdrantServicer):
    def HealthCheck(self, request, context):
        return q.HealthCheckReply(title="pg2qdrant counting sink (not Qdrant)", version="1.16.0")


class _Collections(q.CollectionsServicer):
    def __init__(self, sink: Sink):
        self.sink = sink

    def List(self, request, context):
        return q.ListCollectionsResponse(collections=[q.CollectionDescription(name=n)
                                                      for n in self.sink.collections], time=0.0)

    def CollectionExists(self, request, context):
        return q.CollectionExistsResponse(
            result=q.CollectionExists(exists=request.collection_name in self.sink.collections), time=0.0)

    def Get(self, request, context):
        with self.sink.lock:
            info = self.sink.collection(request.collection_name, context).info()
        return q.GetCollectionInfoResponse(result=info, time=0.0)

    def Create(self, request, context):
        with self.sink.lock:
            if request.collection_name in self.sink.collections:
                context.abort(grpc.StatusCode.ALREADY_EXISTS,
                              f"Wrong input: Collection `{request.collection_name}` already exists!")
            self.sink.collections[request.collection_name] = Collection(request)
        return q.CollectionOperationResponse(result=True, time=0.0)

    def Update(self, request, context):
        with self.sink.lock:
            self.sink.collection(request.collection_name, context).updates.append(request)
        return q.CollectionOperationResponse(result=True, time=0.0)

    def Delete(self, request, context):
        with self.sink.lock:
            found = self.sink.collections.pop(request.collection_name, None)
        return q.CollectionOperationResponse(result=found is not None, time=0.0)


class _Points(q.PointsServicer):
    def __init__(self, sink: Sink):
        self.sink = sink

    def Upsert(self, request, context):
        sink = self.sink
        keys = [_key(p.id) for p in request.points]
        with sink.lock:
            c = sink.collection(request.collection_name, context)
            c.ids.update(keys)
            c.upserts += 1
            sink.points_received += len(keys)
            if sink.record:
                sink.requests.append(request)
            if sink.record or not c.has_vectors:
                c.points.update(zip(keys, request.points))
        return _done()

    def Count(self, request, context):
        with self.sink.lock:
            n = len(self.sink.collection(request.collection_name, context).ids)
        return q.CountResponse(result=q.CountResult(count=n), time=0.0)

    def CreateFieldIndex(self, request, context):
        self.sink.collection(request.collection_name, context)
        return _done()

    def _retrieved(self, point: q.PointStruct) -> q.RetrievedPoint:
        return q.RetrievedPoint(id=point.id, payload=point.payload)

    def Get(self, request, context):
        with self.sink.lock:
            c = self.sink.collection(request.collection_name, context)
            found = [c.points[_key(i)] for i in request.ids if _key(i) in c.points]
        return q.GetResponse(result=[self._retrieved(p) for p in found], time=0.0)

    def Scroll(self, request, context):
        with self.sink.lock:
            c = self.sink.collection(request.collection_name, context)
            found = list(c.points.values())
        return q.ScrollResponse(result=[self._retrieved(p) for p in found], time=0.0)

    def Delete(self, request, context):
        with self.sink.lock:
            c = self.sink.collection(request.collection_name, context)
            for i in request.points.points.ids:
                c.ids.discard(_key(i))
                c.points.pop(_key(i), None)
        return _done()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = p.parse_args(argv)
    sink = Sink(args.host, args.port).start()
    print(sink.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _measure import own_peak_rss_bytes
    print(f"received {sink.points_received} points; sink peak RSS {own_peak_rss_bytes() / 2**20:,.0f} MiB",
          file=sys.stderr, flush=True)
    sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
