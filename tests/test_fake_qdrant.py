"""Self-tests of the fault-injecting Qdrant stand-in (tests/fake_qdrant.py), through the real
qdrant-client over REST: the API it serves works, and every fault action reaches the client
as the exception the retry logic will see."""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import pytest
from qdrant_client import models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from fake_qdrant import (
    BATCH, COUNT, UPSERT, Delay, Drop, FakeQdrant, Respond, bad_gateway, gateway_timeout, please_retry,
    rate_limited, service_unavailable, server_error, too_large, wrong_input,
)

pytestmark = pytest.mark.timeout(60)

UID = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"


@pytest.fixture
def fake():
    with FakeQdrant() as server:
        yield server


@pytest.fixture
def client(fake):
    c = fake.client(timeout=1)
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


def point(pid, x: float = 0.1, **payload) -> models.PointStruct:
    return models.PointStruct(
        id=pid, payload=payload or {"n": pid if isinstance(pid, int) else 0, "f": x},
        vector={"dense": [x, 0.2, 0.3], "other": [1.0, x],
                "sparse": models.SparseVector(indices=[3, 1], values=[x, 0.5])})


# --- the API --------------------------------------------------------------------------------

def test_collection_lifecycle_and_shape(fake, client):
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
    with pytest.raises(UnexpectedResponse) as exc:  # Qdrant answers 409 for an existing name
        make_collection(client)
    assert exc.value.status_code == 409
    client.upsert("c", [point(1)])
    client.update_collection("c", hnsw_config=models.HnswConfigDiff(m=16))
    info = client.get_collection("c")
    assert info.config.hnsw_config.m == 16 and info.indexed_vectors_count == 2  # rule of thumb: all dense
    fake.collection("c").indexed_vectors_count = 0  # tests can make indexing lag
    assert client.get_collection("c").indexed_vectors_count == 0
    assert client.delete_collection("c")
    assert not client.collection_exists("c")
    with pytest.raises(UnexpectedResponse) as exc:
        client.get_collection("c")
    assert exc.value.status_code == 404 and "doesn't exist" in exc.value.structured()["status"]["error"]


def test_points_round_trip_exactly(fake, client):
    make_collection(client)
    x = 0.1 + 0.2  # 0.30000000000000004: survives only an exact round trip
    result = client.upsert("c", [point(2, x), point(UID, x, text="é", nested={"a": [1, 2.5, None]}), point(1)],
                           wait=True)
    assert result.status == models.UpdateStatus.COMPLETED
    assert client.count("c", exact=True).count == 3
    records = {r.id: r for r in client.retrieve("c", [1, 2, UID, 99], with_payload=True, with_vectors=True)}
    assert set(records) == {1, 2, UID}
    assert records[2].payload == {"n": 2, "f": x}
    assert records[2].vector["dense"] == [x, 0.2, 0.3]
    assert records[2].vector["sparse"] == models.SparseVector(indices=[3, 1], values=[x, 0.5])  # as sent
    assert records[UID].payload == {"text": "é", "nested": {"a": [1, 2.5, None]}}
    assert fake.points("c")[2]["vector"]["other"] == [1.0, x]
    only = client.retrieve("c", [2], with_payload=["f"], with_vectors=["other"])[0]
    assert only.payload == {"f": x} and only.vector == {"other": [1.0, x]}
    # scroll: integers in order, then UUIDs; pages join up
    page, offset = client.scroll("c", limit=2)
    assert [r.id for r in page] == [1, 2] and offset == UID and page[0].vector is None
    page, offset = client.scroll("c", limit=2, offset=offset)
    assert [r.id for r in page] == [UID] and offset is None
    # filters on count / scroll / delete
    assert client.count("c", count_filter=models.Filter(must=[
        models.FieldCondition(key="n", match=models.MatchValue(value=2))])).count == 1
    assert client.count("c", count_filter=models.Filter(must=[
        models.FieldCondition(key="f", range=models.Range(gt=0.2))])).count == 1
    assert client.count("c", count_filter=models.Filter(must=[models.HasIdCondition(has_id=[1, UID])])).count == 2
    # brute-force query on a dense and a sparse vector
    hits = client.query_points("c", query=[1.0, x], using="other", limit=2, with_payload=False).points
    assert [h.id for h in hits][0] in (2, UID) and hits[0].score == 0.0  # Euclid: distance, smallest first
    hits = client.query_points("c", query=models.SparseVector(indices=[1], values=[2.0]), using="sparse").points
    assert {h.id for h in hits} == {1, 2, UID} and hits[0].score == 1.0
    # deletes
    client.delete("c", points_selector=models.PointIdsList(points=[2]), wait=True)
    assert {r.id for r in client.retrieve("c", [1, 2, UID])} == {1, UID}
    client.delete("c", points_selector=models.FilterSelector(filter=models.Filter()), wait=True)
    assert client.count("c").count == 0


