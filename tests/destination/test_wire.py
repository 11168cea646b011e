"""Server upserts encoded from numpy batches (destination/wire.py) mean what qdrant-client sends.

The property test decodes our gRPC request with qdrant-client's protobuf classes and
compares it field by field with qdrant-client's own conversion of the same points
(``RestToGrpc.convert_point_struct``), and our REST body with the JSON qdrant-client's
REST client writes for a ``PointsList``. The end-to-end tests run real migrations from
PostgreSQL over gRPC into benchmarks/grpc_sink.py (a real grpc server answering
Qdrant's calls; it is not Qdrant).
"""

from __future__ import annotations

import struct
import sys
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import grpc as q
from qdrant_client import models
from qdrant_client.conversions.conversion import RestToGrpc
from qdrant_client.http.api.points_api import jsonable_encoder

from pg2qdrant.core.errors import DataError
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.ids import INT64_MAX, INT64_MIN
from pg2qdrant.core.mapping.vectors import DenseColumn, SparseValue
from pg2qdrant.destination import wire

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from grpc_sink import Sink  # noqa: E402

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

# ---------------------------------------------------------------------------------------
# Property: our requests == qdrant-client's, for every kind of value the mapping produces
# ---------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # no lone surrogates
_big_text = st.builds(lambda c, n: c * n, st.characters(blacklist_categories=("Cs",)), st.integers(2_000, 40_000))
_scalars = (st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
            | st.sampled_from([0, -1, INT64_MIN, INT64_MAX, 2**31, -2**31])
            | st.floats(allow_nan=False, allow_infinity=False) | st.just(-0.0) | _text | _big_text)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=12)
_ids = st.integers(0, 2**64 - 1) | st.uuids().map(str)
_NAMES = ["embedding", "émb 2", "v"]


@st.composite
def batches(draw) -> PointBatch:
    n = draw(st.integers(1, 5))
    ids = draw(st.lists(_ids, min_size=n, max_size=n, unique=True))
    payloads = draw(st.lists(st.dictionaries(_text, _json, max_size=5), min_size=n, max_size=n))
    batch = PointBatch(ids=ids, payloads=payloads)
    unnamed = draw(st.booleans())
    names = [""] if unnamed else draw(st.lists(st.sampled_from(_NAMES), unique=True, max_size=3))
    for name in names:
        kind = draw(st.sampled_from(["float32", "float16", "bit", "sparse"])) if name else "float32"
        present = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        if kind == "sparse":
            batch.sparse[name] = [draw(_sparse()) if p else None for p in present]
            continue
        dim = draw(st.integers(1, 40))
        if kind == "bit":  # pgvector bit(n): 0/1 per component (uint8 datatype)
            values = np.array(draw(st.lists(st.integers(0, 1), min_size=n * dim, max_size=n * dim)), dtype=np.uint8)
        else:
            width = 32 if kind == "float32" else 16  # halfvec: float16 values, decoded to float32
            values = np.array(draw(st.lists(st.floats(width=width, allow_nan=False, allow_infinity=False),
                                            min_size=n * dim, max_size=n * dim)), dtype=np.float32)
        values = values.reshape(n, dim)
        values[~present] = 0  # as the decoder leaves NULL rows
        batch.dense[name] = DenseColumn(values, present)
    return batch


@st.composite
def _sparse(draw) -> SparseValue:
    indices = sorted(draw(st.sets(st.integers(0, 2**32 - 1) | st.integers(0, 300), max_size=6)))
    values = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                           min_size=len(indices), max_size=len(indices)))
    return SparseValue(np.array(indices, dtype=np.uint32), np.array(values, dtype=np.float32))


def reference_points(batch: PointBatch) -> list[models.PointStruct]:
    """The same points as a user hands them to qdrant-client (validated models, Python floats)."""
    points = []
    for i, (pid, payload) in enumerate(zip(batch.ids, batch.payloads)):
        vector: dict = {name: [float(x) for x in col.values[i]] for name, col in batch.dense.items()
                        if col.present[i]}
        for name, values in batch.sparse.items():
            if values[i] is not None:
                vector[name] = models.SparseVector(indices=values[i].indices.tolist(),
                                                   values=values[i].values.tolist())
        if list(batch.dense) == [""] and not batch.sparse and vector:
            vector = vector[""]  # the collection's unnamed vector
        points.append(models.PointStruct(id=pid, vector=vector, payload=payload))
    return points


