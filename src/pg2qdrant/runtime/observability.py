"""Running as a service: Prometheus metrics, the health endpoint, log events (JSON), SIGHUP.

Operators run `sync` (and long copies) under systemd or Kubernetes; they watch metrics and a
health check, not a status line. Everything here is off unless asked for:

- ``--metrics-port`` starts :class:`Service`: one HTTP server answering ``/metrics``
  (Prometheus text, from a registry of its own so that several runs can share a process),
  ``/healthz`` (200 while the stream is healthy, 503 with the reasons otherwise) and ``/livez``
  (200 while the process serves). Sync feeds it through :class:`SyncObserver`; the copy's
  progress is read from the UI's progress reporter when scraped.
- ``--log-format json`` / ``--log-file`` turn every message into a log event (:class:`LogUI`):
  one JSON object a line, with secrets masked by :mod:`pg2qdrant.core.redaction`; the file is
  reopened on SIGHUP (logrotate) and when it was moved (WatchedFileHandler).

Metrics are labelled by table and collection so that a sync of several tables can share them.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from rich.console import Console

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError
from pg2qdrant.ui import UI, RedactingStream

LABELS = ("table", "collection")
SLOT_WIDE = ("", "")  # the labels of a shared slot's own series (sync --config)
_KINDS = {"I": "insert", "U": "update", "D": "delete"}
# Commit -> applied: batches are applied every 0.25 s at most, so most land below a second.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HEALTH_PROBE_EVERY_S = 1.0  # /healthz and /metrics read the slot at most this often
events = logging.getLogger("pg2qdrant.events")


# ---------------------------------------------------------------------------------------
# Log events: JSON lines, a reopenable file, the UI that writes events
# ---------------------------------------------------------------------------------------

def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redaction.redact(value)
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, and the record's ``fields``.

    Values are masked before encoding (a secret with a quote in it would be escaped, and so
    missed, in the encoded text).
    """

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redaction.redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if fields:
            event.update(_redacted(fields))
        if record.exc_info and record.exc_info[1] is not None:
            event["exception"] = redaction.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            event["exception"] = redaction.redact(record.exc_text)
        return json.dumps(event, ensure_ascii=False, default=str)


