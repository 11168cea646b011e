"""The Qdrant side through the official qdrant-client: a server by URL, or embedded local mode
(the ``--qdrant.url`` forms: server.py). Reader processes write to a server over gRPC
without it (grpc_writer.py); everything else goes through here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from qdrant_client import QdrantClient, models

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.vectors import SparseValue
from pg2qdrant.core.options import RESCORE_OVERSAMPLING
from pg2qdrant.core.plan import TENANT_INDEX, CollectionShape, CollectionSpec
from pg2qdrant.core.retry import RetryPolicy
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination import wire
from pg2qdrant.destination.address import TargetAddress
from pg2qdrant.destination.base import StrictMode
from pg2qdrant.destination.checkpoints import CollectionRecords
from pg2qdrant.destination.grpc_writer import GrpcPointsWriter
from pg2qdrant.destination.server import (  # noqa: F401  (TargetAddress, parse_target_url: imported from here too)
    GRPC_MAX_MESSAGE,
    REQUEST_TIMEOUT_S,
    Retrying,
    capabilities_for,
    split_when_too_large,
    translate_error,
    wire_for,
)


def _quantization(kind: str | None):
    """Qdrant's quantization config: ``int8`` (--qdrant.quantization) or ``binary`` (a
    binary_quantize(col) index; searches rescore with the original vectors)."""
    if kind == "int8":
        return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, always_ram=True))
    if kind == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return None


def _shape_of(info: models.CollectionInfo) -> CollectionShape:
    params = info.config.params
    dense: dict[str, tuple[int, str, str]] = {}
    vectors = params.vectors
    if isinstance(vectors, models.VectorParams):
        vectors = {"": vectors}
    for name, vp in (vectors or {}).items():
        datatype = vp.datatype.value if vp.datatype is not None else "float32"
        dense[name] = (vp.size, vp.distance.value, datatype)
    sparse = params.sparse_vectors or {}
    return CollectionShape(dense, frozenset(sparse), frozenset(n for n, sp in sparse.items()
                                                               if sp.modifier == models.Modifier.IDF))


def _strict_of(info: models.CollectionInfo) -> StrictMode | None:
    config = info.config.strict_mode_config
    if config is None or not config.enabled:
        return None
    indexed = tuple(sorted((k, str(getattr(v.data_type, "value", v.data_type)))
                           for k, v in (info.payload_schema or {}).items()))
    return StrictMode(upsert_max_batchsize=config.upsert_max_batchsize, write_rate_limit=config.write_rate_limit,
                      max_query_limit=config.max_query_limit, max_payload_index_count=config.max_payload_index_count,
                      unindexed_filtering_update=config.unindexed_filtering_update is not False,
                      unindexed_filtering_retrieve=config.unindexed_filtering_retrieve is not False,
                      indexed=indexed)


def _sparse(indices: list[int], values: list[float]) -> models.SparseVector:
    return models.SparseVector.model_construct(indices=indices, values=values)


def points_of(batch: PointBatch) -> list[models.PointStruct]:
    """PointStructs without pydantic re-validation (values are already the right types)."""
    return [models.PointStruct.model_construct(id=pid, vector=vector, payload=payload)
            for pid, vector, payload in batch.points(_sparse)]


class QdrantTarget(Retrying):
    """One collection in Qdrant, reached with qdrant-client (server, local or in-memory)."""

    capabilities_for = staticmethod(capabilities_for)

    def __init__(self, address: TargetAddress, *, api_key: str | None = None,
                 skip_tls_verification: bool = False, timeout: int = REQUEST_TIMEOUT_S,
                 retry: RetryPolicy | None = None):
        self.address = address
        self.capabilities = self.capabilities_for(address)
        self.retry = retry or RetryPolicy()
        self.retries = 0  # transient failures retried (reported in the summary)
        self.timeout = timeout
        # A server's upserts are encoded by destination/wire.py (local mode takes PointStructs).
        self.wire = wire_for(address)
        # gRPC upserts go as the request bytes wire.py built, through the readers' writer: qdrant-client's
        # stubs take message objects only, and re-parsing our bytes into one would cost ~3 us a point.
        self._grpc_points = GrpcPointsWriter(address, api_key=api_key, timeout=timeout, retry=self.retry) \
            if self.wire == wire.GRPC else None
        redaction.register(api_key)
        self._strict: dict[str, StrictMode | None] = {}  # strict mode by collection, read once
        if address.kind == "memory":
            self.client = QdrantClient(location=":memory:")
        elif address.kind == "local":
            self.client = self._open_local(address.path)
        elif address.kind == "server":
            kwargs: dict[str, Any] = dict(
                host=address.host, https=address.https, api_key=api_key or None, prefix=address.prefix,
                timeout=timeout, check_compatibility=False,
            )
            if address.grpc:
                kwargs.update(prefer_grpc=True, grpc_port=address.port, port=None,
                              grpc_options={"grpc.max_send_message_length": GRPC_MAX_MESSAGE,
                                            "grpc.max_receive_message_length": GRPC_MAX_MESSAGE})
            else:
                kwargs.update(port=address.port)
            if skip_tls_verification:
                kwargs["verify"] = False
            with warnings.catch_warnings():
                # qdrant-client warns through `warnings`; pipeline.open_target says it our way.
                warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
                self.client = QdrantClient(**kwargs)
        else:  # pragma: no cover - parse_target_url does not produce other kinds here
            raise InputError(f"unsupported target {address.kind}")

    @staticmethod
    def _open_local(path: str) -> QdrantClient:
        try:
            return QdrantClient(path=path)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise InputError(
                    f"The local Qdrant folder {path} is open in another process.",
                    fix="stop the other process (local mode allows one at a time) or use another folder.",
                ) from None
            raise

    # -- collection --------------------------------------------------------------------
    def check_reachable(self) -> None:
        """Fail fast before anything is written: no retries (a rerun is free at this point)."""
        try:
            self.client.get_collections()
        except Exception as exc:
            raise translate_error(exc, "connect", self.address) from exc

    def shape(self, collection: str) -> CollectionShape | None:
        if not self.call("check the collection", lambda: self.client.collection_exists(collection)):
            return None
        return _shape_of(self.call("read the collection", lambda: self.client.get_collection(collection)))

    def create_collection(self, spec: CollectionSpec) -> None:
        """Create the collection. A server builds HNSW while loading: every m is 0 until
        ``finish_load`` (per-vector HNSW too). Local mode has no HNSW and keeps no collection-wide
        HNSW or quantization (it reports Qdrant's defaults): there each vector records its own."""
        options = spec.options
        defer = self.capabilities.hnsw
        m, ef = spec.hnsw

        def vector(v) -> models.VectorParams:
            own = spec.vector_hnsw(v) if defer else (v.hnsw_m, v.hnsw_ef_construct)
            quantization = spec.vector_quantization(v) if defer else v.quantization
            return models.VectorParams(
                size=v.size, distance=models.Distance(v.distance), datatype=models.Datatype(v.datatype),
                on_disk=options.on_disk, quantization_config=_quantization(quantization),
                hnsw_config=None if own is None else models.HnswConfigDiff(m=0 if defer else own[0],
                                                                           ef_construct=own[1]))

        vectors = {v.name: vector(v) for v in spec.dense_vectors}
        sparse = {v.name: models.SparseVectorParams(index=models.SparseIndexParams(on_disk=options.on_disk),
                                                    modifier=models.Modifier.IDF if v.modifier == "idf" else None)
                  for v in spec.sparse_vectors}
        if list(vectors) == [""]:  # Qdrant's unnamed default vector (what framework stores expect)
            vectors = vectors[""]
        self.call("create the collection", lambda: self.client.create_collection(
            spec.name, vectors_config=vectors, sparse_vectors_config=sparse or None,
            # m=0 defers HNSW building until every point is in (finish_load restores m).
            hnsw_config=models.HnswConfigDiff(m=0 if defer else m, ef_construct=ef),
            quantization_config=_quantization(spec.quantization), shard_number=options.shard_number,
            replication_factor=options.replication_factor))
        if not self.capabilities.payload_indexes:
            return
        self._strict.pop(spec.name, None)
        strict = self.strict_mode(spec.name)  # the server's default for new collections (Qdrant Cloud: on)
        cap = strict.max_payload_index_count if strict else None
        if cap is not None and len(options.payload_indexes) > cap:
            self.delete_collection(spec.name)  # just created, empty: a rerun starts clean
            raise InputError(
                f"The new collection {spec.name!r} allows {cap} payload indexes (strict mode's "
                f"max_payload_index_count) and the plan has {len(options.payload_indexes)}: "
                + ", ".join(f"{f} ({k})" for f, k in options.payload_indexes) + ". Nothing was written.",
                fix="leave out the indexes mirrored from PostgreSQL (--qdrant.auto-payload-index false) or some "
                    "--qdrant.payload-index flags, or raise the collection default's max_payload_index_count.")
        self.create_payload_indexes(spec.name, options.payload_indexes)

    def create_payload_indexes(self, collection: str, indexes) -> None:
        for field, kind in indexes:
            # "tenant": one collection for many tenants (Qdrant's multitenancy guide: is_tenant=true).
            schema = (models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
                      if kind == TENANT_INDEX else models.PayloadSchemaType(kind))
            self.call(f"create the payload index on {field}", lambda field=field, schema=schema: self.client.create_payload_index(
                collection, field_name=field, field_schema=schema, wait=True))
        self._strict.pop(collection, None)  # its indexes changed

    def strict_mode(self, collection: str) -> StrictMode | None:
        """The collection's strict-mode limits (None: off, or no such collection), read once."""
        if collection not in self._strict:
            self._strict[collection] = None
            if self.address.kind == "server" and self.call(
                    "check the collection", lambda: self.client.collection_exists(collection)):
                info = self.call("read the collection", lambda: self.client.get_collection(collection))
                self._strict[collection] = _strict_of(info)
        return self._strict[collection]

    def points_per_request(self, collection: str) -> int | None:
        strict = self.strict_mode(collection)
        return strict.points_per_request() if strict else None

    def finish_load(self, spec: CollectionSpec, created: bool) -> None:
        """Restore HNSW's m (the collection's and each vector's own) on a collection a server loaded
        with m=0; Qdrant then builds the index. Local mode was created with its values."""
        if not (created and self.capabilities.hnsw and spec.builds_hnsw):
            return
        m, ef = spec.hnsw
        own = {v.name: models.VectorParamsDiff(hnsw_config=models.HnswConfigDiff(m=h[0], ef_construct=h[1]))
               for v in spec.dense_vectors if (h := spec.vector_hnsw(v)) is not None}
        self.call("enable HNSW indexing", lambda: self.client.update_collection(
            spec.name, hnsw_config=models.HnswConfigDiff(m=m, ef_construct=ef), vectors_config=own or None))

    def records(self, collection: str, namespace: str):
        """Small JSON records kept in the target itself (resume progress, sync markers)."""
        return _RetryingRecords(CollectionRecords(self.client, collection, namespace), self)

    def delete_collection(self, collection: str) -> None:
        self._strict.pop(collection, None)
        self.call("delete the collection", lambda: self.client.delete_collection(collection))

    # -- aliases (destination/aliases.py) -------------------------------------------------
    def collection_names(self) -> list[str]:
        return [c.name for c in self.call("list collections", lambda: self.client.get_collections().collections)]

    def aliases(self) -> dict[str, str]:
        """alias -> collection, every alias of the target."""
        found = self.call("list aliases", lambda: self.client.get_aliases().aliases)
        return {a.alias_name: a.collection_name for a in found}

    def update_aliases(self, *, delete: list[str], create: list[tuple[str, str]]) -> None:
        """Delete then create aliases (alias, collection), in ONE request: the server applies it as one
        change, so a reader of the alias never finds it missing."""
        actions: list = [models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a)) for a in delete]
        actions += [models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=c, alias_name=a))
                    for a, c in create]
        self.call("update aliases", lambda: self.client.update_collection_aliases(change_aliases_operations=actions))

    # -- points ------------------------------------------------------------------------
    def encode(self, batch: PointBatch) -> PointBatch:
        """``batch`` with its points encoded for this target's wire, once (the Writer sizes requests by
        these bytes); local mode's batches stay as they are."""
        return wire.encode(batch, self.wire) if self.wire else batch

    def upsert(self, collection: str, batch: PointBatch, *, wait: bool = True) -> None:
        """Write points; a request the server rejects as too large is split in halves and retried."""
        if self.wire:
            send = self._grpc_points.send if self._grpc_points is not None else self._rest_upsert
            split_when_too_large(self.encode(batch), lambda part: self.call(
                "write points", lambda: send(collection, part, wait)))
        else:
            split_when_too_large(batch, lambda part: self.call("write points", lambda: self.client.upsert(
                collection, points=points_of(part), wait=wait)))

    def _rest_upsert(self, collection: str, batch: wire.EncodedBatch, wait: bool) -> None:
        """PUT /collections/{name}/points with our JSON, through qdrant-client's REST client (its
        headers with the API key, TLS settings, timeout, and its exceptions for error answers)."""
        self.client.http.client.request(
            type_=models.InlineResponse2008, method="PUT", url="/collections/{collection_name}/points",
            headers={"Content-Type": "application/json"}, path_params={"collection_name": collection},
            params={"wait": str(wait).lower()}, content=wire.rest_body(batch.encoded))

    def count(self, collection: str) -> int:
        return self.call("count points", lambda: self.client.count(collection, exact=True).count)

    def retrieve(self, collection: str, ids: list, *, with_vectors: bool = True) -> list[models.Record]:
        return self.call("read points", lambda: self.client.retrieve(
            collection, ids=ids, with_payload=True, with_vectors=with_vectors))

    def scroll(self, collection: str, *, batch: int = 1000, with_vectors: bool = False,
               with_payload: bool | list[str] = True) -> Iterator[models.Record]:
        strict = self.strict_mode(collection)
        if strict and strict.max_query_limit:
            batch = min(batch, strict.max_query_limit)  # a longer page is refused
        offset = None
        while True:
            records, offset = self.call("read points", lambda offset=offset: self.client.scroll(
                collection, limit=batch, offset=offset, with_payload=with_payload, with_vectors=with_vectors))
            yield from records
            if offset is None:
                return

    def apply(self, collection: str, operations: list[ops.Operation], *, wait: bool = True) -> None:
        """Apply operations in order, as one request (the server applies a batch in order); one the
        server rejects as too large is split like an upsert."""
        def send(part: list[ops.Operation]) -> None:
            converted = [c for op in part for c in _client_operations(op)]
            if converted:
                self.call("apply changes", lambda: self.client.batch_update_points(
                    collection, update_operations=converted, wait=wait))
        split_when_too_large(operations, send)

    def search(self, collection: str, vector_name: str, query: Any, limit: int, *, exact: bool) -> list[tuple[Any, float]]:
        """(id, score) of the nearest points; ``exact`` forces a full scan (no HNSW)."""
        if isinstance(query, SparseValue):
            query = _sparse(query.indices.tolist(), query.values.tolist())
        elif not isinstance(query, list):
            query = [float(x) for x in query]
        # Without HNSW (local mode) every search is exhaustive (and search_params only warn). A
        # quantized collection re-ranks with the original vectors (Qdrant ignores this elsewhere).
        params = models.SearchParams(exact=exact, quantization=None if exact else models.QuantizationSearchParams(
            rescore=True, oversampling=RESCORE_OVERSAMPLING)) if self.capabilities.hnsw else None
        result = self.call("search", lambda: self.client.query_points(
            collection, query=query, using=vector_name or None, limit=limit, with_payload=False,
            search_params=params))
        return [(p.id, p.score) for p in result.points]

    def index_status(self, collection: str) -> tuple[int, int, bool]:
        """(indexed vectors, points, optimizer idle): HNSW recall means something only once indexed."""
        info = self.call("read the collection", lambda: self.client.get_collection(collection))
        idle = info.status == models.CollectionStatus.GREEN
        return info.indexed_vectors_count or 0, info.points_count or 0, idle

    def delete_points(self, collection: str, ids: Iterable) -> None:
        ids = list(ids)
        self.call("delete points", lambda: self.client.delete(
            collection, points_selector=models.PointIdsList(points=ids), wait=True))

    def close(self) -> None:
        try:
            self.client.close()
            if self._grpc_points is not None:
                self._grpc_points.close()
        except Exception:  # closing must not hide the real outcome
            pass


