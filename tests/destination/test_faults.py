"""Qdrant-side faults, injected in front of the test endpoint (tests/qdrant_endpoint: Qdrant's
gRPC and REST APIs over Qdrant Edge), over gRPC and over REST.

Transient failures are retried with backoff; a request rejected as too large is
split; permanent errors stop with the server's message and a resumable state;
TLS certificates are verified unless --skip-tls-verification.
"""

from __future__ import annotations

import datetime
import re

import grpc
import numpy as np
import pytest

from helpers import create_items_table
from pg2qdrant.destination import server
from pg2qdrant.destination.qdrant import QdrantTarget
from pg2qdrant.verify.compare import ulps_apart
from qdrant_endpoint import (
    BATCH,
    CREATE_COLLECTION,
    CREATE_INDEX,
    UPSERT,
    Delay,
    Drop,
    QdrantEndpoint,
    bad_gateway,
    gateway_timeout,
    grpc_status,
    message_larger_than_max,
    please_retry,
    rate_limited,
    service_unavailable,
    wrong_input,
)

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

FRONTS = ["grpc", "rest"]


@pytest.fixture
def table(db):
    create_items_table(db, 600)
    return db


def migrate(cli, db, url: str, *extra: str):
    # Euclid: Qdrant normalizes Cosine vectors on write, and these tests compare vectors exactly.
    return cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", url, "--qdrant.collection", "c",
               "-b", "100", "--migration.num-workers", "1", "--qdrant.distance-metric", "v=euclid", *extra)


def assert_points_equal_table(q: QdrantEndpoint, db) -> None:
    """What Qdrant stored (read from the engine) is the table: exactly, but for Qdrant Edge's
    known re-parsing of float payload values (docs/targets.md: within 2 ULP)."""
    points = q.points("c")
    rows = db.execute("SELECT id, title, n, score, v::text FROM t ORDER BY id")
    assert sorted(points) == [r[0] for r in rows]
    for rid, title, n, score, v in rows:
        p = points[rid]
        stored = dict(p.payload)
        stored_score = stored.pop("score")
        assert stored == {"id": rid, "title": title, "n": n}
        assert stored_score == score if score is None else ulps_apart(stored_score, score) <= 2
        expected = np.array([float(x) for x in v.strip("[]").split(",")], dtype=np.float32)
        assert np.array_equal(np.asarray(p.vector["v"], dtype=np.float32), expected)


TRANSIENT = {
    "503": service_unavailable(), "429": rate_limited(None), "429-retry-after": rate_limited(1),
    "502": bad_gateway(), "504": gateway_timeout(), "please-retry": please_retry(),
    "dropped": Drop(), "reset": Drop(reset=True), "lost-ack": Drop(after_apply=True),
    "unavailable": grpc_status("UNAVAILABLE", "Socket closed"),
    "deadline": grpc_status("DEADLINE_EXCEEDED", "Deadline Exceeded"),
    "resource-exhausted": grpc_status("RESOURCE_EXHAUSTED", "Too many requests"),
}
# gRPC carries only codes: the HTTP statuses that map to the same code are not repeated there,
# and the gRPC-only codes are not repeated over REST (they arrive as a plain 500 there).
GRPC_ONLY = {"unavailable", "deadline", "resource-exhausted"}
REST_ONLY = {"502"}


@pytest.mark.parametrize("front, name", [(f, n) for f in FRONTS for n in TRANSIENT
                                         if not (f == "rest" and n in GRPC_ONLY or f == "grpc" and n in REST_ONLY)])
def test_transient_failures_are_retried(table, cli, front, name):
    with QdrantEndpoint() as q:
        fault = q.faults.add(UPSERT, collection="c", times=2, action=TRANSIENT[name])
        r = migrate(cli, table, q.target_url(front))
        assert r.exit_code == 0, r.output
        assert fault.fired == 2
        assert "transient failures retried" in r.stdout
        assert {u.front for u in q.upserts("c")} == {front}
        assert_points_equal_table(q, table)