def fields(message):
    """A protobuf message as plain data, field by field: set fields only where presence is tracked,
    maps as dicts (entry order does not matter), floats by their bits (so -0.0 differs from 0.0)."""
    out = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[fd.name] = {k: fields(v) if hasattr(v, "DESCRIPTOR") else _plain(v) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.name] = [fields(v) if fd.message_type is not None else _plain(v) for v in value]
        elif fd.has_presence:
            if message.HasField(fd.name):
                out[fd.name] = fields(value) if fd.message_type is not None else _plain(value)
        else:
            out[fd.name] = _plain(value)
    return out


def _plain(value):
    if isinstance(value, float):
        return ("float", struct.pack("<d", value).hex())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), wait=st.booleans())
def test_grpc_request_is_what_qdrant_client_sends(batch, wait):
    ours = q.UpsertPoints.FromString(wire.grpc_request("coll ë", wire.grpc_points(batch), wait=wait))
    theirs = q.UpsertPoints(collection_name="coll ë", wait=wait,
                            points=[RestToGrpc.convert_point_struct(p) for p in reference_points(batch)])
    assert ours.collection_name == theirs.collection_name and ours.wait == theirs.wait
    assert len(ours.points) == len(theirs.points)
    for mine, reference in zip(ours.points, theirs.points):
        assert fields(mine) == fields(reference)
    assert ours == theirs


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_rest_body_is_what_qdrant_client_sends(batch):
    ours = orjson.loads(wire.rest_body(wire.rest_points(batch)))
    theirs = orjson.loads(jsonable_encoder(models.PointsList(points=reference_points(batch))))
    assert _plain(ours) == _plain(theirs)


def test_encoded_sizes_are_the_request_bytes_and_slices_keep_them():
    batch = PointBatch(ids=[1, 2, 3], payloads=[{"a": "x" * 300}, {}, {"b": [1, 2]}],
                       dense={"v": DenseColumn(np.ones((3, 8), np.float32), np.array([True, False, True]))})
    for kind in (wire.GRPC, wire.REST):
        encoded = wire.encode(batch, kind)
        assert wire.encode(encoded, kind) is encoded  # encoded once
        part = encoded.slice(1, 3)
        assert part.encoded == encoded.encoded[1:3] and part.ids == [2, 3]
        body = wire.grpc_request("c", part.encoded, wait=True) if kind == wire.GRPC else wire.rest_body(part.encoded)
        header = len(wire.grpc_request("c", [], wait=True)) if kind == wire.GRPC else len(wire.rest_body([])) - 1
        assert len(body) == header + sum(part.point_sizes())


@pytest.mark.parametrize("value, words", [(2**63, "beyond the 64-bit range"), (-2**63 - 1, "beyond the 64-bit range"),
                                          ("bad \ud800 text", "not valid Unicode")])
def test_payload_grpc_cannot_carry_is_a_data_error_naming_the_point(value, words):
    batch = PointBatch(ids=[7], payloads=[{"j": {"deep": [value]}}])
    with pytest.raises(DataError) as info:
        wire.grpc_points(batch)
    assert "point 7" in info.value.message and words in info.value.message
    assert "REST" in info.value.fix


# ---------------------------------------------------------------------------------------
# End to end: a real migration over gRPC
# ---------------------------------------------------------------------------------------

TYPES_TABLE = """CREATE TABLE w (id bigint PRIMARY KEY, i int, f float8, r real, t text, big text, j jsonb,
                                 b bool, nothing text, emb vector(8), half halfvec(4), bits bit(10), sp sparsevec(1000))"""


def _literal(values) -> str:
    return "[" + ",".join(repr(float(x)) for x in values) + "]"