def test_batch_update_and_partial_changes(fake, client):
    make_collection(client)
    client.upsert("c", [point(1), point(2)])
    client.batch_update_points("c", update_operations=[
        models.UpsertOperation(upsert=models.PointsList(points=[point(3)])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"k": "v"}, points=[1])),
        models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
            models.PointVectors(id=2, vector={"other": [9.0, 9.0]})])),
        models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(points=[3], vector=["sparse"])),
        models.DeleteOperation(delete=models.PointIdsList(points=[1])),
    ], wait=True)
    pts = fake.points("c")
    assert set(pts) == {2, 3}
    assert pts[2]["vector"]["other"] == [9.0, 9.0] and pts[2]["vector"]["dense"] == [0.1, 0.2, 0.3]
    assert set(pts[3]["vector"]) == {"dense", "other"}
    assert fake.seen(BATCH, "POST")[0].ids == [3]
    client.overwrite_payload("c", payload={"only": 1}, points=[2])
    assert fake.points("c")[2]["payload"] == {"only": 1}


def test_bad_input_is_rejected_like_qdrant(client):
    make_collection(client)
    with pytest.raises(UnexpectedResponse) as exc:
        client.upsert("c", [models.PointStruct(id=1, vector={"dense": [1.0, 2.0]})])
    assert exc.value.status_code == 400
    assert exc.value.structured()["status"]["error"] == "Wrong input: Vector dimension error: expected dim: 3, got 2"
    with pytest.raises(UnexpectedResponse) as exc:
        client.upsert("c", [models.PointStruct(id=1, vector={"nope": [1.0]})])
    assert "Not existing vector name" in exc.value.structured()["status"]["error"]
    with pytest.raises(UnexpectedResponse) as exc:
        client.upsert("missing", [point(1)])
    assert exc.value.status_code == 404
    assert client.count("c").count == 0


def test_pg2qdrant_target_reaches_it_over_rest(fake):
    from pg2qdrant.destination.qdrant import QdrantTarget, parse_target_url

    address = parse_target_url(fake.url)
    assert address.kind == "server" and not address.grpc
    target = QdrantTarget(address, timeout=5)
    try:
        target.check_reachable()
        assert target.shape("c") is None
        make_collection(target.client)
        shape = target.shape("c")
        assert shape.dense["dense"] == (3, "Cosine", "float32") and "sparse" in shape.sparse
        assert target.count("c") == 0
    finally:
        target.close()