@pytest.mark.parametrize("front", FRONTS)
def test_a_slow_answer_past_the_deadline_is_retried(table, cli, front, monkeypatch):
    from pg2qdrant.destination.grpc_writer import GrpcPointsWriter
    from pg2qdrant.destination.qdrant import QdrantTarget
    for cls in (QdrantTarget, GrpcPointsWriter):  # no flag sets it; readers write over gRPC with the latter
        monkeypatch.setitem(cls.__init__.__kwdefaults__, "timeout", 1)
    with QdrantEndpoint() as q:
        fault = q.faults.add(UPSERT, collection="c", times=1, action=Delay(1.5))
        r = migrate(cli, table, q.target_url(front))
        assert r.exit_code == 0, r.output
        assert fault.fired == 1 and "transient failures retried" in r.stdout
        assert_points_equal_table(q, table)


@pytest.mark.parametrize("front", FRONTS)
def test_a_batch_rejected_as_too_large_is_split(table, cli, front):
    # 100-point requests are ~40 KB of JSON or ~15 KB of protobuf here
    with QdrantEndpoint(max_request_bytes=20_000 if front == "rest" else 8_000) as q:
        r = migrate(cli, table, q.target_url(front))
        assert r.exit_code == 0, r.output
        outcomes = [u.outcome for u in q.upserts("c")]
        assert "too_large" in outcomes and outcomes.count("ok") > 6  # rejected, then accepted in halves
        assert_points_equal_table(q, table)


def test_grpc_message_larger_than_max_is_split_not_retried(table, cli):
    with QdrantEndpoint() as q:
        fault = q.faults.add(UPSERT, collection="c", times=1, action=message_larger_than_max())
        r = migrate(cli, table, q.grpc_url)
        assert r.exit_code == 0, r.output
        refused = next(u for u in q.upserts("c") if u.fault is fault)
        halves = [u.ids for u in q.upserts("c") if u.ok and set(u.ids) <= set(refused.ids)]
        assert halves == [refused.ids[:50], refused.ids[50:]]  # split in halves, never sent again whole
        assert_points_equal_table(q, table)


@pytest.mark.parametrize("workers", ["1", "2"])  # a thread, or processes that write themselves
@pytest.mark.parametrize("front", FRONTS)
def test_a_single_row_larger_than_the_request_limit(table, cli, front, workers):
    table.execute("UPDATE t SET title = repeat('x', 200000) WHERE id = 7")
    with QdrantEndpoint(max_request_bytes=100_000) as q:
        r = migrate(cli, table, q.target_url(front), "--migration.num-workers", workers)
        assert r.exit_code == 2, r.output
        assert "Qdrant rejected point 7 as too large" in r.stderr and "Fix:" in r.stderr
        assert "Traceback" not in r.output


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("front", FRONTS)
def test_permanent_error_stops_with_the_server_message_and_resumes(table, cli, front, workers):
    with QdrantEndpoint() as q:
        fault = q.faults.add(UPSERT, collection="c", times=1, skip=3,
                             action=wrong_input("Vector dimension error: boom"))
        r = migrate(cli, table, q.target_url(front), "--migration.num-workers", workers)
        assert r.exit_code == 1, r.output
        assert "Vector dimension error: boom" in r.stderr
        assert "rerun the same command to resume" in r.stderr
        failed = [u for u in q.upserts("c") if u.fault is not None]
        assert fault.fired == 1 and len(failed) == 1
        # No retry of a permanent error: the failed request's points were never sent again.
        assert sum(1 for u in q.upserts("c") if failed[0].ids[0] in (u.ids or [])) == 1
        r = migrate(cli, table, q.target_url(front))  # the fault is spent: the rerun finishes the job
        assert r.exit_code == 0, r.output
        assert_points_equal_table(q, table)