class ReopenableFileHandler(logging.handlers.WatchedFileHandler):
    """WatchedFileHandler (reopens when logrotate moved the file) that SIGHUP also reopens at once.

    A signal handler must not touch the file itself (the main thread may be halfway through a
    write under the handler's lock): it starts a thread that takes the lock and reopens.
    """

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.flush()
                self.stream.close()
            self.stream = self._open()
            self._statstream()  # remember the new file's inode (WatchedFileHandler compares it)
        finally:
            self.release()
        events.info("reopened the log file", extra={"fields": {"event": "log_reopened"}})

    def on_sighup(self, signum, frame) -> None:
        threading.Thread(target=self.reopen, name="pg2qdrant-log-reopen", daemon=True).start()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(debug: bool, log_format: str | None = None, log_file: str | None = None) -> None:
    """The root handler: stderr or ``log_file``, text or JSON, secrets masked; SIGHUP reopens the file."""
    problem = None
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if log_file:
        try:
            handler = ReopenableFileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            problem = InputError(f"Cannot write the log file {log_file}: {exc.strerror or exc}.",
                                 fix="give --log-file a path in a folder that exists and is writable.")
        else:
            if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP, handler.on_sighup)
    handler.addFilter(redaction.RedactingFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, ReopenableFileHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    # Messages for the user are events of their own level, whatever the root's.
    events.setLevel(logging.DEBUG if debug else logging.INFO)
    if debug:  # third-party chatter at debug level is noise, not diagnosis
        for name in ("httpx", "httpcore", "urllib3", "grpc", "hpack"):
            logging.getLogger(name).setLevel(logging.INFO)
    if problem is not None:  # reported on stderr, set up above
        raise problem


class LogUI(UI):
    """A UI whose messages, progress lines, summaries and results (a verify report) are log events
    (JSON or text lines).

    The command's other output (inspect's plan) still goes to stdout.
    """

    def __init__(self, *, quiet: bool = False):
        super().__init__(quiet=quiet)
        # Not a terminal: no live bar or status line, only events.
        self.err = Console(file=RedactingStream(sys.stderr), force_terminal=False, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            events.info(message)

    def warn(self, message: str) -> None:
        events.warning(message)

    def error(self, message: str) -> None:
        events.error(message)

    def result(self, title: str, fields: dict[str, Any], *renderables: Any, wrap: bool = False) -> None:
        events.info(title, extra={"fields": fields})


def make_ui(log_format: str | None, log_file: str | None) -> UI:
    return LogUI() if log_format == "json" or log_file else UI()


# ---------------------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------------------

@dataclass
class HealthLimits:
    max_lag_seconds: float = 300.0  # the sync status line's lag warnings
    max_lag_bytes: int = 1 << 30


class Health:
    """Whether the stream is healthy: running, the slot present and keeping its WAL, lag within limits.

    The slot is read from PostgreSQL (``pg_replication_slots``) when asked, at most once a
    second: a dropped or invalidated slot, or WAL piling up while sync cannot apply, shows even
    when the stream itself is stuck.
    """

    def __init__(self, pg_url: str | None, limits: HealthLimits):
        self.pg_url = pg_url
        self.limits = limits
        self.phase = "starting"  # starting (setup, initial copy) -> streaming -> stopped
        self.slot: str | None = None
        self.stats = None
        self._lock = threading.Lock()
        self._conn = None
        self._probed_at = 0.0
        self._probe: tuple[Any, str | None] = (None, None)  # (SlotInfo | None, error)

    def watch(self, stats, slot: str | None) -> None:
        """Sync's stream started: judge it from ``stats`` (and ``slot`` in CDC mode)."""
        self.stats, self.slot = stats, slot
        self.phase = "streaming"

    def slot_info(self):
        """(SlotInfo or None when missing, error text or None), read at most once a second."""
        from pg2qdrant.source import connect, slots
        with self._lock:
            if self.slot is None or self.pg_url is None:
                return None, None
            if time.monotonic() - self._probed_at < HEALTH_PROBE_EVERY_S:
                return self._probe
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect.connect(self.pg_url, autocommit=True)
                self._probe = (slots.slot_info(self._conn, self.slot), None)
            except Exception as exc:  # unreachable, restarting: unhealthy, tried again next time
                self._close()
                self._probe = (None, redaction.redact(getattr(exc, "message", None) or exc))
            self._probed_at = time.monotonic()
            return self._probe

    def lag(self) -> tuple[int, float]:
        """(bytes, seconds): WAL the slot keeps for us (or the stream's own view), age of what is unapplied."""
        if self.stats is None:
            return 0, 0.0
        info, _ = self.slot_info()
        lag_bytes = max(self.stats.lag_bytes, info.lag_bytes if info is not None else 0)
        return lag_bytes, self.stats.lag_seconds()

    def check(self) -> tuple[bool, dict]:
        body: dict[str, Any] = {"phase": self.phase}
        problems: list[str] = []
        if self.phase != "streaming":
            problems.append(f"sync is {self.phase}")
        else:
            info, error = self.slot_info()
            if error:
                problems.append(f"cannot read the replication slot: {error}")
            elif self.slot is not None and info is None:
                problems.append(f"replication slot {self.slot!r} does not exist (dropped?)")
            elif info is not None and info.wal_status == "lost":
                problems.append(f"replication slot {self.slot!r} lost WAL it needed (max_slot_wal_keep_size)")
            lag_bytes, lag_seconds = self.lag()
            body.update(lag_bytes=lag_bytes, lag_seconds=round(lag_seconds, 3))
            if self.slot is not None:
                body["slot"] = self.slot
                body["wal_status"] = info.wal_status if info is not None else None
                body["acknowledged_lsn"] = _format_lsn(self.stats.acked_lsn)
            if lag_bytes > self.limits.max_lag_bytes:
                problems.append(f"lag {lag_bytes:,} bytes > {self.limits.max_lag_bytes:,}")
            if lag_seconds > self.limits.max_lag_seconds:
                problems.append(f"lag {lag_seconds:,.1f} s > {self.limits.max_lag_seconds:g} s")
        body["status"] = "ok" if not problems else "unhealthy"
        if problems:
            body["problems"] = problems
        return not problems, body

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def close(self) -> None:
        self.phase = "stopped"
        with self._lock:
            self._close()


def _format_lsn(lsn: int) -> str:
    from pg2qdrant.source.lsn import format_lsn
    return format_lsn(lsn)


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------

class SyncObserver:
    """What the sync loop reports as it goes: changes per kind, commit->applied latency, errors."""

    def __init__(self, metrics: Metrics, labels: tuple[str, str]):
        self.changes = {kind: metrics.changes.labels(*labels, kind) for kind in (*_KINDS.values(), "truncate")}
        self.latency = metrics.latency.labels(*labels)
        self.metrics, self.labels = metrics, labels

    def applied(self, batch, now: float) -> None:
        """``batch`` (a sync.apply.ChangeBatch) was applied at ``now`` (unix time)."""
        from pg2qdrant.source.lsn import pg_time_to_unix
        counts: dict[str, int] = {}
        for item in batch.items:
            kind = _KINDS.get(getattr(item, "op", None), "truncate")
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in counts.items():
            self.changes[kind].inc(n)
        for t in batch.commit_times:
            self.latency.observe(max(0.0, now - pg_time_to_unix(t)))

    def error(self, kind: str) -> None:
        """A failure sync recovers from by reconnecting: ``source``, ``target`` or ``slot_busy``."""
        self.metrics.errors.labels(*self.labels, kind).inc()


class TablesObserver:
    """The observer of one stream for several tables: a batch's part per table goes to that
    table's observer (sync.many.MultiBatch.parts, in the order of ``tables``)."""

    def __init__(self, tables: list[SyncObserver], metrics: Metrics):
        self.tables, self.metrics = tables, metrics

    def applied(self, batch, now: float) -> None:
        for observer, part in zip(self.tables, batch.parts):
            if part.items or part.commit_times:
                observer.applied(part, now)

    def error(self, kind: str) -> None:
        """The stream's failures are the slot's (no per-table changes/latency series under empty labels)."""
        self.metrics.errors.labels(*SLOT_WIDE, kind).inc()


class NullObserver:
    """The observer of a sync run without --metrics-port."""

    def applied(self, batch, now: float) -> None:
        pass

    def error(self, kind: str) -> None:
        pass


class Metrics:
    """The registry: counters the loops push, plus values read from the runs when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.changes = Counter("pg2qdrant_sync_changes", "Row changes applied to Qdrant, by kind "
                               "(insert, update, delete, truncate).", (*LABELS, "kind"), registry=self.registry)
        self.latency = Histogram("pg2qdrant_sync_apply_latency_seconds", "From a transaction's commit in "
                                 "PostgreSQL to its changes applied in Qdrant.", LABELS,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("pg2qdrant_sync_errors", "Failures sync recovered from by reconnecting, by kind "
                              "(source, target, slot_busy).", (*LABELS, "kind"), registry=self.registry)
        self.syncs: list[tuple[tuple[str, str], Any, Health]] = []  # (labels, SyncStats, Health)
        self.uis: list[UI] = []  # their copies (UI.copies) are reported by table and collection
        self.registry.register(_Pulled(self))


class _Pulled:
    """A prometheus_client collector for what the runs already count (SyncStats, the copy's progress)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # names are only known per run; nothing to check against at registration

    def collect(self):
        def family(cls, name, doc):
            return cls(name, doc, labels=LABELS)

        transactions = family(CounterMetricFamily, "pg2qdrant_sync_transactions", "Transactions applied.")
        reconnects = family(CounterMetricFamily, "pg2qdrant_sync_reconnects", "Reconnections of the stream.")
        rereads = family(CounterMetricFamily, "pg2qdrant_sync_rereads", "Rows read again from PostgreSQL by key.")
        acked = family(GaugeMetricFamily, "pg2qdrant_sync_acknowledged_lsn",
                       "Last LSN acknowledged to PostgreSQL (the slot's confirmed_flush_lsn), as a number.")
        lag_bytes = family(GaugeMetricFamily, "pg2qdrant_sync_lag_bytes",
                           "WAL not yet applied: the slot's lag behind the server's WAL position.")
        lag_seconds = family(GaugeMetricFamily, "pg2qdrant_sync_lag_seconds",
                             "Age of the oldest commit received and not yet applied (else the last one's "
                             "commit->applied time).")
        healthy = family(GaugeMetricFamily, "pg2qdrant_sync_healthy", "1 while /healthz answers 200.")
        slot = family(GaugeMetricFamily, "pg2qdrant_sync_slot_present",
                      "1 while the replication slot exists and has not lost WAL.")
        for labels, stats, health in list(self.metrics.syncs):
            transactions.add_metric(labels, stats.transactions)
            reconnects.add_metric(labels, stats.reconnects)
            rereads.add_metric(labels, stats.rereads)
            ok, _ = health.check()
            healthy.add_metric(labels, 1 if ok else 0)
            if health.slot is not None:
                acked.add_metric(labels, stats.acked_lsn)
                info, _ = health.slot_info()
                slot.add_metric(labels, 1 if info is not None and info.wal_status != "lost" else 0)
            b, s = health.lag()
            lag_bytes.add_metric(labels, b)
            lag_seconds.add_metric(labels, s)
        yield from (transactions, reconnects, rereads, acked, lag_bytes, lag_seconds, healthy, slot)

        rows = family(CounterMetricFamily, "pg2qdrant_migrate_rows", "Rows copied and acknowledged by Qdrant "
                      "(with those of an earlier run resumed).")
        source_rows = family(GaugeMetricFamily, "pg2qdrant_migrate_source_rows", "Rows in the copy's snapshot.")
        ranges = family(GaugeMetricFamily, "pg2qdrant_migrate_ranges", "Ranges the table was split into.")
        ranges_done = family(GaugeMetricFamily, "pg2qdrant_migrate_ranges_done", "Ranges complete and saved.")
        rate = family(GaugeMetricFamily, "pg2qdrant_migrate_rate_rows_per_second", "Rows per second of this run.")
        copies = [item for ui in list(self.metrics.uis) for item in list(ui.copies.items())]
        for labels, progress in copies:
            rows.add_metric(labels, progress.done)
            if progress.total is not None:
                source_rows.add_metric(labels, progress.total)
            ranges.add_metric(labels, progress.ranges_total)
            ranges_done.add_metric(labels, progress.ranges_done)
            rate.add_metric(labels, progress.rate)
        yield from (rows, source_rows, ranges, ranges_done, rate)


# ---------------------------------------------------------------------------------------
# The HTTP server
# ---------------------------------------------------------------------------------------

class Service:
    """``--metrics-port``: /metrics, /healthz, /livez on one port, for one run of migrate or sync.

    prometheus_client's own server answers /metrics only; a small http.server handler serves
    the three paths (a thread per request, so a slow scrape does not hold a health check).
    """

    def __init__(self, port: int, *, host: str = "0.0.0.0", pg_url: str | None = None,
                 limits: HealthLimits | None = None, labels: tuple[str, str] = ("", ""), ui: UI | None = None):
        self.metrics = Metrics()
        self.health = Health(pg_url, limits or HealthLimits())
        self.labels = labels
        if ui is not None:
            self.metrics.uis.append(ui)
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="pg2qdrant-metrics", daemon=True)
        self.thread.start()

    def sync_observer(self, stats, slot: str | None, *, labels: tuple[str, str] | None = None,
                      tables: list[tuple[str, str]] | None = None) -> SyncObserver | TablesObserver:
        """Sync's stream starts: its stats feed /metrics and /healthz from now on.

        ``labels`` (table, collection) of a single table's sync (default: the service's);
        ``tables`` (table, collection) of a sync through one slot for several tables: changes
        and latencies are counted per table; what belongs to the slot (lag, acknowledged LSN,
        transactions, reconnects, errors, health) carries empty table and collection labels."""
        self.health.watch(stats, slot)
        if tables is None:
            labels = labels or self.labels
            self.metrics.syncs.append((labels, stats, self.health))
            return SyncObserver(self.metrics, labels)
        self.metrics.syncs.append((SLOT_WIDE, stats, self.health))
        return TablesObserver([SyncObserver(self.metrics, labels) for labels in tables], self.metrics)

    def _handler(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(service.metrics.registry))
                elif path == "/healthz":
                    ok, body = service.health.check()
                    self._send(200 if ok else 503, "application/json", json.dumps(_redacted(body)).encode())
                elif path == "/livez":
                    self._send(200, "text/plain; charset=utf-8", b"ok\n")
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /livez\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not events
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.health.close()


def start_service(kw: dict, options, ui: UI) -> Service | None:
    """The service of a command from its flags (None without --metrics-port)."""
    port = kw.get("metrics_port")
    if port is None:
        return None
    limits = HealthLimits()
    if kw.get("health_max_lag_seconds") is not None:
        limits.max_lag_seconds = kw["health_max_lag_seconds"]
    if kw.get("health_max_lag_bytes") is not None:
        limits.max_lag_bytes = kw["health_max_lag_bytes"]
    try:
        service = Service(port, pg_url=options.pg_url, limits=limits, labels=(options.table, options.collection),
                          ui=ui)
    except OSError as exc:
        raise InputError(f"Cannot serve metrics on port {port}: {exc.strerror or exc}.",
                         fix="choose a free port with --metrics-port (0 picks one and logs it).") from None
    message = f"Serving metrics on :{service.port}/metrics, health on :{service.port}/healthz."
    if isinstance(ui, LogUI):  # the port as a field, for whoever reads the events
        events.info(message, extra={"fields": {"event": "metrics_listening", "port": service.port}})
    else:
        ui.info(message)
    return service
