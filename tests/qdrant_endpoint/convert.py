"""The one conversion between qdrant-client's REST models and Qdrant Edge's types.

Both front-ends speak ``qdrant_client.models``: the REST one parses request JSON into
them with pydantic, the gRPC one converts protobuf messages with qdrant-client's own
``GrpcToRest``/``RestToGrpc`` (so no protobuf field is mapped by hand). This module is
the only place where those models become Edge objects and Edge results become models.
"""

from __future__ import annotations

import uuid
from typing import Any

import qdrant_edge as edge
from qdrant_client import models

DATATYPES = {"float32": "Float32", "float16": "Float16", "uint8": "Uint8"}
SCHEMA_TYPES = {"keyword": "Keyword", "integer": "Integer", "float": "Float", "bool": "Bool",
                "datetime": "Datetime", "uuid": "Uuid", "text": "Text", "geo": "Geo"}


PLACEHOLDER = "__qdrant_endpoint_no_vectors__"


class Unsupported(ValueError):
    """A request the endpoint does not translate (answered as a 400 naming the endpoint)."""


def vector_params(params: models.VectorParams, hnsw: models.HnswConfig) -> edge.EdgeVectorParams:
    """A dense vector's Edge parameters; its own HNSW (``params.hnsw_config``, a diff over the
    collection's ``hnsw``) too, as a server builds one graph per vector with its own m."""
    multi = None
    if params.multivector_config is not None:
        multi = edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)
    datatype = params.datatype.value if params.datatype is not None else "float32"
    own = None
    if params.hnsw_config is not None:
        merged = vector_hnsw(params, hnsw)
        own = edge.HnswIndexConfig(m=merged.m, ef_construct=merged.ef_construct,
                                   full_scan_threshold=merged.full_scan_threshold)
    return edge.EdgeVectorParams(size=params.size, distance=getattr(edge.Distance, params.distance.value),
                                 datatype=getattr(edge.VectorStorageDatatype, DATATYPES[datatype]),
                                 on_disk=params.on_disk, multivector_config=multi, hnsw_config=own)


def vector_hnsw(params: models.VectorParams, hnsw: models.HnswConfig) -> models.HnswConfig:
    """The HNSW a dense vector is indexed with: the collection's, with the vector's own diff over it."""
    own = params.hnsw_config.model_dump(exclude_none=True) if params.hnsw_config is not None else {}
    return hnsw.model_copy(update=own)


def sparse_params(params: models.SparseVectorParams) -> edge.EdgeSparseVectorParams:
    """A sparse vector's Edge parameters: the IDF modifier (BM25 vectors) is kept."""
    idf = getattr(params, "modifier", None) == models.Modifier.IDF
    return edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf if idf else None)


def shard_config(dense: dict[str, models.VectorParams], sparse: dict[str, models.SparseVectorParams],
                 hnsw: models.HnswConfig, indexing_threshold: int | None) -> edge.EdgeConfig:
    """The Edge shard for a collection ("" is the unnamed vector)."""
    optimizers = None if indexing_threshold is None else edge.EdgeOptimizersConfig(
        indexing_threshold=indexing_threshold)
    vectors = {name: vector_params(p, hnsw) for name, p in dense.items()}
    if not dense and not sparse:
        # Qdrant accepts a collection without vectors (pg2qdrant's saved-state one); an Edge shard
        # needs one: an unused, unreported placeholder that no point ever has.
        vectors = {PLACEHOLDER: edge.EdgeVectorParams(size=1, distance=edge.Distance.Dot)}
    return edge.EdgeConfig(
        vectors=vectors or None,
        sparse_vectors={name: sparse_params(p) for name, p in sparse.items()} or None,
        hnsw_config=edge.HnswIndexConfig(m=hnsw.m, ef_construct=hnsw.ef_construct,
                                         full_scan_threshold=hnsw.full_scan_threshold),
        optimizers=optimizers)


def point_id(value: models.ExtendedPointId) -> int | str:
    return value if isinstance(value, int) else str(uuid.UUID(str(value)))


def model_id(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)


def vector(value: Any) -> Any:
    """A point's vector(s) as Edge takes them (unnamed: a list; named: a dict)."""
    if isinstance(value, dict):
        return {name: named_vector(v) for name, v in value.items()}
    return named_vector(value)


def named_vector(value: Any) -> Any:
    if isinstance(value, models.SparseVector):
        return edge.SparseVector(list(value.indices), list(value.values))
    if isinstance(value, (models.Document, models.Image, models.InferenceObject)):
        raise Unsupported("inference objects are not supported by the test endpoint")
    return value


def point(p: models.PointStruct) -> edge.Point:
    return edge.Point(point_id(p.id), vector(p.vector), p.payload)


