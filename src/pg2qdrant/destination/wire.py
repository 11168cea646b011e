"""Write requests for a Qdrant server, encoded once, straight from a :class:`PointBatch`.

qdrant-client builds a pydantic ``PointStruct`` per point, turns every vector
component into a Python float, then converts all of it again into protobuf
messages (gRPC) or JSON through pydantic (REST): ~5k points/s of 768-d vectors
per process, most of a migration's time. Here a batch becomes each point's
request bytes once:

* gRPC: each point's ``UpsertPoints.points`` entry, written as protobuf wire
  bytes. A dense vector column is one numpy array with each row's fixed field
  prefix (tags and lengths are the same for every row of a column) in front of
  its little-endian float32 bytes, which is what protobuf's packed ``repeated
  float`` is. Hand-written because no library offers it: protobuf (upb) builds
  one Python message object per point, vector and payload value (~25k points/s
  here), and has no way to write many messages from arrays. The messages are
  those of ``qdrant_client.grpc`` and mean exactly what qdrant-client sends for
  the same points (tests/test_wire.py decodes them with those classes and
  compares them field by field with qdrant-client's own conversion).
* REST: each point's JSON, by orjson, which writes numpy arrays natively.

The bytes travel with the batch (:class:`EncodedBatch`), so splitting it into
requests by size, or in halves after a "too large" answer, never re-encodes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from pg2qdrant.core.errors import DataError
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.ids import INT64_MAX, INT64_MIN
from pg2qdrant.core.mapping.vectors import SparseValue

GRPC = "grpc"
REST = "rest"

# ---------------------------------------------------------------------------------------
# Protobuf wire format (https://protobuf.dev/programming-guides/encoding/)
# ---------------------------------------------------------------------------------------

_VARINT = 0  # wire type of integers and booleans
_LEN = 2  # wire type of strings, bytes, messages and packed repeated fields
_ONE_BYTE = [bytes([i]) for i in range(128)]
_SMALL_VARINTS = [bytes([i]) if i < 128 else bytes([i & 0x7F | 0x80, i >> 7]) for i in range(1 << 14)]


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer (lengths and field values)."""
    if n < 16384:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire_type: int = _LEN) -> bytes:
    return varint(number << 3 | wire_type)


