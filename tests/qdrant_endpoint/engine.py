"""The engine behind both front-ends: one Qdrant Edge shard per collection, in a temp folder.

Storage, payload indexes, filters, exact and HNSW search are Qdrant's own (Edge runs
Qdrant's Rust segment code). What a server adds around a shard and Edge has no notion
of (collection names and configuration as reported by "get collection", operation ids,
error statuses) is kept here, in qdrant-client's REST models. Every call holds one
lock: Edge shards are used from many server threads.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qdrant_edge as edge
from qdrant_client import models

from . import convert
from . import strict as S

DEFAULT_HNSW = models.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000, max_indexing_threads=0,
                                 on_disk=False)
DEFAULT_OPTIMIZERS = models.OptimizersConfig(deleted_threshold=0.2, vacuum_min_vector_number=1000,
                                             default_segment_number=0, indexing_threshold=10000,
                                             flush_interval_sec=5)


class ApiError(Exception):
    """A request Qdrant would refuse: ``status`` is the HTTP status (the gRPC front maps it)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds (Retry-After / retry-after metadata), for a 429


def not_found(name: str) -> ApiError:
    return ApiError(404, f"Not found: Collection `{name}` doesn't exist!")


def alias_not_found(name: str) -> ApiError:
    return ApiError(404, f"Not found: Alias {name} does not exists!")


def _edge_error(exc: Exception) -> ApiError:
    """Edge raises plain exceptions carrying Qdrant's own messages; give them Qdrant's statuses."""
    text = str(exc)
    if isinstance(exc, (TypeError, convert.Unsupported)):
        return ApiError(400, f"Format error in request: {text}")
    if "not found" in text.lower() or "no point with id" in text.lower():
        return ApiError(404, f"Not found: {text}")
    return ApiError(400, f"Wrong input: {text}")


@dataclass
class Collection:
    name: str
    path: Path
    shard: Any
    dense: dict[str, models.VectorParams]  # "" is the unnamed vector
    sparse: dict[str, models.SparseVectorParams]
    hnsw: models.HnswConfig
    optimizers: models.OptimizersConfig
    quantization: Any = None
    metadata: dict | None = None
    params: dict[str, Any] = field(default_factory=dict)  # shard_number, replication_factor, ...
    status: models.CollectionStatus = models.CollectionStatus.GREEN  # tests may set YELLOW
    strict: models.StrictModeConfig | None = None  # strict_mode_config (strict.py enforces it when enabled)
    limiter: S.RateLimiter | None = None  # the write rate limiter of strict mode's write_rate_limit

    @property
    def unnamed(self) -> bool:
        return "" in self.dense

    @property
    def strict_on(self) -> bool:
        return self.strict is not None and bool(self.strict.enabled)

    def set_strict_mode(self, config: models.StrictModeConfig | None) -> None:
        self.strict = config
        limit = config.write_rate_limit if config is not None and config.enabled else None
        self.limiter = S.RateLimiter(limit) if limit else None

    def indexed(self) -> dict[str, str]:
        """Payload key -> index type (keyword, integer, ...), as "get collection" reports them."""
        return {key: str(idx.data_type).rsplit(".", 1)[-1].lower()
                for key, idx in self.shard.info().payload_schema.items()}

    def check_read(self, flt: Any, limit: int | None = None) -> None:
        """Strict mode's checks of a read (count, scroll, query): its limit and its filter."""
        if not self.strict_on:
            return
        _strict(lambda: S.check_limit(limit, self.strict.max_query_limit, "limit"))
        if self.strict.unindexed_filtering_retrieve is False:
            _strict(lambda: S.check_filter(flt, self.indexed()))

    def check_write(self, operation: Any) -> None:
        """Strict mode's checks of one update operation: batch size, filter, write rate."""
        if not self.strict_on:
            return
        points = None
        if isinstance(operation, models.UpsertOperation):
            points = len(points_of(operation.upsert))
            _strict(lambda: S.check_limit(points, self.strict.upsert_max_batchsize, "upsert limit"))
        elif isinstance(operation, models.UpdateVectorsOperation):
            points = len(operation.update_vectors.points)
            _strict(lambda: S.check_limit(points, self.strict.upsert_max_batchsize, "update limit"))
        if self.strict.unindexed_filtering_update is False:
            _strict(lambda: S.check_filter(S.update_filter(operation), self.indexed()))
        if self.limiter is not None:
            _strict(lambda: self.limiter.consume(S.write_cost(operation, points)))