@pytest.mark.parametrize("front", FRONTS)
def test_retry_budget_is_bounded(table, cli, front):
    with QdrantEndpoint() as q:
        q.faults.add(UPSERT, collection="c", times=None, action=service_unavailable())
        r = migrate(cli, table, q.target_url(front), "--migration.max-retries", "2")
        assert r.exit_code == 1, r.output
        assert ("HTTP 503" if front == "rest" else "UNAVAILABLE") in r.stderr
        assert "rerun the same command to resume" in r.stderr
        tries: dict[int, int] = {}
        for u in q.upserts("c"):
            tries[u.ids[0]] = tries.get(u.ids[0], 0) + 1
        # no request tried more than once plus two retries; the first that used them all stops the run
        # (requests still in flight beside it are not retried further)
        assert tries and max(tries.values()) == 3


@pytest.mark.parametrize("front", FRONTS)
def test_api_key_rejected(table, cli, front):
    with QdrantEndpoint(api_key="the-right-key") as q:
        r = migrate(cli, table, q.target_url(front), "--qdrant.api-key", "a-Wrong-Key-123")
        assert r.exit_code == 2, r.output
        assert "rejected the request" in r.stderr and "--qdrant.api-key" in r.stderr
        assert "a-Wrong-Key-123" not in r.output
        assert {x.outcome for x in q.requests} == {"unauthorized"}
        r = migrate(cli, table, q.target_url(front), "--qdrant.api-key", "the-right-key")
        assert r.exit_code == 0, r.output
        assert "the-right-key" not in r.output
        assert_points_equal_table(q, table)


def _self_signed() -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for 127.0.0.1, trusted by nobody."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.mark.parametrize("front", FRONTS)
def test_tls_certificates_are_verified(table, cli, front):
    pytest.importorskip("cryptography")
    with QdrantEndpoint(tls=_self_signed()) as q:
        url = q.target_url(front)
        assert url.startswith("https://" if front == "rest" else "grpcs://")
        r = migrate(cli, table, url)
        assert r.exit_code == 1, r.output
        assert "Fix:" in r.stderr and "Traceback" not in r.output
        assert not q.upserts("c")
        if front == "rest":
            assert "TLS failed" in r.stderr and "--skip-tls-verification" in r.stderr
            r = migrate(cli, table, url, "--skip-tls-verification")
            assert r.exit_code == 0, r.output
            assert_points_equal_table(q, table)


@pytest.mark.parametrize("front", FRONTS)
def test_server_collection_is_created_for_a_bulk_load(table, cli, front):
    """Against a server: HNSW off (m=0) while loading, restored at the end; payload indexes first."""
    table.execute("CREATE INDEX t_n_idx ON t (n)")
    with QdrantEndpoint(keep_bodies=True) as q:
        r = migrate(cli, table, q.target_url(front), "--qdrant.hnsw-m", "24",
                    "--qdrant.payload-index", "title:keyword")
        assert r.exit_code == 0, r.output
        create = q.seen(CREATE_COLLECTION, "c")[0].body  # JSON (REST) or protobuf message (gRPC)
        assert (create["hnsw_config"]["m"] if front == "rest" else create.hnsw_config.m) == 0
        ops = [x.op for x in q.seen(collection="c")]
        assert ops.index("create_collection") < ops.index(CREATE_INDEX) < ops.index(UPSERT)
        assert ops.count(CREATE_INDEX) == 2 and max(i for i, o in enumerate(ops) if o == CREATE_INDEX) \
            < ops.index(UPSERT)  # title (flag) and n (btree), before any point
        assert ops.index("update_collection") > max(i for i, o in enumerate(ops) if o == UPSERT)
        info = q.info("c")
        assert info.config.hnsw_config.m == 24
        assert set(info.payload_schema) == {"title", "n"}
        assert info.payload_schema["n"].points == 600
        assert info.indexed_vectors_count == 600  # Edge built the HNSW index once m was restored
        assert_points_equal_table(q, table)


