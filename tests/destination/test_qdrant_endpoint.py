"""Self-tests of the test endpoint (tests/qdrant_endpoint), through the real qdrant-client over
gRPC and REST: the calls pg2qdrant makes work on the Edge engine, and every fault action reaches
the client as the exception pg2qdrant's retry logic will see."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from qdrant_client import models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant_endpoint import (
    BATCH,
    COUNT,
    UPSERT,
    Delay,
    Drop,
    QdrantEndpoint,
    Respond,
    bad_gateway,
    gateway_timeout,
    rate_limited,
    service_unavailable,
    too_large,
    wrong_input,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.one_server]  # one_server: see conftest

UID = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
FRONTS = ["grpc", "rest"]


@pytest.fixture(scope="module")
def q():
    with QdrantEndpoint() as endpoint:
        yield endpoint


@pytest.fixture(params=FRONTS)
def client(q, request):
    q.faults.clear()
    c = q.client(grpc=request.param == "grpc", timeout=1)
    for name in q.engine.list_collections():
        q.engine.delete_collection(name)
    yield c
    c.close()


def make_collection(client, name: str = "c") -> None:
    client.create_collection(
        name,
        vectors_config={"dense": models.VectorParams(size=3, distance=models.Distance.COSINE),
                        "other": models.VectorParams(size=2, distance=models.Distance.EUCLID)},
        sparse_vectors_config={"sparse": models.SparseVectorParams()},
        hnsw_config=models.HnswConfigDiff(m=0, ef_construct=100),
    )


def point(pid, x: float = 0.5, **payload) -> models.PointStruct:
    return models.PointStruct(
        id=pid, payload=payload or {"n": pid if isinstance(pid, int) else 0, "f": x},
        vector={"dense": [x, 0.25, 0.75], "other": [1.0, x],
                "sparse": models.SparseVector(indices=[1, 3], values=[x, 0.5])})


def test_collection_lifecycle_and_shape(client):
    assert not client.collection_exists("c")
    make_collection(client)
    assert client.collection_exists("c")
    assert [c.name for c in client.get_collections().collections] == ["c"]
    client.create_payload_index("c", field_name="kind", field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
    info = client.get_collection("c")
    assert info.status == models.CollectionStatus.GREEN
    assert info.config.params.vectors["dense"].size == 3
    assert info.config.params.vectors["other"].distance == models.Distance.EUCLID
    assert set(info.config.params.sparse_vectors) == {"sparse"}
    assert info.config.hnsw_config.m == 0 and info.points_count == 0 and info.indexed_vectors_count == 0
    assert info.payload_schema["kind"].data_type == models.PayloadSchemaType.KEYWORD
    client.upsert("c", [point(i) for i in range(1, 30)])
    client.update_collection("c", hnsw_config=models.HnswConfigDiff(m=16))
    info = client.get_collection("c")
    assert info.config.hnsw_config.m == 16 and info.indexed_vectors_count > 0  # Edge built HNSW
    assert client.delete_collection("c")
    assert not client.collection_exists("c")
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
        client.get_collection("c")
    assert "Not found: Collection `c`" in str(exc.value)


def test_points_round_trip(q, client):
    make_collection(client)
    client.upsert("c", [point(2), point(UID, text="é", nested={"a": [1, 2.5, None]}), point(1)], wait=True)
    assert client.count("c", exact=True).count == 3
    records = {r.id: r for r in client.retrieve("c", [1, 2, UID, 99], with_payload=True, with_vectors=True)}
    assert set(records) == {1, 2, UID}
    assert records[2].payload == {"n": 2, "f": 0.5}
    assert records[2].vector["other"] == [1.0, 0.5]  # Euclid: stored as sent
    assert records[2].vector["sparse"] == models.SparseVector(indices=[1, 3], values=[0.5, 0.5])
    assert records[UID].payload == {"text": "é", "nested": {"a": [1, 2.5, None]}}
    only = client.retrieve("c", [2], with_payload=["f"], with_vectors=["other"])[0]
    assert only.payload == {"f": 0.5} and only.vector == {"other": [1.0, 0.5]}
    page, offset = client.scroll("c", limit=2)  # integers in order, then UUIDs
    assert [r.id for r in page] == [1, 2] and offset == UID
    page, offset = client.scroll("c", limit=2, offset=offset)
    assert [r.id for r in page] == [UID] and offset is None
    assert client.count("c", count_filter=models.Filter(must=[
        models.FieldCondition(key="n", match=models.MatchValue(value=2))])).count == 1
    assert client.count("c", count_filter=models.Filter(must=[models.HasIdCondition(has_id=[1, UID])])).count == 2
    hits = client.query_points("c", query=[1.0, 0.5], using="other", limit=2, with_payload=False,
                               search_params=models.SearchParams(exact=True)).points
    assert hits[0].score == 0.0  # Euclid: distance, smallest first
    client.delete("c", points_selector=models.PointIdsList(points=[2]), wait=True)
    assert {r.id for r in client.retrieve("c", [1, 2, UID])} == {1, UID}
    client.delete("c", points_selector=models.FilterSelector(filter=models.Filter()), wait=True)
    assert client.count("c").count == 0


def test_batch_update_and_partial_changes(q, client):
    make_collection(client)
    client.upsert("c", [point(1), point(2)])
    client.batch_update_points("c", update_operations=[
        models.UpsertOperation(upsert=models.PointsList(points=[point(3)])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"k": "v"}, points=[2])),
        models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
            models.PointVectors(id=2, vector={"other": [9.0, 9.0]})])),
        models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(points=[3], vector=["sparse"])),
        models.DeleteOperation(delete=models.PointIdsList(points=[1])),
    ], wait=True)
    pts = q.points("c")
    assert set(pts) == {2, 3}
    assert pts[2].vector["other"] == [9.0, 9.0] and pts[2].payload["k"] == "v"
    assert set(pts[3].vector) == {"dense", "other"}
    assert q.seen(BATCH, "c")[-1].ids == [3]
    client.overwrite_payload("c", payload={"only": 1}, points=[2])
    assert q.points("c")[2].payload == {"only": 1}


def test_bad_input_is_rejected_like_qdrant(client):
    make_collection(client)
    for bad, text in ((models.PointStruct(id=1, vector={"dense": [1.0, 2.0]}), "Vector dimension error"),
                      (models.PointStruct(id=1, vector={"nope": [1.0]}), "Not existing vector name")):
        with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
            client.upsert("c", [bad])
        assert text in str(exc.value)
    assert client.count("c").count == 0


def _aliases(client, collection: str | None = None) -> dict[str, str]:
    found = client.get_aliases() if collection is None else client.get_collection_aliases(collection)
    return {a.alias_name: a.collection_name for a in found.aliases}


def test_aliases_like_qdrant(q, client):
    make_collection(client, "c1")
    make_collection(client, "c2")
    client.upsert("c1", [point(1)])
    client.upsert("c2", [point(1), point(2)])
    client.update_collection_aliases([models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name="c1", alias_name="live"))])
    assert _aliases(client) == {"live": "c1"} and _aliases(client, "c1") == {"live": "c1"}
    assert _aliases(client, "c2") == {}
    # every operation naming a collection resolves the alias
    assert client.count("live").count == 1 and client.get_collection("live").points_count == 1
    assert client.collection_exists("live")
    client.upsert("live", [point(3)])
    assert set(q.points("c1")) == {1, 3}
    assert [r.id for r in client.scroll("live", limit=10)[0]] == [1, 3]
    assert len(client.query_points("live", query=[0.5, 0.25, 0.75], using="dense", limit=5).points) == 2
    # a switch: delete + create in one request, applied as one change
    client.update_collection_aliases([
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="live")),
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="c2", alias_name="live"))])
    assert _aliases(client) == {"live": "c2"} and client.count("live").count == 2
    # a failing action leaves every alias as it was
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
        client.update_collection_aliases([
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="live")),
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="gone", alias_name="live"))])
    assert "Not found: Collection `gone` doesn" in str(exc.value)
    assert _aliases(client) == {"live": "c2"}
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:  # 409, ALREADY_EXISTS
        client.update_collection_aliases([models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="c2", alias_name="c1"))])
    assert "Collection `c1` already exists!" in str(exc.value)
    assert getattr(exc.value, "status_code", None) in (None, 409)
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
        client.create_collection("live", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    assert "Alias with the same name already exists" in str(exc.value)
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
        client.update_collection_aliases([models.RenameAliasOperation(
            rename_alias=models.RenameAlias(old_alias_name="nope", new_alias_name="x"))])
    assert "Alias nope does not exists!" in str(exc.value)
    client.update_collection_aliases([models.RenameAliasOperation(
        rename_alias=models.RenameAlias(old_alias_name="live", new_alias_name="prod"))])
    assert _aliases(client) == {"prod": "c2"}
    assert not client.delete_collection("prod")  # delete takes a collection's own name
    assert client.delete_collection("c2")  # and its aliases go with it
    assert _aliases(client) == {} and not client.collection_exists("prod")
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
        client.count("prod")
    assert "Not found: Collection `prod` doesn" in str(exc.value)


# --- faults: what qdrant-client raises ------------------------------------------------------

@pytest.mark.parametrize("action, status, code, text", [
    (Respond(429, "Rate limiting exceeded: too many writes"), 429, "RESOURCE_EXHAUSTED", "Rate limiting exceeded"),
    (bad_gateway(), 502, "UNAVAILABLE", "502 Bad Gateway"),
    (service_unavailable(), 503, "UNAVAILABLE", "Service unavailable"),
    (gateway_timeout(), 504, "DEADLINE_EXCEEDED", "504 Gateway Time-out"),
    (wrong_input(), 400, "INVALID_ARGUMENT", "Wrong input: Vector dimension error"),
    (too_large(), 400, "OUT_OF_RANGE", "is larger than allowed"),
], ids=["429", "502", "503", "504", "400", "too-large"])
def test_status_faults(q, client, action, status, code, text):
    make_collection(client)
    fault = q.faults.add(UPSERT, collection="c", action=action)
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
        client.upsert("c", [point(1)])
    if isinstance(exc.value, grpc.RpcError):
        assert exc.value.code().name == code and text in exc.value.details()
    else:
        assert exc.value.status_code == status and text.encode() in exc.value.content
    assert fault.exhausted
    client.upsert("c", [point(1)])  # the fault was for one request
    assert [u.outcome for u in q.upserts("c")][-2:] == ["fault", "ok"]


def test_429_with_retry_after_raises_resource_exhausted(q, client):
    make_collection(client)
    q.faults.add(UPSERT, collection="c", action=rate_limited(retry_after=2))
    with pytest.raises(ResourceExhaustedResponse) as exc:  # REST header or gRPC trailing metadata
        client.upsert("c", [point(1)])
    assert exc.value.retry_after_s == 2


@pytest.mark.parametrize("action", [Drop(), Drop(reset=True), Delay(1.6)], ids=["drop", "reset", "timeout"])
def test_connection_faults(q, client, action):
    make_collection(client)
    q.faults.add(COUNT, collection="c", action=action)
    with pytest.raises((ResponseHandlingException, grpc.RpcError)) as exc:
        client.count("c")
    if isinstance(exc.value, grpc.RpcError):
        expected = "DEADLINE_EXCEEDED" if isinstance(action, Delay) else "UNAVAILABLE"
        assert exc.value.code().name == expected
    else:
        expected = {"drop": httpx.RemoteProtocolError, "reset": httpx.ReadError}
        source = httpx.ReadTimeout if isinstance(action, Delay) else expected["reset" if action.reset else "drop"]
        assert isinstance(exc.value.source, source)
    assert _recovered_count(client) == 0  # the same client recovers


def _recovered_count(client) -> int:
    """count("c") once the client has reconnected: after a reset, gRPC may fail the very next call
    with UNAVAILABLE while its channel notices the broken connection (a few tries, then it must work)."""
    for _ in range(4):
        try:
            return client.count("c").count
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.2)
    return client.count("c").count


def test_after_apply_loses_only_the_acknowledgement(q, client):
    make_collection(client)
    q.faults.add(UPSERT, collection="c", action=Drop(after_apply=True))
    q.faults.add(UPSERT, collection="c", action=Respond(503, "gave up", after_apply=True))
    for pid in (1, 2):
        with pytest.raises((ResponseHandlingException, UnexpectedResponse, grpc.RpcError)):
            client.upsert("c", [point(pid)])
    assert set(q.points("c")) == {1, 2}  # both writes happened


def test_stopped_endpoint_refuses_connections_and_restarts_with_its_data(q, client):
    make_collection(client)
    client.upsert("c", [point(1)])
    q.stop()
    try:
        with pytest.raises((ResponseHandlingException, grpc.RpcError)):
            client.count("c")
    finally:
        q.start()
    for _ in range(100):  # a gRPC channel reconnects after its backoff: a client would retry
        try:
            assert client.count("c").count == 1
            return
        except grpc.RpcError:
            time.sleep(0.1)
    assert client.count("c").count == 1


@pytest.mark.parametrize("front", FRONTS)
def test_api_key_and_request_size(front):
    with QdrantEndpoint(api_key="s3cret", max_request_bytes=2000) as q:
        good = q.client(grpc=front == "grpc")
        make_collection(good)
        for key in (None, "wrong"):
            bad = q.client(grpc=front == "grpc", api_key=key)
            with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
                bad.get_collections()
            assert "401" in str(exc.value) or "UNAUTHENTICATED" in str(exc.value)
            bad.close()
        with pytest.raises((UnexpectedResponse, grpc.RpcError)) as exc:
            good.upsert("c", [point(i) for i in range(1, 40)])
        assert "too large" in str(exc.value) or "larger than allowed" in str(exc.value)
        assert [r.outcome for r in q.requests[-3:]] == ["unauthorized", "unauthorized", "too_large"]
        assert good.count("c").count == 0
        good.close()


def test_grpc_url_chooses_grpc_on_any_port():
    from pg2qdrant.destination.address import parse_target_url

    address = parse_target_url("grpc://127.0.0.1:41234")
    assert address.grpc and address.port == 41234 and not address.https
    address = parse_target_url("grpcs://example.com")
    assert address.grpc and address.port == 6334 and address.https
    assert not parse_target_url("http://127.0.0.1:41234").grpc


# -- strict mode (qdrant_endpoint/strict.py): refused as Qdrant refuses, over both fronts --------------
STRICT = models.StrictModeConfig(enabled=True, unindexed_filtering_retrieve=False, unindexed_filtering_update=False,
                                 upsert_max_batchsize=3, max_query_limit=10, max_payload_index_count=1)
UNINDEXED = ('Index required but not found for "tag" of one of the following types: [keyword, uuid]. '
             "Help: Create an index for this key or use a different filter.")


def _refusal(call) -> tuple[int | str, str]:
    """(HTTP status or gRPC code, Qdrant's message) of a refused call."""
    try:
        call()
    except UnexpectedResponse as exc:
        return exc.status_code, exc.structured()["status"]["error"]
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    raise AssertionError("the call was not refused")


def test_strict_mode_refuses_like_qdrant(q, client):
    bad = "INVALID_ARGUMENT" if client._client._prefer_grpc else 400
    client.create_collection("s", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT),
                             strict_mode_config=STRICT)
    assert client.get_collection("s").config.strict_mode_config.upsert_max_batchsize == 3  # reported back
    by_tag = models.Filter(must=[models.FieldCondition(key="tag", match=models.MatchValue(value="a"))])
    pts = [models.PointStruct(id=i, vector=[1.0, 0.5], payload={"tag": "a"}) for i in range(4)]
    assert _refusal(lambda: client.upsert("s", pts)) == (
        bad, 'Bad request: Limit exceeded 4 > 3 for "upsert limit". Help: Reduce the "upsert limit" parameter to '
             "or below 3.")
    client.upsert("s", pts[:3])
    for call in (lambda: client.delete("s", models.FilterSelector(filter=by_tag)),  # updates by filter
                 lambda: client.set_payload("s", {"x": 1}, points=by_tag),
                 lambda: client.count("s", count_filter=by_tag),  # retrieves with a filter
                 lambda: client.scroll("s", scroll_filter=by_tag),
                 lambda: client.query_points("s", query=[1.0, 0.0], query_filter=by_tag)):
        assert _refusal(call) == (bad, f"Bad request: {UNINDEXED}")
    assert _refusal(lambda: client.scroll("s", limit=11))[1].startswith('Bad request: Limit exceeded 11 > 10 for "limit"')
    client.delete("s", models.FilterSelector(filter=models.Filter()))  # no key: nothing to index
    client.create_payload_index("s", "tag", models.PayloadSchemaType.KEYWORD, wait=True)
    client.upsert("s", pts[:3])
    assert client.count("s", count_filter=by_tag).count == 3  # indexed now
    client.delete("s", models.FilterSelector(filter=by_tag))
    assert client.count("s").count == 0
    assert _refusal(lambda: client.create_payload_index("s", "n", models.PayloadSchemaType.INTEGER, wait=True)) == (
        bad, "Bad request: Collection already has the maximum number of payload indices (1). Help: Please delete "
             "an existing index before creating a new one.")
    client.update_collection("s", strict_mode_config=models.StrictModeConfig(enabled=False))
    client.scroll("s", limit=100, scroll_filter=models.Filter(must=[models.FieldCondition(
        key="other", match=models.MatchValue(value=1))]))  # strict mode off: allowed