@pytest.mark.timeout(30)
def test_migrate_end_to_end_against_the_stand_in(db, cli, fake):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, title text, n integer, score double precision, "
               "v vector(4))")
    db.execute("INSERT INTO items SELECT i, 'title ' || i, i * 3, i / 7.0, "
               "ARRAY[i / 3.0, -i, 0.1, 1e-7 * i]::real[]::vector FROM generate_series(1, 300) i")
    r = cli("migrate", "--pg.url", db.url, "--pg.table", "items", "--qdrant.url", fake.url,
            "--qdrant.collection", "c")
    assert r.exit_code == 0, r.output
    assert fake.upserts("c") and all(u.status == 200 for u in fake.upserts("c"))
    stored = fake.points("c")
    rows = db.execute("SELECT id, title, n, score, v::real[] FROM items ORDER BY id")
    assert sorted(stored) == [row[0] for row in rows]
    for pid, title, n, score, v in rows:
        point = stored[pid]
        assert {k: point["payload"][k] for k in ("title", "n", "score")} == {"title": title, "n": n, "score": score}
        (vector,) = point["vector"].values()
        assert [float(np.float32(x)) for x in vector] == vector  # float32 values, sent exactly
        assert np.asarray(vector, dtype=np.float32).tobytes() == np.asarray(v, dtype=np.float32).tobytes()


# --- faults: what qdrant-client raises --------------------------------------------------------

@pytest.mark.parametrize("action, status, text", [
    (Respond(429, "Rate limiting exceeded: too many writes"), 429, b"Rate limiting exceeded"),
    (bad_gateway(), 502, b"502 Bad Gateway"),
    (service_unavailable(), 503, b"Service unavailable"),
    (gateway_timeout(), 504, b"504 Gateway Time-out"),
    (please_retry(), 500, b"Please retry"),
    (server_error(), 500, b"No space left on device"),
    (wrong_input(), 400, b"Wrong input: Vector dimension error"),
    (too_large(), 400, b"is larger than allowed"),
    (too_large(status=413), 413, b"is larger than allowed"),
], ids=["429", "502", "503", "504", "please-retry", "500", "400", "too-large", "413"])
def test_status_faults_raise_unexpected_response(fake, client, action, status, text):
    make_collection(client)
    fault = fake.faults.add(UPSERT, "PUT", action=action)
    with pytest.raises(UnexpectedResponse) as exc:
        client.upsert("c", [point(1)])
    assert exc.value.status_code == status and text in exc.value.content
    assert fault.fired == 1 and fault.exhausted
    client.upsert("c", [point(1)])  # the fault was for one request: the retry goes through
    assert [(u.status, u.outcome) for u in fake.upserts()] == [(status, "fault"), (200, "ok")]
    assert client.count("c").count == 1


def test_429_with_retry_after_raises_resource_exhausted(fake, client):
    make_collection(client)
    fake.faults.add(UPSERT, "PUT", action=rate_limited(retry_after=2))
    with pytest.raises(ResourceExhaustedResponse) as exc:  # not an UnexpectedResponse
        client.upsert("c", [point(1)])
    assert exc.value.retry_after_s == 2 and "Rate limiting exceeded" in str(exc.value)


@pytest.mark.parametrize("action, source", [
    (Drop(), httpx.RemoteProtocolError),
    (Drop(reset=True), httpx.ReadError),
    (Delay(1.6), httpx.ReadTimeout),  # the client's timeout is 1 s
], ids=["drop", "reset", "timeout"])
def test_connection_faults_raise_response_handling_exception(fake, client, action, source):
    make_collection(client)
    fake.faults.add(COUNT, "POST", action=action)
    with pytest.raises(ResponseHandlingException) as exc:
        client.count("c")
    assert isinstance(exc.value.source, source)
    assert client.count("c").count == 0  # the same client recovers


def test_stopped_server_refuses_connections_and_restarts_with_its_data(fake, client):
    make_collection(client)
    client.upsert("c", [point(1)])
    port = fake.port
    fake.stop()
    with pytest.raises(ResponseHandlingException) as exc:
        client.count("c")
    assert isinstance(exc.value.source, httpx.ConnectError)
    fake.start()
    assert fake.port == port and client.count("c").count == 1