class _RetryingRecords:
    """Collection records, their calls retried and translated like every other call."""

    def __init__(self, store: CollectionRecords, target: QdrantTarget):
        self.store, self.target = store, target

    def describe(self) -> str:
        return self.store.describe()

    def load(self, key):
        return self.target.call("read a saved record", lambda: self.store.load(key))

    def save(self, key, record) -> None:
        self.target.call("save a record", lambda: self.store.save(key, record))

    def records(self):
        return self.target.call("list saved records", self.store.records)

    def delete(self, key) -> bool:
        return self.target.call("delete a saved record", lambda: self.store.delete(key))


def _vector_value(value: Any) -> Any:
    if isinstance(value, SparseValue):
        return _sparse(value.indices.tolist(), value.values.tolist())
    return [float(x) for x in value]


def _client_operations(op: ops.Operation) -> list:
    if isinstance(op, ops.Upsert):
        return [models.UpsertOperation(upsert=models.PointsList(points=points_of(op.batch)))]
    if isinstance(op, ops.SetPayload):
        return [models.SetPayloadOperation(set_payload=models.SetPayload(payload=op.payload, points=[op.point_id]))]
    if isinstance(op, ops.UpdateVectors):
        vectors = {name: _vector_value(v) for name, v in op.vectors.items()}
        return [models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(
            points=[models.PointVectors(id=op.point_id, vector=vectors)]))]
    if isinstance(op, ops.DeleteVectors):
        return [models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(
            points=[op.point_id], vector=list(op.names)))]
    if isinstance(op, ops.DeletePoints):
        return [models.DeleteOperation(delete=models.PointIdsList(points=list(op.ids)))] if op.ids else []
    if isinstance(op, ops.ClearCollection):
        return [models.DeleteOperation(delete=models.FilterSelector(filter=models.Filter()))]
    raise TypeError(f"unknown operation {op!r}")


