"""Qdrant Edge target: Qdrant's own engine in-process (``qdrant-edge-py``, beta, pinned).

``edge:DIR`` with ``--qdrant.collection NAME`` writes the shard ``DIR/NAME``, so one
folder can hold several collections like a Qdrant storage directory. The same
plan, mapping and checks apply as for a server; HNSW building is deferred to
the end of the load (built by ``optimize()``) unless every vector's m is 0 (``--qdrant.hnsw-m 0``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pg2qdrant.core.errors import InputError, TargetError
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.vectors import SparseValue
from pg2qdrant.core.options import RESCORE_OVERSAMPLING
from pg2qdrant.core.plan import TENANT_INDEX, CollectionShape, CollectionSpec
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination.address import TargetAddress
from pg2qdrant.destination.base import Capabilities

CONFIG_FILE = "edge_config.json"  # written by Qdrant Edge next to its segments


def _edge():
    try:
        import qdrant_edge
    except ImportError:
        raise InputError("The Qdrant Edge target needs the qdrant-edge-py package.",
                         fix="pip install 'pg2qdrant[edge]'") from None
    return qdrant_edge


_DATATYPES = {"float32": "Float32", "float16": "Float16", "uint8": "Uint8"}
_PAYLOAD_TYPES = {"keyword": "Keyword", "integer": "Integer", "float": "Float", "bool": "Bool",
                  "datetime": "Datetime", "uuid": "Uuid", "text": "Text", "geo": "Geo",
                  TENANT_INDEX: "Keyword"}  # is_tenant is a server-side storage hint


def _quantization(kind: str | None):
    """Edge's quantization config, as the qdrant-client target's (``int8`` or ``binary``)."""
    edge = _edge()
    if kind == "int8":
        return edge.ScalarQuantizationConfig(type=edge.ScalarType.Int8, always_ram=True)
    if kind == "binary":
        return edge.BinaryQuantizationConfig(always_ram=True)
    return None


class EdgeTarget:
    """One Edge shard per collection, under the ``edge:`` folder."""

    # In-process engine that locks its folder and holds the GIL while writing: one request at a time;
    # no network request, so no size limit; it takes Points built from the batch (no wire encoding).
    capabilities = Capabilities(in_process=True, max_in_flight=1, max_request_bytes=None, hnsw=True,
                                payload_indexes=True, encodes_wire=False)
    retries = 0  # nothing transient to retry in-process

    def __init__(self, address: TargetAddress):
        self.address = address
        self.root = Path(address.path)
        self._shards: dict[str, Any] = {}

    def path(self, collection: str) -> Path:
        return self.root / collection

    def shard(self, collection: str):
        if collection not in self._shards:
            edge = _edge()
            path = self.path(collection)
            if not (path / CONFIG_FILE).exists():
                raise InputError(f"No Edge shard for collection {collection!r} at {path}.",
                                 fix="run migrate first, or check --qdrant.url edge:DIR and --qdrant.collection.")
            try:
                self._shards[collection] = edge.EdgeShard.load(str(path))
            except Exception as exc:
                raise _translate(exc, f"open the Edge shard at {path}") from None
        return self._shards[collection]

    # -- collection --------------------------------------------------------------------
    def check_reachable(self) -> None:
        _edge()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"Cannot create the Edge folder {self.root}: {exc}.",
                             fix="choose a writable folder in --qdrant.url edge:DIR.") from None

    def shape(self, collection: str) -> CollectionShape | None:
        config_file = self.path(collection) / CONFIG_FILE
        if not config_file.exists():
            return None
        config = json.loads(config_file.read_text())
        dense = {name: (p["size"], p["distance"], (p.get("datatype") or "float32").lower())
                 for name, p in (config.get("vectors") or {}).items()}
        sparse = config.get("sparse_vectors") or {}
        return CollectionShape(dense, frozenset(sparse), frozenset(n for n, sp in sparse.items()
                                                                   if str((sp or {}).get("modifier", "")).lower() == "idf"))

    @staticmethod
    def _config(spec: CollectionSpec, *, build: bool, optimizers=None):
        """The shard's configuration for the collection: HNSW as planned (``build``) or with every
        m at 0 (no index while loading), quantization as planned."""
        edge = _edge()
        options = spec.options

        def hnsw(m: int, ef: int):
            return edge.HnswIndexConfig(m=m if build else 0, ef_construct=ef, full_scan_threshold=10000)

        vectors = {
            v.name: edge.EdgeVectorParams(
                size=v.size, distance=getattr(edge.Distance, v.distance),
                datatype=getattr(edge.VectorStorageDatatype, _DATATYPES[v.datatype]), on_disk=options.on_disk,
                hnsw_config=None if (own := spec.vector_hnsw(v)) is None else hnsw(*own),
                quantization_config=_quantization(spec.vector_quantization(v)))
            for v in spec.dense_vectors
        }
        sparse = {v.name: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf if v.modifier == "idf" else None)
                  for v in spec.sparse_vectors}
        return edge.EdgeConfig(
            vectors=vectors or None, sparse_vectors=sparse or None, hnsw_config=hnsw(*spec.hnsw),
            quantization_config=_quantization(spec.quantization), optimizers=optimizers,
        )

    def create_collection(self, spec: CollectionSpec) -> None:
        edge = _edge()
        # m=0: no HNSW while loading; finish_load() builds it once, at the end.
        config = self._config(spec, build=False)
        path = self.path(spec.name)
        try:
            shard = edge.EdgeShard.create(str(path), config)
        except Exception as exc:
            raise _translate(exc, f"create the Edge shard at {path}") from None
        self._shards[spec.name] = shard
        for field, kind in spec.options.payload_indexes:
            shard.update(edge.UpdateOperation.create_field_index(
                field, getattr(edge.PayloadSchemaType, _PAYLOAD_TYPES[kind])))

    def finish_load(self, spec: CollectionSpec, created: bool) -> None:
        """Build HNSW now that every point is in (skipped for an existing shard or m=0)."""
        shard = self.shard(spec.name)
        shard.flush()
        if not created or not spec.builds_hnsw:
            return
        edge = _edge()
        shard.close()
        del self._shards[spec.name]
        # Index every segment, however small (the default threshold would leave small
        # collections unindexed).
        config = self._config(spec, build=True, optimizers=edge.EdgeOptimizersConfig(indexing_threshold=1))
        shard = edge.EdgeShard.load(str(self.path(spec.name)), config)
        self._shards[spec.name] = shard
        shard.optimize()
        shard.flush()

    def records(self, collection: str, namespace: str):
        """Small JSON records as a file inside the edge folder (the target itself)."""
        from pg2qdrant.destination.checkpoints import FileRecords
        return FileRecords(self.root / f"{collection}.json")

    def delete_collection(self, collection: str) -> None:
        import shutil
        shard = self._shards.pop(collection, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self.path(collection), ignore_errors=True)

    # -- points ------------------------------------------------------------------------
    # -- aliases: Edge has none (destination/aliases.py) --------------------------------------
    def _no_aliases(self, *args: Any, **kwargs: Any) -> Any:
        raise InputError(
            "Qdrant Edge has no collection aliases, so --qdrant.alias and `pg2qdrant alias` cannot be used "
            f"with {self.address.display()}.",
            fix="write to a named collection with --qdrant.collection (and point the application at it), or "
                "use a Qdrant server (--qdrant.url http(s):// or grpc://) or local mode (--qdrant.url local:DIR).")

    collection_names = aliases = update_aliases = _no_aliases

    def encode(self, batch: PointBatch) -> PointBatch:
        return batch  # Points are built from the batch itself (see capabilities.encodes_wire)

    def upsert(self, collection: str, batch: PointBatch, *, wait: bool = True) -> None:
        edge = _edge()
        points = edge_points(batch, edge)
        try:
            self.shard(collection).update(edge.UpdateOperation.upsert_points(points))
        except Exception as exc:
            raise _translate(exc, "write points") from None

    def flush(self, collection: str) -> None:
        self.shard(collection).flush()

    def count(self, collection: str) -> int:
        return self.shard(collection).count(_edge().CountRequest(exact=True))

    def retrieve(self, collection: str, ids: list, *, with_vectors: bool = True) -> list:
        return self.shard(collection).retrieve(list(ids), with_payload=True, with_vector=with_vectors)

    def scroll(self, collection: str, *, batch: int = 1000, with_vectors: bool = False,
               with_payload: bool | list[str] = True) -> Iterator[Any]:
        edge = _edge()
        offset = None
        while True:
            records, offset = self.shard(collection).scroll(edge.ScrollRequest(
                offset=offset, limit=batch, with_payload=with_payload, with_vector=with_vectors))
            yield from records
            if offset is None:
                return

    def apply(self, collection: str, operations: list[ops.Operation], *, wait: bool = True) -> None:
        """Apply operations in order (each is an Edge update operation)."""
        edge = _edge()
        shard = self.shard(collection)
        try:
            for op in operations:
                for update in _edge_operations(op, edge):
                    shard.update(update)
        except Exception as exc:
            raise _translate(exc, "apply changes") from None

    def search(self, collection: str, vector_name: str, query: Any, limit: int, *, exact: bool) -> list[tuple[Any, float]]:
        edge = _edge()
        if isinstance(query, SparseValue):
            query = edge.SparseVector(query.indices.tolist(), query.values.tolist())
        else:
            query = [float(x) for x in query]
        hits = self.shard(collection).query(edge.QueryRequest(
            limit=limit, query=edge.Query.Nearest(query, using=vector_name or None), with_payload=False,
            params=edge.SearchParams(exact=exact, quantization=None if exact else edge.QuantizationSearchParams(
                rescore=True, oversampling=RESCORE_OVERSAMPLING))))
        return [(h.id, h.score) for h in hits]

    def index_status(self, collection: str) -> tuple[int, int, bool]:
        info = self.shard(collection).info()
        return info.indexed_vectors_count, info.points_count, True  # optimize() is synchronous

    def delete_points(self, collection: str, ids: Iterable) -> None:
        self.shard(collection).update(_edge().UpdateOperation.delete_points(list(ids)))

    def strict_mode(self, collection: str) -> None:
        """Qdrant Edge has no strict mode."""
        return None

    def close(self) -> None:
        for shard in self._shards.values():
            try:
                shard.flush()
                shard.close()
            except Exception:
                pass
        self._shards.clear()


def edge_points(batch: PointBatch, edge) -> list:
    return [edge.Point(pid, vector, payload) for pid, vector, payload in batch.points(edge.SparseVector, buffers=True)]


def _edge_vector(value: Any, edge) -> Any:
    if isinstance(value, SparseValue):
        return edge.SparseVector(value.indices.tolist(), value.values.tolist())
    return [float(x) for x in value]


def _edge_operations(op: ops.Operation, edge) -> list:
    U = edge.UpdateOperation
    if isinstance(op, ops.Upsert):
        return [U.upsert_points(edge_points(op.batch, edge))]
    if isinstance(op, ops.SetPayload):
        return [U.set_payload([op.point_id], op.payload)]
    if isinstance(op, ops.UpdateVectors):
        vectors = {name: _edge_vector(v, edge) for name, v in op.vectors.items()}
        return [U.update_vectors([edge.PointVectors(op.point_id, vectors)])]
    if isinstance(op, ops.DeleteVectors):
        return [U.delete_vectors([op.point_id], list(op.names))]
    if isinstance(op, ops.DeletePoints):
        return [U.delete_points(list(op.ids))] if op.ids else []
    if isinstance(op, ops.ClearCollection):
        return [U.delete_points_by_filter(edge.Filter())]
    raise TypeError(f"unknown operation {op!r}")


def _translate(exc: Exception, what: str) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    if "lock" in text.lower() or "already" in text.lower():
        return InputError(f"Qdrant Edge could not {what}: {text}",
                          fix="another process has this shard open; stop it or use another folder.")
    return TargetError(f"Qdrant Edge failed to {what}: {text}")