def _strict(check) -> None:
    try:
        check()
    except S.StrictModeError as exc:
        raise ApiError(exc.status, exc.message, exc.retry_after) from None


class Engine:
    """Collections of Edge shards; methods take and return qdrant-client models."""

    def __init__(self, root: Path | None = None, *, index_every_segment: bool = True):
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="qdrant-endpoint-")
        self.root = Path(root or self._tmp.name)
        # True: HNSW is built (synchronously, when m > 0 is set) for segments of any size, so
        # small test collections are really indexed; False: Qdrant's indexing_threshold applies.
        self.index_every_segment = index_every_segment
        # What a collection created without strict_mode_config gets (Qdrant Cloud: strict mode on).
        self.default_strict_mode: models.StrictModeConfig | None = None
        self.collections: dict[str, Collection] = {}
        self.aliases: dict[str, str] = {}  # alias -> collection, as a server keeps them
        self.lock = threading.RLock()
        self._op_ids = itertools.count(1)

    def close(self) -> None:
        with self.lock:
            for coll in self.collections.values():
                coll.shard.close()
            self.collections.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _get(self, name: str) -> Collection:
        """The collection NAME addresses: its own name, else an alias (as Qdrant resolves it)."""
        coll = self.collections.get(name) or self.collections.get(self.aliases.get(name, ""))
        if coll is None:
            raise not_found(name)
        return coll

    def collection(self, name: str) -> Collection:
        with self.lock:
            return self._get(name)

    def _result(self, wait: bool) -> models.UpdateResult:
        # Writes are applied before the answer either way; wait=false only changes the status.
        status = models.UpdateStatus.COMPLETED if wait else models.UpdateStatus.ACKNOWLEDGED
        return models.UpdateResult(operation_id=next(self._op_ids), status=status)

    # -- collections ---------------------------------------------------------------------
    def list_collections(self) -> list[str]:
        with self.lock:
            return list(self.collections)

    def exists(self, name: str) -> bool:
        with self.lock:
            return name in self.collections or name in self.aliases

    # -- aliases -------------------------------------------------------------------------
    def update_aliases(self, actions: list) -> bool:
        """Apply alias operations (models.*AliasOperation) as one change: every action is checked
        against the state the earlier ones left, and nothing changes unless all of them pass."""
        with self.lock:
            aliases = dict(self.aliases)
            for action in actions:
                if isinstance(action, models.CreateAliasOperation):
                    alias, target = action.create_alias.alias_name, action.create_alias.collection_name
                    if alias in self.collections:
                        raise ApiError(409, f"Wrong input: Collection `{alias}` already exists!")
                    if target not in self.collections:
                        raise not_found(target)
                    aliases[alias] = target
                elif isinstance(action, models.DeleteAliasOperation):
                    aliases.pop(action.delete_alias.alias_name, None)
                elif isinstance(action, models.RenameAliasOperation):
                    old, new = action.rename_alias.old_alias_name, action.rename_alias.new_alias_name
                    if old not in aliases:
                        raise alias_not_found(old)
                    if new in self.collections:
                        raise ApiError(409, f"Wrong input: Collection `{new}` already exists!")
                    aliases[new] = aliases.pop(old)
                else:
                    raise convert.Unsupported(f"alias operation {type(action).__name__}")
            self.aliases = aliases
        return True

    def list_aliases(self, collection: str | None = None) -> list[models.AliasDescription]:
        """Every alias, or those of one collection (which must exist, addressed by its own name)."""
        with self.lock:
            if collection is not None and collection not in self.collections:
                raise not_found(collection)
            return [models.AliasDescription(alias_name=a, collection_name=c) for a, c in sorted(self.aliases.items())
                    if collection is None or c == collection]

    def create_collection(self, name: str, req: models.CreateCollection) -> bool:
        vectors = req.vectors
        dense = {"": vectors} if isinstance(vectors, models.VectorParams) else dict(vectors or {})
        sparse = dict(req.sparse_vectors or {})
        for vname in sparse:
            if vname in dense:
                raise ApiError(400, f"Wrong input: vector name {vname!r} is used by a dense and a sparse vector")
        hnsw = DEFAULT_HNSW.model_copy(update=_set(req.hnsw_config))
        optimizers = DEFAULT_OPTIMIZERS.model_copy(update=_set(req.optimizers_config))
        with self.lock:
            if name in self.collections:
                raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
            if name in self.aliases:
                raise ApiError(400, f"Wrong input: Can't create collection with name {name}. "
                                    "Alias with the same name already exists")
            path = self.root / f"{name}-{uuid.uuid4().hex[:8]}"
            try:
                shard = edge.EdgeShard.create(str(path), convert.shard_config(dense, sparse, hnsw, None))
            except Exception as exc:
                shutil.rmtree(path, ignore_errors=True)
                raise _edge_error(exc) from None
            params = {k: getattr(req, k) for k in ("shard_number", "replication_factor", "write_consistency_factor",
                                                  "on_disk_payload", "sharding_method") if getattr(req, k) is not None}
            coll = self.collections[name] = Collection(name, path, shard, dense, sparse, hnsw, optimizers,
                                                       req.quantization_config, req.metadata, params)
            coll.set_strict_mode(req.strict_mode_config or self.default_strict_mode)
        return True

    def update_collection(self, name: str, req: models.UpdateCollection) -> bool:
        with self.lock:
            coll = self._get(name)
            rebuild = False
            for vname, diff in (req.vectors or {}).items():
                if vname not in coll.dense:
                    raise ApiError(400, f"Wrong input: Not existing vector name error: {vname}")
                update = {k: v for k, v in _set(diff).items() if k == "on_disk"}
                if diff.hnsw_config is not None:  # a diff over the vector's own diff, as a server merges it
                    old = coll.dense[vname].hnsw_config or models.HnswConfigDiff()
                    update["hnsw_config"] = old.model_copy(update=_set(diff.hnsw_config))
                    rebuild = True
                coll.dense[vname] = coll.dense[vname].model_copy(update=update)
            if req.optimizers_config is not None:
                coll.optimizers = coll.optimizers.model_copy(update=_set(req.optimizers_config))
            if req.quantization_config is not None:
                coll.quantization = req.quantization_config
            if req.metadata:
                coll.metadata = {**(coll.metadata or {}), **req.metadata}
            if req.params is not None:
                coll.params.update(_set(req.params))
            if req.strict_mode_config is not None:
                current = coll.strict or models.StrictModeConfig()
                coll.set_strict_mode(current.model_copy(update=_set(req.strict_mode_config)))
            if req.hnsw_config is not None:
                coll.hnsw = coll.hnsw.model_copy(update=_set(req.hnsw_config))
                rebuild = True
            if rebuild:
                self._rebuild(coll)
        return True

    def _rebuild(self, coll: Collection) -> None:
        """Reopen the shard with the new HNSW settings and let Edge's optimizer build the index
        (a server does this in the background; here it is done before the answer)."""
        threshold = 1 if self.index_every_segment else coll.optimizers.indexing_threshold
        coll.shard.flush()
        coll.shard.close()
        coll.shard = edge.EdgeShard.load(str(coll.path), convert.shard_config(
            coll.dense, coll.sparse, coll.hnsw, threshold))
        if any(convert.vector_hnsw(p, coll.hnsw).m > 0 for p in coll.dense.values()) or coll.hnsw.m > 0:
            coll.shard.optimize()

    def delete_collection(self, name: str) -> bool:
        with self.lock:
            coll = self.collections.pop(name, None)  # by its own name only, as Qdrant does
            if coll is None:
                return False
            self.aliases = {a: c for a, c in self.aliases.items() if c != name}  # its aliases go with it
            coll.shard.close()
        shutil.rmtree(coll.path, ignore_errors=True)
        return True

    def info(self, name: str) -> models.CollectionInfo:
        with self.lock:
            coll = self._get(name)
            info = coll.shard.info()
            vectors = coll.dense[""] if coll.unnamed else coll.dense
            schema = {key: models.PayloadIndexInfo(data_type=models.PayloadSchemaType(str(idx.data_type).rsplit('.', 1)[-1].lower()),
                                                   points=idx.points)
                      for key, idx in info.payload_schema.items()}
            params = models.CollectionParams(vectors=vectors, sparse_vectors=coll.sparse or None,
                                             **{"shard_number": 1, "replication_factor": 1,
                                                "write_consistency_factor": 1, "on_disk_payload": True,
                                                **coll.params})
            return models.CollectionInfo(
                status=coll.status, optimizer_status=models.OptimizersStatusOneOf.OK,
                indexed_vectors_count=info.indexed_vectors_count, points_count=info.points_count,
                segments_count=info.segments_count,
                config=models.CollectionConfig(
                    params=params, hnsw_config=coll.hnsw, optimizer_config=coll.optimizers,
                    wal_config=models.WalConfig(wal_capacity_mb=32, wal_segments_ahead=0),
                    quantization_config=coll.quantization, metadata=coll.metadata,
                    strict_mode_config=None if coll.strict is None else models.StrictModeConfigOutput(
                        **coll.strict.model_dump())),
                payload_schema=schema)

    # -- points --------------------------------------------------------------------------
    def update(self, name: str, operations: list, wait: bool = True) -> list[models.UpdateResult]:
        """Apply update operations (models.*Operation) in order; one result each."""
        results = []
        with self.lock:
            coll = self._get(name)
            for operation in operations:
                coll.check_write(operation)
                try:
                    for op in self._edge_operations(coll, operation):
                        coll.shard.update(op)
                except ApiError:
                    raise
                except Exception as exc:
                    raise _edge_error(exc) from None
                results.append(self._result(wait))
        return results

    def _edge_operations(self, coll: Collection, operation: Any) -> list:
        U = edge.UpdateOperation
        if isinstance(operation, models.UpsertOperation):
            return [U.upsert_points([convert.point(p) for p in points_of(operation.upsert)])]
        if isinstance(operation, models.DeleteOperation):
            ids, flt = selector(operation.delete)
            return [U.delete_points(ids) if flt is None else U.delete_points_by_filter(flt)]
        if isinstance(operation, (models.SetPayloadOperation, models.OverwritePayloadOperation)):
            overwrite = isinstance(operation, models.OverwritePayloadOperation)
            body = operation.overwrite_payload if overwrite else operation.set_payload
            ids, flt = selector(body)
            if ids is not None:
                return [(U.overwrite_payload if overwrite else U.set_payload)(ids, body.payload, body.key)]
            return [(U.overwrite_payload_by_filter if overwrite else U.set_payload_by_filter)(
                flt, body.payload, body.key)]
        if isinstance(operation, models.DeletePayloadOperation):
            ids, flt = selector(operation.delete_payload)
            keys = operation.delete_payload.keys
            return [U.delete_payload(ids, keys) if flt is None else U.delete_payload_by_filter(flt, keys)]
        if isinstance(operation, models.ClearPayloadOperation):
            ids, flt = selector(operation.clear_payload)
            return [U.clear_payload(ids) if flt is None else U.clear_payload_by_filter(flt)]
        if isinstance(operation, models.UpdateVectorsOperation):
            vectors = [convert.point_vectors(p) for p in operation.update_vectors.points]
            return [U.update_vectors(vectors)]
        if isinstance(operation, models.DeleteVectorsOperation):
            ids, flt = selector(operation.delete_vectors)
            names = operation.delete_vectors.vector
            return [U.delete_vectors(ids, names) if flt is None else U.delete_vectors_by_filter(flt, names)]
        raise convert.Unsupported(f"update operation {type(operation).__name__}")

    def create_field_index(self, name: str, field_name: str, schema: Any, wait: bool = True) -> models.UpdateResult:
        with self.lock:
            coll = self._get(name)
            if coll.strict_on and coll.strict.max_payload_index_count is not None \
                    and len(coll.indexed()) >= coll.strict.max_payload_index_count:
                n = coll.strict.max_payload_index_count
                raise ApiError(400, f"Bad request: Collection already has the maximum number of payload indices ({n}). "
                                    "Help: Please delete an existing index before creating a new one.")
            try:
                coll.shard.update(edge.UpdateOperation.create_field_index(field_name, convert.payload_schema(schema)))
            except Exception as exc:
                raise _edge_error(exc) from None
            return self._result(wait)

    def delete_field_index(self, name: str, field_name: str, wait: bool = True) -> models.UpdateResult:
        with self.lock:
            self._get(name).shard.update(edge.UpdateOperation.delete_field_index(field_name))
            return self._result(wait)

    def count(self, name: str, flt: models.Filter | None = None, exact: bool = True) -> int:
        with self.lock:
            coll = self._get(name)
            coll.check_read(flt)
            return self._call(lambda: coll.shard.count(edge.CountRequest(filter=convert.filter_(flt), exact=True)))

    def retrieve(self, name: str, ids: list, with_payload: Any = True, with_vector: Any = False) -> list[models.Record]:
        with self.lock:
            coll = self._get(name)
            records = self._call(lambda: coll.shard.retrieve(
                [convert.point_id(i) for i in ids], with_payload=convert.with_payload(with_payload),
                with_vector=convert.with_vector(with_vector)))
            return [convert.record(r, coll.unnamed) for r in records]

    def scroll(self, name: str, req: models.ScrollRequest, *, checked: bool = True) -> tuple[list[models.Record], Any]:
        with self.lock:
            coll = self._get(name)
            if req.order_by is not None:
                raise convert.Unsupported("scroll with order_by")
            if checked:
                coll.check_read(req.filter, req.limit or 10)
            records, nxt = self._call(lambda: coll.shard.scroll(edge.ScrollRequest(
                offset=None if req.offset is None else convert.point_id(req.offset), limit=req.limit or 10,
                filter=convert.filter_(req.filter), with_payload=convert.with_payload(
                    True if req.with_payload is None else req.with_payload),
                with_vector=convert.with_vector(req.with_vector))))
            return [convert.record(r, coll.unnamed) for r in records], \
                None if nxt is None else convert.model_id(nxt)

    def query(self, name: str, req: models.QueryRequest) -> list[models.ScoredPoint]:
        with self.lock:
            coll = self._get(name)
            coll.check_read(req.filter, req.limit or 10)
            prefetches = [self._prefetch(p) for p in _listed(req.prefetch)]
            if isinstance(req.query, models.FusionQuery):  # hybrid search: prefetch stages fused
                return self._fused(coll, req, prefetches)
            if prefetches:
                raise ApiError(400, "Format error in request: the test endpoint fuses prefetches only (FusionQuery)")
            query = req.query
            if isinstance(query, models.NearestQuery):
                query = query.nearest
            using = req.using
            if isinstance(query, (int, str, uuid.UUID)) and not isinstance(query, bool):
                found = self.retrieve(name, [query], with_payload=False, with_vector=[using or ""])
                if not found:
                    raise ApiError(404, f"Not found: No point with id {query} found")
                vec = found[0].vector
                query = vec.get(using or "") if isinstance(vec, dict) else vec
            elif query is not None and not isinstance(query, (list, models.SparseVector)):
                raise convert.Unsupported(f"query {type(query).__name__}")
            exact = bool(req.params and req.params.exact)
            hnsw_ef = req.params.hnsw_ef if req.params else None
            request = edge.QueryRequest(
                limit=req.limit or 10, offset=req.offset or 0,
                query=None if query is None else edge.Query.Nearest(convert.named_vector(query), using=using or None),
                filter=convert.filter_(req.filter), score_threshold=req.score_threshold,
                params=edge.SearchParams(exact=exact, hnsw_ef=hnsw_ef),
                with_payload=convert.with_payload(req.with_payload or False),
                with_vector=convert.with_vector(req.with_vector))
            return [convert.scored_point(p, coll.unnamed) for p in self._call(lambda: coll.shard.query(request))]

    @staticmethod
    def _prefetch(p: models.Prefetch) -> edge.Prefetch:
        """One stage of a hybrid query (a nearest query, dense or sparse; no nested stage)."""
        query = p.query.nearest if isinstance(p.query, models.NearestQuery) else p.query
        if p.prefetch or not isinstance(query, (list, models.SparseVector)):
            raise convert.Unsupported("a prefetch other than a nearest-vector query")
        return edge.Prefetch(limit=p.limit or 10, query=edge.Query.Nearest(convert.named_vector(query),
                                                                         using=p.using or None),
                             filter=convert.filter_(p.filter), score_threshold=p.score_threshold)

    def _fused(self, coll, req: models.QueryRequest, prefetches: list) -> list[models.ScoredPoint]:
        """RRF (Qdrant's k=2) or DBSF over the prefetch stages, as Qdrant's Query API fuses them."""
        fusion = edge.Fusion.Rrf(k=2) if req.query.fusion == models.Fusion.RRF else edge.Fusion.Dbsf()
        request = edge.QueryRequest(
            limit=req.limit or 10, offset=req.offset or 0, query=fusion, prefetches=prefetches,
            filter=convert.filter_(req.filter), with_payload=convert.with_payload(req.with_payload or False),
            with_vector=convert.with_vector(req.with_vector))
        return [convert.scored_point(p, coll.unnamed) for p in self._call(lambda: coll.shard.query(request))]

    @staticmethod
    def _call(fn):
        try:
            return fn()
        except ApiError:
            raise
        except Exception as exc:
            raise _edge_error(exc) from None

    # -- what tests look at --------------------------------------------------------------
    def points(self, name: str) -> dict[Any, models.Record]:
        """Every point of a collection, with payload and vectors, by id."""
        with self.lock:
            req = models.ScrollRequest(limit=1000, with_payload=True, with_vector=True)
            out: dict[Any, models.Record] = {}
            while True:
                records, nxt = self.scroll(name, req, checked=False)  # the tests' view: no strict mode
                out.update((r.id, r) for r in records)
                if nxt is None:
                    return out
                req = req.model_copy(update={"offset": nxt})


