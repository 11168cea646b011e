"""`sync` run as a service: metrics scraped, JSON logs, /healthz, SIGHUP, SIGTERM.

On the real PostgreSQL: `sync` runs (a subprocess where signals matter, a thread otherwise)
while another connection writes; /metrics is scraped with prometheus_client's own parser,
every log line must parse as JSON and hold no password, and /healthz must turn 503 when the
slot is dropped under the stream and when the lag passes its threshold.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_sync import compare, create_items, options, sdb, slot_of, wait_caught_up, wait_streaming  # noqa: F401

from conftest import run_cli
from pg2qdrant.core import redaction
from pg2qdrant.runtime.observability import HealthLimits, JsonFormatter, Service
from pg2qdrant.sync import run_sync
from pg2qdrant.sync.options import SyncOptions, SyncStats
from pg2qdrant.ui import UI

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

LABELS = {"table": "items", "collection": "c"}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """/metrics parsed by prometheus_client: {(sample name, sorted labels): value}."""
    status, text = get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted({**LABELS, **labels}.items()))), 0.0)


def health(port: int) -> tuple[int, dict]:
    status, text = get(port, "/healthz")
    return status, json.loads(text)


def wait_for(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def drop_slot_under_sync(url: str, slot: str) -> None:
    """Terminate the walsender and drop the slot before sync reconnects (it retries within a second)."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if pid is None:
                return
            try:
                if pid[0]:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.01)
    raise AssertionError(f"could not drop slot {slot}")


def read_events(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_sync_service_metrics_json_log_sighup_sigterm(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 40)
    slot = slot_of(sdb)
    log_file = tmp_path / "sync.jsonl"
    command = [sys.executable, "-m", "pg2qdrant", "sync", "--pg.url", sdb.url, "--pg.table", "items",
               "--qdrant.url", url, "--qdrant.collection", "c", "--sync.slot", slot, "--migration.num-workers", "1",
               "--sync.initial-copy", "--metrics-port", "0", "--log-format", "json", "--log-file", str(log_file)]
    out = open(tmp_path / "stdout-stderr.txt", "ab")
    proc = subprocess.Popen(command, stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def listening():
            if proc.poll() is not None:
                raise AssertionError(f"sync exited with {proc.returncode}: {(tmp_path / 'stdout-stderr.txt').read_text()}")
            if log_file.exists():
                for line in log_file.read_text().splitlines():
                    event = json.loads(line)
                    if event.get("event") == "metrics_listening":
                        return event["port"]
            return None

        port = wait_for(listening, "the metrics server")
        wait_streaming(sdb.url, slot, proc=proc)
        wait_for(lambda: health(port)[0] == 200, "/healthz 200 while streaming")
        assert get(port, "/livez")[0] == 200
        before = scrape(port)
        with sdb.connect() as conn:
            conn.execute("INSERT INTO items (id, title) VALUES (1000, 'new'), (1001, 'newer')")
            conn.execute("UPDATE items SET title = 'changed' WHERE id IN (1, 2, 3)")
            conn.execute("DELETE FROM items WHERE id = 4")
        wait_caught_up(sdb.url, slot)
        after = wait_for(lambda: (s := scrape(port)) and
                         value(s, "pg2qdrant_sync_changes_total", kind="delete") >= 1 and s, "the counters")
        assert value(after, "pg2qdrant_sync_changes_total", kind="insert") - \
            value(before, "pg2qdrant_sync_changes_total", kind="insert") == 2
        assert value(after, "pg2qdrant_sync_changes_total", kind="update") - \
            value(before, "pg2qdrant_sync_changes_total", kind="update") == 3
        assert value(after, "pg2qdrant_sync_transactions_total") - value(before, "pg2qdrant_sync_transactions_total") >= 3
        assert value(after, "pg2qdrant_sync_apply_latency_seconds_count") - \
            value(before, "pg2qdrant_sync_apply_latency_seconds_count") >= 3
        assert value(after, "pg2qdrant_sync_acknowledged_lsn") > value(before, "pg2qdrant_sync_acknowledged_lsn")
        assert value(after, "pg2qdrant_sync_slot_present") == 1
        assert value(after, "pg2qdrant_sync_healthy") == 1
        assert value(after, "pg2qdrant_migrate_rows_total") == 40  # the initial copy
        assert value(after, "pg2qdrant_migrate_ranges_done") == value(after, "pg2qdrant_migrate_ranges") >= 1

        # SIGHUP: logrotate moved the file away; the new one is opened at once.
        rotated = tmp_path / "sync.jsonl.1"
        log_file.rename(rotated)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log_file.exists() and "log_reopened" in log_file.read_text(), "the log file reopened")

        # SIGTERM right after a write: what was applied is acknowledged (the slot's position is the
        # summary's last applied LSN); whatever was not received yet stays in the slot for the next run.
        sdb.execute("UPDATE items SET title = 'last' WHERE id = 5")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "stdout-stderr.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
    events = read_events(rotated) + read_events(log_file)
    summary = [e["summary"] for e in events if e.get("message") == "Sync summary"]
    assert len(summary) == 1 and int(summary[0]["changes applied"].replace(",", "")) >= 6
    confirmed = sdb.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                            (slot,))[0][0]
    assert confirmed == summary[0]["last applied LSN"]
    r = run_cli(*command[3:command.index("--sync.initial-copy")], "--sync.once")  # resumes: nothing lost
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 41

    events = read_events(rotated) + read_events(log_file)
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in events)
    assert sdb.server.password and sdb.server.password not in (rotated.read_text() + log_file.read_text())