def field_bytes(number: int, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    return tag(number) + varint(len(body)) + body


def packed_varints(values: np.ndarray) -> bytes:
    """Packed varints of non-negative integers (sparse indices), computed with numpy."""
    v = values.astype(np.uint64)
    if not len(v):
        return b""
    digits = np.ones(len(v), dtype=np.int64)
    for k in range(1, 10):
        digits += v >= (np.uint64(1) << np.uint64(7 * k))
    width = int(digits.max())
    shifts = (np.arange(width, dtype=np.uint64) * np.uint64(7))[None, :]
    out = ((v[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    out[np.arange(width)[None, :] < (digits[:, None] - 1)] |= 0x80  # continuation bits
    return out[np.arange(width)[None, :] < digits[:, None]].tobytes()


# Field numbers of qdrant_client.grpc messages (points.proto, json_with_int.proto).
UPSERT_COLLECTION, UPSERT_WAIT, UPSERT_POINTS = 1, 2, 3
POINT_ID, POINT_PAYLOAD, POINT_VECTORS = 1, 3, 4
ID_NUM, ID_UUID = 1, 2
VECTORS_VECTOR, VECTORS_NAMED = 1, 2
NAMED_MAP = 1
VECTOR_DENSE, VECTOR_SPARSE = 101, 102
DENSE_DATA = 1
SPARSE_VALUES, SPARSE_INDICES = 1, 2
MAP_KEY, MAP_VALUE = 1, 2
STRUCT_FIELDS, LIST_VALUES = 1, 1
VALUE_NULL, VALUE_DOUBLE, VALUE_INTEGER, VALUE_STRING, VALUE_BOOL, VALUE_STRUCT, VALUE_LIST = 1, 2, 3, 4, 5, 6, 7
_FIXED64 = 1  # wire type of doubles

_NULL = tag(VALUE_NULL, _VARINT) + b"\x00"  # NULL_VALUE (a set oneof is written even at 0)
_TRUE, _FALSE = tag(VALUE_BOOL, _VARINT) + b"\x01", tag(VALUE_BOOL, _VARINT) + b"\x00"
_DOUBLE = struct.Struct("<Bd")  # the double's tag (one byte), then the little-endian double
_DOUBLE_TAG = VALUE_DOUBLE << 3 | _FIXED64
_INT_TAG = tag(VALUE_INTEGER, _VARINT)
_STRING_TAG = tag(VALUE_STRING)
_STRUCT_TAG = tag(VALUE_STRUCT)
_LIST_TAG = tag(VALUE_LIST)
# Tags of the fields above, built once (the encoder writes them for every point and value).
_ENTRY_TAG = tag(STRUCT_FIELDS)  # map entries of Struct.fields and NamedVectors.vectors; ListValue.values
assert _ENTRY_TAG == tag(NAMED_MAP) == tag(LIST_VALUES)
_MAP_KEY_TAG, _MAP_VALUE_TAG = tag(MAP_KEY), tag(MAP_VALUE)
_POINT_ID_TAG, _PAYLOAD_ENTRY_TAG = tag(POINT_ID), tag(POINT_PAYLOAD)
_ID_NUM_TAG, _ID_UUID_TAG = tag(ID_NUM, _VARINT), tag(ID_UUID)
_NAMED_VECTORS_TAG = tag(VECTORS_NAMED)
_POINTS_TAG = tag(UPSERT_POINTS)


class _Unencodable(Exception):
    """A payload value gRPC cannot carry (an integer beyond int64, text that is not Unicode)."""


def _key_field(key: str, cache: dict[str, bytes] = {}) -> bytes:  # noqa: B006 - a deliberate cache
    """A map entry's key field; the few distinct payload keys are encoded once."""
    out = cache.get(key)
    if out is None:
        data = key.encode("utf-8")
        out = _MAP_KEY_TAG + varint(len(data)) + data
        if len(cache) < 10_000:
            cache[key] = out
    return out


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (from a SQL_ASCII database) cannot travel in protobuf."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Unencodable(f"text that is not valid Unicode ({exc.reason})") from None


def value_bytes(v: Any) -> bytes:
    """A payload value as the bytes of a ``qdrant.Value`` message (what json_to_value builds)."""
    t = type(v)
    if t is str:
        data = _utf8(v)
        return _STRING_TAG + varint(len(data)) + data
    if t is int:
        if v >= 0:
            if v > INT64_MAX:
                raise _Unencodable(f"the integer {v}, beyond the 64-bit range of Qdrant payload integers")
            return _INT_TAG + varint(v)
        if v < INT64_MIN:
            raise _Unencodable(f"the integer {v}, beyond the 64-bit range of Qdrant payload integers")
        return _INT_TAG + varint(v + (1 << 64))  # int64: two's complement, 10 bytes
    if t is float:
        return _DOUBLE.pack(_DOUBLE_TAG, v)
    if t is bool:
        return _TRUE if v else _FALSE
    if v is None:
        return _NULL
    if t is dict:
        body = b"".join(_entry(k, x) for k, x in v.items())
        return _STRUCT_TAG + varint(len(body)) + body
    if t is list or t is tuple:
        body = b"".join(_ENTRY_TAG + varint(len(e)) + e for e in map(value_bytes, v))
        return _LIST_TAG + varint(len(body)) + body
    # Anything else (a subclass, a date...) as qdrant-client converts it: rare, so its way (imported
    # here: reader processes do not import qdrant-client otherwise, see grpc_writer.py).
    from qdrant_client.conversions.conversion import json_to_value
    return json_to_value(v).SerializeToString()


def _entry(key: str, v: Any) -> bytes:
    """One map<string, Value> entry's body, length-prefixed under its field tag 1."""
    value = value_bytes(v)
    body = _key_field(key) + _MAP_VALUE_TAG + varint(len(value)) + value
    return _ENTRY_TAG + varint(len(body)) + body


def _payload_field(payload: dict[str, Any]) -> bytes:
    """PointStruct.payload: one field 3 entry per key (a protobuf map is a repeated entry).

    Short strings and floats, most of a table's values, are written inline: this runs once
    per value of every row, and each call or concatenation saved shows in the rate.
    """
    parts = []
    for k, v in payload.items():
        key = _key_field(k)
        t = type(v)
        if t is str:
            data = _utf8(v)
            n = len(data)
            if n < 100 and len(key) < 20:  # every length below fits one varint byte
                parts.append(b"%b%b%b%b%b%b%b%b" % (_PAYLOAD_ENTRY_TAG, _ONE_BYTE[len(key) + n + 4], key, _MAP_VALUE_TAG,
                                                     _ONE_BYTE[n + 2], _STRING_TAG, _ONE_BYTE[n], data))
                continue
            value = _STRING_TAG + varint(n) + data
        elif t is float:
            value = _DOUBLE.pack(_DOUBLE_TAG, v)
        else:
            value = value_bytes(v)
        value_len = varint(len(value))
        parts.append(b"".join((_PAYLOAD_ENTRY_TAG, varint(len(key) + 1 + len(value_len) + len(value)), key,
                               _MAP_VALUE_TAG, value_len, value)))
    return b"".join(parts)


def _id_field(pid: Any) -> bytes:
    """PointStruct.id: PointId.num for integers, PointId.uuid for UUID text."""
    if type(pid) is int:
        inner = _ID_NUM_TAG + varint(pid)
    else:
        data = str(pid).encode("ascii")
        inner = _ID_UUID_TAG + varint(len(data)) + data
    return _POINT_ID_TAG + varint(len(inner)) + inner


def _rows(n: int, head_of_len: Callable[[int], bytes], segments: list[tuple[bytes, np.ndarray]]) -> list[tuple]:
    """Per row, the pieces ``head, prefix1, data1[i], prefix2, data2[i]...`` (to be joined into the point).

    ``head_of_len(body_len)`` gives the bytes in front (tags and lengths that enclose the
    segments); each segment's data is an (n, k) uint8 array, of which each row is passed as a
    memoryview: a vector column's float bytes get their protobuf framing without a copy or a
    Python object per component.
    """
    body_len = sum(len(prefix) + data.shape[1] for prefix, data in segments)
    head = head_of_len(body_len)
    views = []
    for prefix, data in segments:
        k = data.shape[1]
        flat = memoryview(np.ascontiguousarray(data).reshape(-1))
        views.append((prefix, [flat[i * k:(i + 1) * k] for i in range(n)]))
    if len(views) == 1:
        prefix, rows = views[0]
        return [(head, prefix, row) for row in rows]
    return [(head, *(piece for prefix, rows in views for piece in (prefix, rows[i]))) for i in range(n)]


def _float_bytes(values: np.ndarray) -> np.ndarray:
    """Rows of little-endian float32 (what packed ``repeated float`` holds) as (n, 4 * dim) uint8."""
    rows = np.ascontiguousarray(values, dtype="<f4")
    return rows.view(np.uint8).reshape(len(rows), -1)


def _dense_vector_head(data_len: int) -> bytes:
    """Vector{dense: DenseVector{data: <data_len bytes>}} up to the float bytes."""
    dense_len = 1 + len(varint(data_len)) + data_len
    return tag(VECTOR_DENSE) + varint(dense_len) + tag(DENSE_DATA) + varint(data_len)


def _named_entry_head(name: str, vector_head: bytes, data_len: int) -> bytes:
    """NamedVectors.vectors entry {key: name, value: Vector} up to the vector's data."""
    key = _key_field(name)
    vector_len = len(vector_head) + data_len
    entry_len = len(key) + 1 + len(varint(vector_len)) + vector_len
    return _ENTRY_TAG + varint(entry_len) + key + _MAP_VALUE_TAG + varint(vector_len) + vector_head


def _dense_segment(name: str, col) -> tuple[bytes, np.ndarray]:
    data = _float_bytes(col.values)
    return _named_entry_head(name, _dense_vector_head(data.shape[1]), data.shape[1]), data


def sparse_vector_bytes(value: SparseValue) -> bytes:
    """Vector{sparse: SparseVector{values, indices}}; empty packed fields are left out, as protobuf does."""
    values = np.ascontiguousarray(value.values, dtype="<f4").tobytes()
    indices = packed_varints(value.indices)
    body = (field_bytes(SPARSE_VALUES, values) if values else b"") + \
           (field_bytes(SPARSE_INDICES, indices) if indices else b"")
    return tag(VECTOR_SPARSE) + varint(len(body)) + body


def _unnamed(batch: PointBatch) -> bool:
    """One dense vector named "": written as the collection's default (unnamed) vector."""
    return not batch.sparse and list(batch.dense) == [""]


_VECTORS_TAG = tag(POINT_VECTORS)


def _vectors_head(named_len: int) -> bytes:
    """PointStruct.vectors = Vectors{vectors: NamedVectors{<named_len bytes of entries>}}."""
    return _VECTORS_TAG + varint(1 + len(varint(named_len)) + named_len) + _NAMED_VECTORS_TAG + varint(named_len)


# complexity: fast paths for the common shapes (one unnamed vector, all dense and present) before the general case:
# the hot path of gRPC upserts.
def _vector_fields(batch: PointBatch) -> list[tuple]:
    """Each point's PointStruct.vectors field (tag, length, Vectors), in pieces to be joined."""
    n = len(batch)
    if _unnamed(batch):
        col = batch.dense[""]
        data = _float_bytes(col.values)
        head = _dense_vector_head(data.shape[1])
        # Vectors{vector: Vector}; a NULL default vector is an empty named map, as qdrant-client
        # converts vector={}.
        rows = _rows(n, lambda body_len: _VECTORS_TAG + varint(1 + len(varint(body_len)) + body_len)
                     + tag(VECTORS_VECTOR) + varint(body_len), [(head, data)])
        return rows if col.all_present else [r if p else (_vectors_head(0),) for r, p in zip(rows, col.present)]
    if not batch.sparse and all(c.all_present for c in batch.dense.values()):
        # The common case: every point's vectors have the same length, so all of it is one buffer.
        return _rows(n, _vectors_head, [_dense_segment(name, c) for name, c in batch.dense.items()])
    columns = []
    for name, col in batch.dense.items():
        rows = _rows(n, lambda _: b"", [_dense_segment(name, col)])
        columns.append([b"".join(r) if p else b"" for r, p in zip(rows, col.present)])
    for name, values in batch.sparse.items():
        key = _key_field(name)
        column = []
        for v in values:
            if v is None:
                column.append(b"")
                continue
            vector = sparse_vector_bytes(v)
            entry = key + _MAP_VALUE_TAG + varint(len(vector)) + vector
            column.append(_ENTRY_TAG + varint(len(entry)) + entry)
        columns.append(column)
    named = [b"".join(parts) for parts in zip(*columns)] if columns else [b""] * n
    return [(_vectors_head(len(m)), m) for m in named]


def grpc_points(batch: PointBatch) -> list[bytes]:
    """Each point as its ``UpsertPoints.points`` field (tag, length, PointStruct)."""
    out = []
    for pid, payload, vectors in zip(batch.ids, batch.payloads, _vector_fields(batch)):
        try:
            head = _id_field(pid) + _payload_field(payload)
        except _Unencodable as exc:
            raise DataError(f"The payload of point {pid!r} holds {exc}, which gRPC cannot carry.",
                            fix="use a REST URL (port 6333) or leave the column out with --pg.columns.") from None
        size = len(head) + sum(map(len, vectors))
        out.append(b"".join((_POINTS_TAG, varint(size), head, *vectors)))
    return out


def grpc_request(collection: str, points: list[bytes], *, wait: bool) -> bytes:
    """A serialized ``qdrant.UpsertPoints``: collection, wait (optional: written even when false), points."""
    return (field_bytes(UPSERT_COLLECTION, collection.encode("utf-8"))
            + bytes([UPSERT_WAIT << 3, 1 if wait else 0]) + b"".join(points))


# ---------------------------------------------------------------------------------------
# REST (JSON)
# ---------------------------------------------------------------------------------------

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def rest_points(batch: PointBatch) -> list[bytes]:
    """Each point as the JSON object of a ``PointsList`` element (id, vector, payload)."""
    # float64, as qdrant-client sends (Python floats): the shortest float64 text of a float32
    # value reads back exactly, where float32's shortest text would be rounded twice by the
    # server's parser (to float64, then float32).
    dense = [(name, np.asarray(c.values, dtype=np.float64), c.present) for name, c in batch.dense.items()]
    unnamed = _unnamed(batch)
    out = []
    for i, (pid, payload) in enumerate(zip(batch.ids, batch.payloads)):
        vector: Any = {name: values[i] for name, values, present in dense if present[i]}
        for name, values in batch.sparse.items():
            v = values[i]
            if v is not None:
                vector[name] = {"indices": v.indices, "values": v.values.astype(np.float64)}
        if unnamed and vector:
            vector = vector[""]
        try:
            out.append(orjson.dumps({"id": pid, "vector": vector, "payload": payload}, option=_JSON_OPTIONS))
        except orjson.JSONEncodeError as exc:
            raise DataError(f"The payload of point {pid!r} cannot be written as JSON: {exc}.",
                            fix="leave the column out with --pg.columns.") from None
    return out


def rest_body(points: list[bytes]) -> bytes:
    """The body of PUT /collections/{name}/points."""
    return b'{"points":[' + b",".join(points) + b"]}"


# ---------------------------------------------------------------------------------------
# A batch with its points' bytes
# ---------------------------------------------------------------------------------------

@dataclass
class EncodedBatch(PointBatch):
    """A PointBatch and each point's request bytes for one wire format (sliced together)."""

    wire: str = GRPC
    encoded: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, batch: PointBatch, wire: str) -> EncodedBatch:
        encoded = grpc_points(batch) if wire == GRPC else rest_points(batch)
        return cls(batch.ids, batch.payloads, batch.dense, batch.sparse, wire=wire, encoded=encoded)

    def point_sizes(self) -> list[int]:
        """Exact bytes each point adds to a request (REST: plus its separating comma)."""
        extra = 0 if self.wire == GRPC else 1
        return [len(b) + extra for b in self.encoded]

    def slice(self, start: int, stop: int) -> EncodedBatch:
        part = PointBatch.slice(self, start, stop)
        return EncodedBatch(part.ids, part.payloads, part.dense, part.sparse, wire=self.wire,
                            encoded=self.encoded[start:stop])


def encode(batch: PointBatch, wire: str) -> EncodedBatch:
    """``batch`` with its points encoded for ``wire`` (once: an EncodedBatch is returned as is)."""
    if isinstance(batch, EncodedBatch) and batch.wire == wire:
        return batch
    return EncodedBatch.of(batch, wire)
