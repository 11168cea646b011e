"""Qdrant-side faults, injected by the REST stand-in (tests/fake_qdrant.py; no Qdrant server runs here).

Transient failures are retried with backoff; a request rejected as too large is
split; permanent errors stop with the server's message and a resumable state;
TLS certificates are verified unless --skip-tls-verification.
"""

from __future__ import annotations

import datetime
import re
import ssl

import numpy as np
import pytest

from fake_qdrant import (BATCH, UPSERT, Drop, FakeQdrant, bad_gateway, gateway_timeout, please_retry,
                         rate_limited, service_unavailable, wrong_input)
from helpers import create_items_table
from pg2qdrant.destination import qdrant
from pg2qdrant.destination.qdrant import QdrantTarget

import pg2qdrant.cli_sync  # noqa: F401  (registers `sync` on the CLI until cli.py imports it)


@pytest.fixture
def table(db):
    create_items_table(db, 600)
    return db


def migrate(cli, db, url: str, *extra: str):
    return cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", url, "--qdrant.collection", "c",
               "-b", "100", "--migration.num-workers", "1", *extra)


def assert_points_equal_table(fake: FakeQdrant, db) -> None:
    points = fake.points("c")
    rows = db.execute("SELECT id, title, n, score, v::text FROM t ORDER BY id")
    assert sorted(points) == [r[0] for r in rows]
    for rid, title, n, score, v in rows:
        p = points[rid]
        assert p["payload"] == {"id": rid, "title": title, "n": n, "score": score}
        expected = np.array([float(x) for x in v.strip("[]").split(",")], dtype=np.float32)
        assert np.array_equal(np.asarray(p["vector"]["v"], dtype=np.float32), expected)


@pytest.mark.parametrize("action", [
    service_unavailable(), rate_limited(None), rate_limited(1), bad_gateway(), gateway_timeout(), please_retry(),
    Drop(), Drop(reset=True), Drop(after_apply=True),
], ids=["503", "429", "429-retry-after", "502", "504", "please-retry", "dropped", "reset", "lost-ack"])
def test_transient_failures_are_retried(table, cli, action):
    with FakeQdrant() as fake:
        fault = fake.faults.add(UPSERT, "PUT", times=2, action=action)
        r = migrate(cli, table, fake.url)
        assert r.exit_code == 0, r.output
        assert fault.fired == 2
        assert "transient failures retried" in r.stdout
        assert_points_equal_table(fake, table)


def test_a_batch_rejected_as_too_large_is_split(table, cli):
    with FakeQdrant(max_request_bytes=20_000) as fake:  # 100-point requests are ~40 KB here
        r = migrate(cli, table, fake.url)
        assert r.exit_code == 0, r.output
        statuses = [u.status for u in fake.upserts("c")]
        assert 400 in statuses and statuses.count(200) > 6  # rejected, then accepted in halves
        assert_points_equal_table(fake, table)


@pytest.mark.parametrize("workers", ["1", "2"])  # a thread, or processes that write themselves
def test_a_single_row_larger_than_the_request_limit(table, cli, workers):
    table.execute("UPDATE t SET title = repeat('x', 200000) WHERE id = 7")
    with FakeQdrant(max_request_bytes=100_000) as fake:
        r = migrate(cli, table, fake.url, "--migration.num-workers", workers)
        assert r.exit_code == 2, r.output
        assert "Qdrant rejected point 7 as too large" in r.stderr and "Fix:" in r.stderr
        assert "Traceback" not in r.output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_permanent_error_stops_with_the_server_message_and_resumes(table, cli, workers):
    with FakeQdrant() as fake:
        fault = fake.faults.add(UPSERT, "PUT", times=1, skip=3, action=wrong_input("Vector dimension error: boom"))
        r = migrate(cli, table, fake.url, "--migration.num-workers", workers)
        assert r.exit_code == 1, r.output
        assert "Vector dimension error: boom" in r.stderr
        assert "rerun the same command to resume" in r.stderr
        failed = [u for u in fake.upserts("c") if u.status == 400]
        assert fault.fired == 1 and len(failed) == 1
        # No retry of a permanent error: the failed request's points were never sent again.
        assert sum(1 for u in fake.upserts("c") if failed[0].ids[0] in (u.ids or [])) == 1
        r = migrate(cli, table, fake.url)  # the fault is spent: the rerun finishes the job
        assert r.exit_code == 0, r.output
        assert_points_equal_table(fake, table)


def test_retry_budget_is_bounded(table, cli):
    with FakeQdrant() as fake:
        fake.faults.add(r"^/collections/c/points$", "PUT", times=None, action=service_unavailable())
        r = migrate(cli, table, fake.url, "--migration.max-retries", "2")
        assert r.exit_code == 1, r.output
        assert "HTTP 503" in r.stderr and "rerun the same command to resume" in r.stderr
        tries: dict[int, int] = {}
        for u in fake.upserts("c"):
            tries[u.ids[0]] = tries.get(u.ids[0], 0) + 1
        assert tries and set(tries.values()) == {3}  # each request: one try and two retries, no more