def test_strict_mode_write_rate_limit_answers_429_with_retry_after(q, client):
    q.engine.default_strict_mode = models.StrictModeConfig(enabled=True, write_rate_limit=60)  # Cloud-like default
    try:
        client.create_collection("r", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    finally:
        q.engine.default_strict_mode = None
    assert client.get_collection("r").config.strict_mode_config.write_rate_limit == 60
    pt = [models.PointStruct(id=1, vector=[1.0, 0.5])]
    q.collection("r").limiter.drain()
    with pytest.raises(ResourceExhaustedResponse) as exc:
        client.upsert("r", pt)
    assert exc.value.retry_after_s == 1
    assert "Write rate limit exceeded: Operation requires 1 tokens" in str(exc.value)
    time.sleep(1.05)
    client.upsert("r", pt)
    big = [models.PointStruct(id=i, vector=[1.0, 0.5]) for i in range(61)]
    # over the bucket's capacity: no Retry-After (no point in waiting); gRPC: RESOURCE_EXHAUSTED as such
    assert _refusal_429(lambda: client.upsert("r", big)).endswith("please try to split your request")


def _refusal_429(call) -> str:
    try:
        call()
    except ResourceExhaustedResponse as exc:
        return str(exc)
    except UnexpectedResponse as exc:
        assert exc.status_code == 429
        return exc.structured()["status"]["error"]
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return exc.details()
    raise AssertionError("the call was not refused")