def test_reader_processes_write_to_a_server_themselves(table, cli, monkeypatch):
    """With 2 workers each reader process writes through its own connection: this process (the
    coordinator) sends no point, and the failures the workers retried still reach the summary."""
    in_coordinator = []
    upsert = QdrantTarget.upsert

    def spy(self, collection, batch, **kwargs):
        in_coordinator.append(len(batch))
        return upsert(self, collection, batch, **kwargs)

    monkeypatch.setattr(QdrantTarget, "upsert", spy)  # spawned workers import the real one
    with QdrantEndpoint() as q:
        fault = q.faults.add(UPSERT, collection="c", times=3, action=service_unavailable())
        r = migrate(cli, table, q.grpc_url, "--migration.num-workers", "2", "--migration.range-rows", "100")
        assert r.exit_code == 0, r.output
        assert re.search(r"2 / \d+ key ranges", r.stdout)  # workers / ranges
        assert fault.fired == 3
        assert re.search(r"transient failures retried\W+3\b", r.stdout), r.stdout
        assert in_coordinator == []
        assert_points_equal_table(q, table)


@pytest.mark.parametrize("bound", ["server", "writer"])
def test_sync_writes_are_bounded_and_split_by_bytes(table, cli, monkeypatch, bound):
    """Sync writes through the copy's Writer: requests bounded by bytes (``writer``: our limit set
    below the server's, nothing is refused) and split when the server refuses one as too large
    (``server``). Here a reconcile fills an empty collection; CDC and poll apply the same way."""
    limit = 20_000  # 100-point requests are ~40 KB of JSON here
    if bound == "writer":
        monkeypatch.setattr(server, "MAX_REQUEST_BYTES", limit // 3)  # the estimate is rough (JSON floats)
    with QdrantEndpoint(max_request_bytes=limit) as q:
        r = cli("sync", "--pg.url", table.url, "--pg.table", "t", "--qdrant.url", q.url,
                "--qdrant.collection", "c", "-b", "100", "--sync.mode", "reconcile",
                "--qdrant.distance-metric", "v=euclid")  # Edge normalises Cosine vectors
        assert r.exit_code == 0, r.output
        outcomes = [x.outcome for x in q.seen(BATCH, "c")]
        if bound == "writer":
            assert set(outcomes) == {"ok"} and len(outcomes) > 6
        else:
            assert "too_large" in outcomes and outcomes.count("ok") > 6  # refused, then accepted in halves
        assert_points_equal_table(q, table)


def test_the_readers_grpc_writer_waits_the_servers_retry_after_and_sends_the_api_key():
    """Readers write through grpc_writer (no qdrant-client): a RESOURCE_EXHAUSTED with a retry-after
    trailer is retried after that many seconds, as qdrant-client's ResourceExhaustedResponse is,
    and every call carries the api-key header."""
    import time

    from qdrant_client import models

    from pg2qdrant.core.mapping.batch import PointBatch
    from pg2qdrant.core.mapping.vectors import DenseColumn
    from pg2qdrant.core.retry import RetryPolicy
    from pg2qdrant.destination import TargetSettings
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.grpc_writer import GrpcPointsWriter
    with QdrantEndpoint(api_key="k-123") as q:
        address = parse_target_url(q.grpc_url)
        admin = QdrantTarget(address, api_key="k-123")
        admin.client.create_collection("c", vectors_config={"v": models.VectorParams(size=2, distance="Dot")})
        fault = q.faults.add(UPSERT, collection="c", times=1, action=rate_limited(2))
        writer = TargetSettings(address, "k-123", retry=RetryPolicy(base_delay_s=0.05)).open_writer()
        assert isinstance(writer, GrpcPointsWriter)
        batch = PointBatch([1, 2], [{"a": 1}, {"a": None}],
                           {"v": DenseColumn(np.array([[1, 2], [3, 4]], dtype=np.float32), np.ones(2, bool))})
        started = time.monotonic()
        writer.upsert("c", batch)
        assert time.monotonic() - started >= 2.0 and fault.fired == 1 and writer.retries == 1
        writer.close()
        assert admin.count("c") == 2
        admin.close()
        assert [u.headers.get("api-key") for u in q.upserts("c")] == ["k-123", "k-123"]


def test_a_readers_writer_keeps_requests_in_flight_in_grpc_and_retries_a_failed_one_once():
    """The Writer over the readers' gRPC writer sends without waiting (no thread of its own) and reads
    the answers oldest first; a request that failed (429 with retry-after) is sent again after the
    pause, counted as one retry, and every point is acknowledged exactly once."""
    import time

    from qdrant_client import models

    from pg2qdrant.core.mapping.batch import PointBatch
    from pg2qdrant.core.mapping.vectors import DenseColumn
    from pg2qdrant.core.retry import RetryPolicy
    from pg2qdrant.destination import TargetSettings
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.writer import Writer
    with QdrantEndpoint() as q:
        address = parse_target_url(q.grpc_url)
        admin = QdrantTarget(address)
        admin.client.create_collection("c", vectors_config={"v": models.VectorParams(size=2, distance="Dot")})
        fault = q.faults.add(UPSERT, collection="c", times=1, action=rate_limited(1))
        target = TargetSettings(address, None, retry=RetryPolicy(base_delay_s=0.05)).open_writer()
        acknowledged: dict[str, int] = {}
        writer = Writer(target, "c", batch_size=2,
                        on_written=lambda tag, n: acknowledged.__setitem__(tag, acknowledged.get(tag, 0) + n))
        vectors = np.arange(20, dtype=np.float32).reshape(10, 2)
        batch = PointBatch(list(range(10)), [{"i": i} for i in range(10)],
                           {"v": DenseColumn(vectors, np.ones(10, bool))})
        started = time.monotonic()
        writer.write("range-1", batch)  # five requests of two points, up to four in flight
        assert len(writer._sent) >= 1 and writer._pool is None
        writer.drain()
        assert time.monotonic() - started >= 1.0 and fault.fired == 1 and target.retries == 1
        assert acknowledged == {"range-1": 10} and not writer._sent
        writer.close()
        target.close()
        assert admin.count("c") == 10
        stored = {p.id: p for p in admin.client.retrieve("c", list(range(10)), with_vectors=True)}
        assert all(np.array_equal(np.asarray(stored[i].vector["v"], dtype=np.float32), vectors[i]) for i in range(10))
        admin.close()
        assert sorted(u.outcome for u in q.upserts("c")).count("ok") == 5


class _FailedRpc(grpc.RpcError):
    """A gRPC failure as a future reports it (injected: no server makes one on demand at a given time)."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "Socket closed"


def test_a_request_sent_without_waiting_is_retried_within_the_deadline_of_its_first_attempt():
    """The retry deadline of a request that failed in flight counts from when it was sent, as it did
    when the writer waited for each request: past it, no retry; within it, the normal retries."""
    import time

    from pg2qdrant.core.errors import TargetError
    from pg2qdrant.core.mapping.batch import PointBatch
    from pg2qdrant.core.mapping.vectors import DenseColumn
    from pg2qdrant.core.retry import RetryPolicy
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.grpc_writer import GrpcPointsWriter
    from pg2qdrant.localpg import free_port
    batch = PointBatch([1], [{}], {"v": DenseColumn(np.ones((1, 2), dtype=np.float32), np.ones(1, bool))})
    nobody = parse_target_url(f"grpc://127.0.0.1:{free_port()}")  # nothing listens there
    policy = RetryPolicy(max_retries=2, deadline_s=5.0, base_delay_s=0.01)
    late = GrpcPointsWriter(nobody, retry=policy)
    with pytest.raises(TargetError, match="UNAVAILABLE: Socket closed"):
        late.upsert("c", batch, failed=_FailedRpc(), started=time.monotonic() - 10)
    assert late.retries == 0
    late.close()
    recent = GrpcPointsWriter(nobody, retry=policy)
    with pytest.raises(TargetError, match="Cannot reach Qdrant"):
        recent.upsert("c", batch, failed=_FailedRpc(), started=time.monotonic())
    assert recent.retries == 2  # the failure in hand was the first attempt: two more, sent for real
    recent.close()