def point_vectors(p: models.PointVectors) -> edge.PointVectors:
    return edge.PointVectors(point_id(p.id), vector(p.vector))


def with_payload(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, list):
        return value
    if isinstance(value, models.PayloadSelectorInclude):
        return edge.PayloadSelector.Include(value.include)
    if isinstance(value, models.PayloadSelectorExclude):
        return edge.PayloadSelector.Exclude(value.exclude)
    raise Unsupported(f"with_payload={value!r}")


def with_vector(value: Any) -> Any:
    return bool(value) if value is None or isinstance(value, bool) else list(value)


# -- filters ----------------------------------------------------------------------------

def filter_(flt: models.Filter | None) -> edge.Filter | None:
    if flt is None:
        return None

    def conditions(value: Any) -> list | None:
        if value is None:
            return None
        return [condition(c) for c in (value if isinstance(value, list) else [value])]
    min_should = None
    if flt.min_should is not None:
        min_should = edge.MinShould(conditions(flt.min_should.conditions), flt.min_should.min_count)
    return edge.Filter(must=conditions(flt.must), should=conditions(flt.should),
                       must_not=conditions(flt.must_not), min_should=min_should)


def condition(c: Any) -> Any:
    if isinstance(c, models.Filter):
        return filter_(c)
    if isinstance(c, models.FieldCondition):
        return edge.FieldCondition(key=c.key, match=_match(c.match), range=_range(c.range),
                                   values_count=_values_count(c.values_count),
                                   is_empty=c.is_empty, is_null=c.is_null)
    if isinstance(c, models.IsEmptyCondition):
        return edge.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return edge.IsNullCondition(c.is_null.key)
    if isinstance(c, models.HasIdCondition):
        return edge.HasIdCondition({point_id(i) for i in c.has_id})
    if isinstance(c, models.HasVectorCondition):
        return edge.HasVectorCondition(c.has_vector)
    if isinstance(c, models.NestedCondition):
        return edge.NestedCondition(c.nested.key, filter_(c.nested.filter))
    raise Unsupported(f"filter condition {type(c).__name__}")


def _match(m: Any) -> Any:
    if m is None:
        return None
    if isinstance(m, models.MatchValue):
        return edge.MatchValue(m.value)
    if isinstance(m, models.MatchAny):
        return edge.MatchAny(m.any)
    if isinstance(m, models.MatchExcept):
        return edge.MatchExcept(m.except_)
    if isinstance(m, models.MatchText):
        return edge.MatchText(m.text)
    raise Unsupported(f"match {type(m).__name__}")


def _range(r: Any) -> Any:
    if r is None:
        return None
    if isinstance(r, models.DatetimeRange):
        def iso(v: Any) -> Any:
            return None if v is None else (v if isinstance(v, str) else v.isoformat())
        return edge.RangeDateTime(gte=iso(r.gte), gt=iso(r.gt), lte=iso(r.lte), lt=iso(r.lt))
    return edge.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)


def _values_count(v: models.ValuesCount | None) -> Any:
    return None if v is None else edge.ValuesCount(lt=v.lt, gt=v.gt, lte=v.lte, gte=v.gte)


def payload_schema(kind: Any) -> Any:
    """A field index schema (type name or typed params) as Edge's PayloadSchemaType."""
    name = kind.value if isinstance(kind, models.PayloadSchemaType) else getattr(kind, "type", kind)
    name = getattr(name, "value", name)
    if name not in SCHEMA_TYPES:
        raise Unsupported(f"payload index type {kind!r}")
    return getattr(edge.PayloadSchemaType, SCHEMA_TYPES[name])


# -- results ----------------------------------------------------------------------------

def _out_vector(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {name: _out_vector(v) for name, v in value.items()}
    if isinstance(value, edge.SparseVector):
        return models.SparseVector(indices=list(value.indices), values=list(value.values))
    return value


def record(r: Any, unnamed: bool) -> models.Record:
    vec = _out_vector(r.vector)
    if unnamed and isinstance(vec, dict) and set(vec) <= {""}:
        vec = vec.get("")
    return models.Record.model_construct(id=model_id(r.id), payload=r.payload, vector=vec,
                                         shard_key=None, order_value=None)


def scored_point(p: Any, unnamed: bool) -> models.ScoredPoint:
    vec = _out_vector(p.vector)
    if unnamed and isinstance(vec, dict) and set(vec) <= {""}:
        vec = vec.get("")
    return models.ScoredPoint.model_construct(id=model_id(p.id), version=p.version, score=p.score,
                                              payload=p.payload, vector=vec, shard_key=None,
                                              order_value=None)
