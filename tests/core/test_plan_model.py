"""The plan without a database: structured reads, the collection spec, targets' declared capabilities.

The table model is plain dataclasses (source/model.py), so a plan can be built here from
hand-written catalog facts, as catalog.describe_table would return them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pg2qdrant.core import plan as p
from pg2qdrant.core import table as m
from pg2qdrant.core.errors import InputError
from pg2qdrant.destination import QdrantTarget, TargetSettings
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.base import Capabilities, Target
from pg2qdrant.destination.edge import EdgeTarget


def _type(oid, name, schema="pg_catalog", typtype="b", category="N", extension=None, elem=None) -> m.PgType:
    return m.PgType(oid, name, schema, typtype, category, extension, elem)


INT4 = _type(23, "int4")
TEXT = _type(25, "text", category="S")
VECTOR = _type(90001, "vector", schema="public", category="U", extension="vector")


def _table() -> tuple[m.TableInfo, m.ServerInfo]:
    """One column of each read shape: plain, text array, enum, domain, domain array, vectors."""
    columns = (
        m.Column("id", 1, "integer", 23, INT4, -1, True),
        m.Column("tags", 2, "text[]", 1009, _type(1009, "_text", category="A", elem=TEXT), -1, False),
        m.Column("mood", 3, "mood", 90003, _type(90003, "mood", "public", typtype="e", category="E"), -1, False),
        m.Column("amount", 4, "posint", 90010, INT4, -1, False),
        m.Column("nums", 5, "posint[]", 90011, _type(1007, "_int4", category="A", elem=INT4), -1, False),
        m.Column("v", 6, "vector(3)", 90001, VECTOR, 3, False),
        m.Column("s", 7, "sparsevec(100)", 90002,
                 _type(90002, "sparsevec", "public", category="U", extension="vector"), 100, False),
        m.Column("b", 8, "bit(8)", 1560, _type(1560, "bit", category="V"), 8, False),
        m.Column("vd", 9, "embedding", 90020, VECTOR, 3, False),
    )
    table = m.TableInfo(1, "public", "t", "r", columns, ("id",), (("id",),),
                        (m.VectorIndex("i", "v", "hnsw", "vector_ip_ops"),), ("amount", "tags"),
                        (m.Leaf(1, "public", "t", "r", 10, 100),))
    return table, m.ServerInfo(170000, "17", "db", "UTF8", "0.8.0", "1")


def _plan() -> p.Plan:
    table, server = _table()
    return p.build_plan(table, server, collection="c", payload_index_flags=["nums:integer"])


def test_plan_mapping_and_target_interface_import_without_psycopg():
    """Only source/ talks to PostgreSQL: the plan, the mapping and the Target protocol load without it."""
    code = ("import sys; import pg2qdrant.core.plan, pg2qdrant.core.mapping.batch, pg2qdrant.destination.base; "
            "print([name for name in sys.modules if name.split('.')[0] == 'psycopg'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_reads_are_structured():
    reads = {r.column: r for r in _plan().reads}
    assert reads["id"] == p.ReadColumn("id", "int4") and reads["id"].sql == '"id"'
    assert reads["tags"].sql == '"tags"' and reads["tags"].load_type == "text[]"
    assert (reads["mood"].cast, reads["mood"].load_type) == ("text", "text")  # enum: its text form
    assert reads["amount"].sql == '"amount"::"pg_catalog"."int4"'  # a domain is read as its base type
    assert (reads["nums"].cast, reads["nums"].load_type) == ('"pg_catalog"."int4"[]', "int4[]")
    assert (reads["v"].raw_oid, reads["v"].load_type, reads["v"].cast) == (90001, None, None)
    assert reads["vd"].raw_oid == 90001 and reads["vd"].sql == '"vd"::"public"."vector"'


def test_payload_kinds_are_enums_and_arrays_are_flagged():
    payload = {s.name: s for s in _plan().payload}
    assert (payload["tags"].kind, payload["tags"].array) == (p.PayloadKind.TEXT, True)
    assert (payload["nums"].kind, payload["nums"].array) == (p.PayloadKind.INT, True)
    assert payload["mood"].is_scalar(p.PayloadKind.TEXT) and not payload["tags"].is_scalar(p.PayloadKind.TEXT)
    assert payload["nums"].description == "list of integer"
    # a btree on an array column mirrors no index (no default type); on a scalar one it does
    assert [(i.field, i.type) for i in _plan().payload_indexes] == [("nums", "integer"), ("amount", "integer")]


def test_fingerprint_keeps_the_words_of_earlier_versions():
    """Saved progress names the plan's fingerprint: the same table and options must give the same one
    as before reads and kinds were structured (value computed by the code before that change)."""
    assert p.plan_fingerprint(_plan()) == "d1ec56238b6826d6"


def test_collection_spec_holds_only_the_collection():
    options = p.CollectionOptions(hnsw_m=0, payload_indexes=(("tenant_id", p.TENANT_INDEX),))
    spec = _plan().collection_spec(options)
    assert spec.name == "c" and spec.options is options
    assert [(v.name, v.size, v.distance, v.datatype, v.sparse) for v in spec.vectors] == [
        ("v", 3, "Dot", "float32", False), ("s", None, None, "sparse", True), ("b", 8, "Manhattan", "uint8", False),
        ("vd", 3, "Cosine", "float32", False)]


def test_shape_check_names_every_difference():
    spec = _plan().collection_spec()
    assert not p.check_shape(spec, None).exists
    same = p.check_shape(spec, spec.shape())
    assert same.exists and same.differences == ()
    same.require_match("does not match", fix="-")  # no error
    other = p.CollectionShape({"v": (4, "Dot", "float32"), "extra": (3, "Cosine", "float32")}, frozenset({"s"}))
    check = p.check_shape(spec, other)
    assert "vector 'v' has size 4 in the collection, 3 in the table" in check.differences
    assert "the collection has vector 'extra', which the table does not provide" in check.differences
    with pytest.raises(InputError, match=r"Collection 'c' does not match: .*\(The table needs: b: 8-d"):
        check.require_match("does not match", fix="-")


def test_unnamed_vector_is_named_in_words():
    unnamed = p.CollectionShape({"": (64, "Cosine", "float32")}, frozenset({"s"}))
    assert unnamed.describe() == "unnamed vector: 64-d Cosine float32; s: sparse"
    named = p.CollectionShape({"v": (64, "Cosine", "float32")}, frozenset())
    assert p.shape_differences(unnamed, named) == [
        "the unnamed vector is missing in the collection (plan: 64-d Cosine float32)",
        "sparse vector 's' is missing in the collection",
        "the collection has vector 'v', which the table does not provide"]
    assert p.shape_differences(unnamed, p.CollectionShape({"": (32, "Dot", "float32")}, frozenset({"s"}))) == [
        "the unnamed vector has size 32 in the collection, 64 in the table",
        "the unnamed vector uses Dot in the collection, the plan says Cosine"]


@pytest.mark.parametrize("url, in_process, in_flight, hnsw, payload_indexes, encodes", [
    ("http://localhost:6334", False, 4, True, True, True),
    ("https://example.com:6333", False, 4, True, True, True),
    ("local:/tmp/x", True, 1, False, False, False),
    (":memory:", True, 1, False, False, False),
    ("edge:/tmp/x", True, 1, True, True, False),
])
def test_targets_declare_capabilities(url, in_process, in_flight, hnsw, payload_indexes, encodes):
    caps = TargetSettings(parse_target_url(url)).capabilities
    assert (caps.in_process, caps.max_in_flight, caps.hnsw, caps.payload_indexes, caps.encodes_wire) == (
        in_process, in_flight, hnsw, payload_indexes, encodes)
    assert (caps.max_request_bytes is None) == in_process  # a bound only where there is a network request


@pytest.mark.parametrize("cls", [QdrantTarget, EdgeTarget])
def test_targets_implement_the_protocol(cls):
    methods = [name for name, value in vars(Target).items() if callable(value) and not name.startswith("_")]
    assert {"create_collection", "upsert", "apply", "search", "close"} <= set(methods)
    assert [name for name in methods if not callable(getattr(cls, name, None))] == []
    assert isinstance(EdgeTarget.capabilities, Capabilities) and EdgeTarget.retries == 0