def test_migrate_over_grpc_arrives_bit_exact(db, cli):
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    emb[0, 0] = -0.0
    emb[1, :] = np.array([1e-38, 3.4e38, -1.5e-45, 0.1, 1 / 3, 1e-7, 123456.789, -2.5], dtype=np.float32)
    half = rng.normal(size=(40, 4)).astype(np.float16)
    db.execute(TYPES_TABLE)
    with db.connect() as conn:
        for k in range(40):
            conn.execute(
                "INSERT INTO w VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, %s, %s, %s)",
                (k, -k * 1000, k / 7, k / 3, f"tëxt ✓ {k}", "é" * 70_000 if k == 3 else "",
                 orjson.dumps({"n": k, "l": [1, "a", None, {"x": 2.5}], "e": {}}).decode(), k % 2 == 0,
                 _literal(emb[k]), None if k == 5 else _literal(half[k]), format(k * 37 % 1024, "010b"),
                 "{1:0.5,999:-2}/1000" if k % 3 else "{}/1000"))
    with Sink(record=True) as sink:
        result = cli("migrate", "--pg.url", db.url, "--pg.table", "w", "--qdrant.url", sink.url,
                     "--qdrant.collection", "c", "--migration.batch-size", "16")
        assert result.exit_code == 0, result.output
        assert "gRPC" in result.output
        points = {p.id.num: p for r in sink.requests if r.collection_name == "c" for p in r.points}
    assert sorted(points) == list(range(40))
    for k, p in points.items():
        vectors = p.vectors.vectors.vectors
        got = np.array(vectors["emb"].dense.data, dtype=np.float32)
        assert got.tobytes() == emb[k].tobytes()  # bit-exact, -0.0 included
        if k == 5:
            assert "half" not in vectors  # a NULL vector is left out
        else:
            assert np.array(vectors["half"].dense.data, dtype=np.float32).tobytes() == \
                half[k].astype(np.float32).tobytes()
        bits = [int(x) for x in format(k * 37 % 1024, "010b")]
        assert list(vectors["bits"].dense.data) == bits
        sparse = vectors["sp"].sparse
        assert (list(sparse.indices), list(sparse.values)) == (([0, 998], [0.5, -2.0]) if k % 3 else ([], []))
        pay = p.payload
        assert pay["id"].integer_value == k and pay["i"].WhichOneof("kind") == "integer_value"
        assert pay["i"].integer_value == -k * 1000
        assert pay["f"].double_value == k / 7 and pay["r"].double_value == float(str(np.float32(k / 3)))  # float4: shortest text
        assert pay["t"].string_value == f"tëxt ✓ {k}"
        assert len(pay["big"].string_value) == (70_000 if k == 3 else 0)
        assert pay["b"].bool_value is (k % 2 == 0) and pay["b"].WhichOneof("kind") == "bool_value"
        assert pay["nothing"].WhichOneof("kind") == "null_value"
        j = pay["j"].struct_value.fields
        assert j["n"].integer_value == k and j["e"].WhichOneof("kind") == "struct_value"
        items = j["l"].list_value.values
        assert [v.WhichOneof("kind") for v in items] == ["integer_value", "string_value", "null_value", "struct_value"]
        assert items[3].struct_value.fields["x"].double_value == 2.5


def test_request_too_large_for_the_server_is_split_over_grpc(db, cli):
    from helpers import create_items_table
    create_items_table(db, 300)  # 16-d vectors: ~200 bytes a point
    with Sink(max_receive_bytes=8_000) as sink:  # ~30 points a request
        result = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", sink.url,
                     "--qdrant.collection", "c", "--migration.batch-size", "256")
        assert result.exit_code == 0, result.output
        assert len(sink.collections["c"].ids) == 300
        assert sink.collections["c"].upserts >= 300 * 200 // 8_000


def test_api_key_travels_with_the_encoded_upserts(db, cli):
    from helpers import create_items_table
    create_items_table(db, 50)
    secret = f"key-{uuid.uuid4()}"
    with Sink(api_key=secret) as sink:
        args = ["migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", sink.url, "--qdrant.collection", "c"]
        denied = cli(*args, "--qdrant.api-key", "wrong")
        assert denied.exit_code == 2 and "api-key" in denied.output.lower()
        result = cli(*args, "--qdrant.api-key", secret)
        assert result.exit_code == 0, result.output
        assert len(sink.collections["c"].ids) == 50
        assert secret not in result.output