class SlowQdrantFault:
    """FAULT INJECTION, not a target: delegates to the real target, but holds every apply while
    ``hold`` is set (a Qdrant that stopped answering, which a local collection cannot do)."""

    def __init__(self, inner, hold: threading.Event):
        self.inner, self.hold = inner, hold

    def apply(self, *args, **kwargs):
        while self.hold.is_set():
            time.sleep(0.05)
        return self.inner.apply(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_health_turns_503_on_lag_and_when_the_slot_is_dropped(sdb, tmp_path, monkeypatch):
    import pg2qdrant.sync.cdc as cdc
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 20)
    slot = slot_of(sdb)
    hold = threading.Event()
    real_connect = cdc.connect_target
    monkeypatch.setattr(cdc, "connect_target", lambda *a, **k: SlowQdrantFault(real_connect(*a, **k), hold))
    service = Service(0, host="127.0.0.1", pg_url=sdb.url, limits=HealthLimits(max_lag_seconds=1.0),
                      labels=("items", "c"))
    stop, stats = threading.Event(), SyncStats()
    worker = threading.Thread(target=run_sync, args=(options(sdb, url), SyncOptions(slot=slot), UI(quiet=True)),
                              kwargs=dict(initial_copy=True, stop=stop, stats=stats, service=service), daemon=True)
    try:
        status, body = health(service.port)
        assert status == 503 and body["phase"] == "starting"
        worker.start()
        wait_streaming(sdb.url, slot)
        wait_for(lambda: health(service.port)[0] == 200, "/healthz 200 while streaming")

        # Qdrant stops answering: the commit waits, its age passes 1 s -> 503; it answers again -> 200.
        hold.set()
        sdb.execute("UPDATE items SET title = 'late' WHERE id = 1")
        status, body = wait_for(lambda: (h := health(service.port))[0] == 503 and h, "503 on lag")
        assert any("lag" in p and "s >" in p for p in body["problems"]), body
        assert value(scrape(service.port), "pg2qdrant_sync_lag_seconds") > 1.0
        hold.clear()
        sdb.execute("UPDATE items SET title = 'on time' WHERE id = 2")  # applied promptly: lag back to ~0
        wait_caught_up(sdb.url, slot)
        wait_for(lambda: health(service.port)[0] == 200, "/healthz 200 once caught up")

        drop_slot_under_sync(sdb.url, slot)
        status, body = wait_for(lambda: (h := health(service.port))[0] == 503 and h, "503 after the slot was dropped")
        assert any("does not exist" in p for p in body["problems"]), body
        samples = wait_for(lambda: (s := scrape(service.port)) and
                           value(s, "pg2qdrant_sync_errors_total", kind="source") >= 1 and s, "the error counter")
        assert value(samples, "pg2qdrant_sync_slot_present") == 0
        assert value(samples, "pg2qdrant_sync_healthy") == 0
        assert value(samples, "pg2qdrant_sync_reconnects_total") >= 1
    finally:
        hold.clear()
        stop.set()
        worker.join(60)
        service.close()
    assert not worker.is_alive()


def test_json_events_mask_secrets_in_messages_and_fields():
    """A password in a message or a field is masked before encoding (even one with a quote in it)."""
    secret = 'pa"ss-W0rd-xyz'
    redaction.register(secret)
    record = logging.LogRecord("pg2qdrant.events", logging.WARNING, __file__, 1,
                               "could not connect to postgresql://u:%s@h/db", (secret,), None)
    record.fields = {"dsn": f"host=h password={secret}", "nested": {"list": [secret]}}
    event = json.loads(JsonFormatter().format(record))
    assert secret not in json.dumps(event) and json.dumps(secret)[1:-1] not in json.dumps(event)
    assert event["level"] == "warning" and "****" in event["message"]
    assert event["nested"]["list"] == ["****"]


def test_metrics_port_in_use_is_an_input_error(cli, tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("migrate", "--pg.url", "postgresql://u@127.0.0.1:1/db", "--pg.table", "t", "--qdrant.url",
                f"local:{tmp_path}", "--qdrant.collection", "c", "--metrics-port", str(port))
    assert r.exit_code == 2, r.output
    assert f"port {port}" in r.output and "--metrics-port" in r.output


def test_log_file_that_cannot_be_written_is_an_input_error(cli, tmp_path):
    r = cli("migrate", "--pg.url", "postgresql://u@127.0.0.1:1/db", "--pg.table", "t", "--qdrant.url",
            f"local:{tmp_path}", "--qdrant.collection", "c", "--log-file", str(tmp_path / "missing" / "x.log"))
    assert r.exit_code == 2, r.output
    assert "Cannot write the log file" in r.output and "--log-file" in r.output