def _set(model: Any) -> dict:
    """The fields a request set (a diff's None fields leave the setting alone)."""
    if model is None:
        return {}
    return {k: v for k, v in model.model_dump(exclude_unset=True).items() if v is not None}


def points_of(insert: Any) -> list[models.PointStruct]:
    """PointInsertOperations (a list or a column batch) as PointStructs."""
    if isinstance(insert, models.PointsList):
        return list(insert.points)
    if isinstance(insert, models.PointsBatch):
        b = insert.batch
        n = len(b.ids)
        payloads = b.payloads or [None] * n
        if isinstance(b.vectors, dict):
            vectors = [{name: vs[i] for name, vs in b.vectors.items()} for i in range(n)]
        else:
            vectors = list(b.vectors)
        return [models.PointStruct.model_construct(id=b.ids[i], vector=vectors[i], payload=payloads[i])
                for i in range(n)]
    raise convert.Unsupported(f"point insert {type(insert).__name__}")


def selector(value: Any) -> tuple[list | None, Any]:
    """(point ids, None) or (None, an Edge filter) from a points selector, filter or id list."""
    if isinstance(value, list):
        return [convert.point_id(i) for i in value], None
    if isinstance(value, models.PointIdsList):
        return [convert.point_id(i) for i in value.points], None
    if isinstance(value, models.FilterSelector):
        return None, convert.filter_(value.filter) or edge.Filter()
    if isinstance(value, models.Filter):
        return None, convert.filter_(value)
    points = getattr(value, "points", None)
    flt = getattr(value, "filter", None)
    if points is not None:
        return selector(points)
    if flt is not None:
        return None, convert.filter_(flt)
    raise ApiError(400, "Format error in request: expected `points` or `filter`")


def _listed(value) -> list:
    """A request's prefetch: none, one or a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