def test_api_key_rejected(table, cli):
    with FakeQdrant(api_key="the-right-key") as fake:
        r = migrate(cli, table, fake.url, "--qdrant.api-key", "a-Wrong-Key-123")
        assert r.exit_code == 2, r.output
        assert "rejected the request" in r.stderr and "--qdrant.api-key" in r.stderr
        assert "a-Wrong-Key-123" not in r.output
        r = migrate(cli, table, fake.url, "--qdrant.api-key", "the-right-key")
        assert r.exit_code == 0, r.output
        assert "the-right-key" not in r.output


def _self_signed(tmp_path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def test_tls_certificates_are_verified_unless_told_otherwise(table, cli, tmp_path):
    pytest.importorskip("cryptography")
    with FakeQdrant(tls=_self_signed(tmp_path)) as fake:
        assert fake.url.startswith("https://")
        r = migrate(cli, table, fake.url)
        assert r.exit_code == 1, r.output
        assert "TLS failed" in r.stderr and "--skip-tls-verification" in r.stderr
        assert not fake.upserts("c")
        r = migrate(cli, table, fake.url, "--skip-tls-verification")
        assert r.exit_code == 0, r.output
        assert_points_equal_table(fake, table)


def test_server_collection_is_created_for_a_bulk_load(table, cli):
    """Against a server: HNSW off (m=0) while loading, restored at the end; payload indexes first."""
    table.execute("CREATE INDEX t_n_idx ON t (n)")
    with FakeQdrant(keep_bodies=True) as fake:
        r = migrate(cli, table, fake.url, "--qdrant.hnsw-m", "24", "--qdrant.payload-index", "title:keyword")
        assert r.exit_code == 0, r.output
        create = next(q for q in fake.seen(r"^/collections/c$", "PUT"))
        assert create.body["hnsw_config"]["m"] == 0
        first_upsert = min(i for i, q in enumerate(fake.requests) if q.method == "PUT" and q.path == "/collections/c/points")
        index_requests = [i for i, q in enumerate(fake.requests) if q.path == "/collections/c/index"]
        assert len(index_requests) == 2 and max(index_requests) < first_upsert  # title (flag) and n (btree)
        patch = next(q for q in fake.seen(r"^/collections/c$", "PATCH"))
        assert patch.body["hnsw_config"]["m"] == 24
        assert fake.collection("c").hnsw["m"] == 24
        assert set(fake.collection("c").payload_schema) == {"title", "n"}


def test_reader_processes_write_to_a_server_themselves(table, cli, monkeypatch):
    """With 2 workers each reader process writes through its own connection: this process (the
    coordinator) sends no point, and the failures the workers retried still reach the summary."""
    in_coordinator = []
    upsert = QdrantTarget.upsert

    def spy(self, collection, batch, **kwargs):
        in_coordinator.append(len(batch))
        return upsert(self, collection, batch, **kwargs)

    monkeypatch.setattr(QdrantTarget, "upsert", spy)  # spawned workers import the real one
    with FakeQdrant() as fake:
        fault = fake.faults.add(UPSERT, "PUT", times=3, action=service_unavailable())
        r = migrate(cli, table, fake.url, "--migration.num-workers", "2", "--migration.range-rows", "100")
        assert r.exit_code == 0, r.output
        assert re.search(r"2 / \d+ key ranges", r.stdout)  # workers / ranges
        assert fault.fired == 3
        assert re.search(r"transient failures retried\W+3\b", r.stdout), r.stdout
        assert in_coordinator == []
        assert_points_equal_table(fake, table)


@pytest.mark.parametrize("bound", ["server", "writer"])
def test_sync_writes_are_bounded_and_split_by_bytes(table, cli, monkeypatch, bound):
    """Sync writes through the copy's Writer: requests bounded by bytes (``writer``: our limit set
    below the server's, nothing is refused) and split when the server refuses one as too large
    (``server``). Here a reconcile fills an empty collection; CDC and poll apply the same way."""
    limit = 20_000  # 100-point requests are ~40 KB here
    if bound == "writer":
        monkeypatch.setattr(qdrant, "MAX_REQUEST_BYTES", limit // 3)  # the estimate is rough (JSON floats)
    with FakeQdrant(max_request_bytes=limit) as fake:
        r = cli("sync", "--pg.url", table.url, "--pg.table", "t", "--qdrant.url", fake.url,
                "--qdrant.collection", "c", "-b", "100", "--sync.mode", "reconcile")
        assert r.exit_code == 0, r.output
        statuses = [q.status for q in fake.seen(BATCH, "POST")]
        if bound == "writer":
            assert set(statuses) == {200} and len(statuses) > 6
        else:
            assert 400 in statuses and statuses.count(200) > 6  # refused, then accepted in halves
        assert_points_equal_table(fake, table)