def test_after_apply_loses_only_the_acknowledgement(fake, client):
    make_collection(client)
    fake.faults.add(UPSERT, "PUT", action=Drop(after_apply=True))
    fake.faults.add(UPSERT, "PUT", action=Respond(504, "proxy gave up", after_apply=True))
    with pytest.raises(ResponseHandlingException):
        client.upsert("c", [point(1)])
    with pytest.raises(UnexpectedResponse):
        client.upsert("c", [point(2)])
    fake.faults.add(UPSERT, "PUT", action=Delay(1.3, after_apply=True))  # the client gives up after 1 s
    with pytest.raises(ResponseHandlingException) as exc:
        client.upsert("c", [point(3)])
    assert isinstance(exc.value.source, httpx.ReadTimeout)
    assert set(fake.points("c")) == {1, 2, 3}  # all three writes happened


def test_delay_then_another_action(fake, client):
    make_collection(client)
    fake.faults.add(COUNT, action=Delay(0.2, then=please_retry()))
    started = time.monotonic()
    with pytest.raises(UnexpectedResponse) as exc:
        client.count("c")
    assert exc.value.status_code == 500 and time.monotonic() - started >= 0.2
    assert exc.value.structured()["status"]["error"].endswith("Please retry")


def test_skip_times_and_when_pick_the_requests(fake, client):
    make_collection(client)
    every_other = fake.faults.add(UPSERT, "PUT", action=Respond(503, "busy"), skip=1, times=2)
    only_7 = fake.faults.add(UPSERT, "PUT", action=wrong_input("bad point 7"), times=None,
                             when=lambda req: 7 in (req.ids or []))
    outcomes = []
    for pid in (1, 2, 3, 4, 7, 7):
        try:
            client.upsert("c", [point(pid)])
            outcomes.append(200)
        except UnexpectedResponse as exc:
            outcomes.append(exc.status_code)
    assert outcomes == [200, 503, 503, 200, 400, 400]
    assert every_other.matched == 6 and every_other.fired == 2 and only_7.fired == 2
    assert [u.ids for u in fake.upserts("c")] == [[1], [2], [3], [4], [7], [7]]


def test_oversized_request_is_rejected_so_the_batch_can_be_split():
    with FakeQdrant(max_request_bytes=1000) as fake:
        c = fake.client()
        make_collection(c)
        batch = [point(i) for i in range(1, 11)]
        with pytest.raises(UnexpectedResponse) as exc:
            c.upsert("c", batch)
        assert exc.value.status_code == 400
        assert "larger than allowed (limit: 1000 bytes)" in exc.value.structured()["status"]["error"]
        c.upsert("c", batch[:5])
        c.upsert("c", batch[5:])
        sizes = [(len(u.ids), u.size > 1000, u.status) for u in fake.upserts()]
        assert sizes == [(10, True, 400), (5, False, 200), (5, False, 200)]
        assert c.count("c").count == 10
        c.close()


def test_api_key_is_required_when_configured():
    with FakeQdrant(api_key="s3cret") as fake:
        good = fake.client()
        make_collection(good)
        for key in (None, "wrong"):
            bad = fake.client(api_key=key)
            with pytest.raises(UnexpectedResponse) as exc:
                bad.get_collections()
            assert exc.value.status_code == 401
            bad.close()
        assert [r.outcome for r in fake.requests[-2:]] == ["unauthorized", "unauthorized"]
        assert good.count("c").count == 0
        good.close()


def test_wait_false_is_acknowledged_before_it_is_applied():
    with FakeQdrant(apply_delay=0.2) as fake:
        c = fake.client()
        make_collection(c)
        r = c.upsert("c", [point(1)], wait=False)
        assert r.status == models.UpdateStatus.ACKNOWLEDGED
        assert c.count("c").count == 0  # not applied yet
        r = c.upsert("c", [point(2)], wait=True)  # waits for everything before it, in order
        assert r.status == models.UpdateStatus.COMPLETED and c.count("c").count == 2
        c.close()


def test_uuid_ids_come_back_canonical(client):
    make_collection(client)
    client.upsert("c", [point(UID.upper().replace("-", ""))])
    assert client.scroll("c")[0][0].id == UID
    assert client.retrieve("c", [uuid.UUID(UID)])[0].id == UID
