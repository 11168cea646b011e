"""Options and results of `pg2qdrant sync`: :class:`SyncOptions`, :class:`SyncStats` and the tuning constants.

Separate so the command line (:mod:`pg2qdrant.cli.sync`) can build and validate
:class:`SyncOptions` without the apply loop; the constants the runners share
(batch bounds, feedback and status intervals, lag warnings, backoff, chunk sizes)
live here too.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.options import SYNC_MODES, MigrationOptions, SyncConfig
from pg2qdrant.source import slots

MODES = SYNC_MODES
MAX_BATCH_CHANGES = 5000  # row changes per apply (bounds memory and the time between acks)
MAX_BATCH_DELAY_S = 0.25  # apply at least this often while changes keep arriving
FEEDBACK_EVERY_S = 10.0  # standby status; the server drops silent clients after wal_sender_timeout (60 s)
LAG_WARN_BYTES = 1 << 30
LAG_WARN_SECONDS = 300.0
LAG_WARN_EVERY_S = 300.0
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0
SLOT_BUSY_GIVE_UP_S = 120.0  # a killed client's walsender lets go within seconds; longer means another sync
TARGET_FAILURES_GIVE_UP = 10
ONCE_IDLE_S = 5.0
EXISTENCE_CHUNK = 1000
REREAD_CHUNK = 500


@dataclass
class SyncOptions(SyncConfig):
    """The options (fields and defaults in config.SyncConfig) with their names and checks."""

    def names(self, collection: str) -> tuple[str, str]:
        slot = self.slot or slots.derived_name("pg2qdrant", collection)
        publication = self.publication or slots.derived_name("pg2qdrant", collection)
        return slots.check_name("--sync.slot", slot), slots.check_name("--sync.publication", publication)

    def validate(self, options: MigrationOptions | None = None) -> None:
        if options is not None and options.dry_run:
            raise InputError("sync does not take --migration.dry-run.",
                             fix="check the plan with `pg2qdrant inspect`, or a copy with `migrate --migration.dry-run`.")
        if self.mode not in MODES:
            raise InputError(f"--sync.mode {self.mode!r} is not known.", fix="use cdc, poll or reconcile.")
        if self.mode == "poll" and not self.updated_column:
            raise InputError("--sync.mode poll needs --sync.updated-column.",
                             fix="name the column that every write advances, e.g. --sync.updated-column "
                                 "updated_at (a timestamp set by the application or a trigger).")
        if self.mode != "poll" and self.updated_column:
            raise InputError("--sync.updated-column is only used by --sync.mode poll.",
                             fix="add --sync.mode poll, or drop --sync.updated-column.")
        if self.interval_s <= 0 or self.overlap < 0 or self.reconcile_interval_s <= 0:
            raise InputError("--sync.interval and --sync.reconcile-interval must be positive, --sync.overlap "
                             "not negative.", fix="e.g. --sync.interval 5 --sync.overlap 60.")
        if self.initial_copy and self.mode != "cdc":
            raise InputError("--sync.initial-copy is for --sync.mode cdc (poll mode copies every row on its "
                             "first round anyway).", fix="drop --sync.initial-copy.")


@dataclass
class SyncStats:
    """What the loop has done; read by the status line, the summary and the benchmark."""

    started: float = field(default_factory=time.monotonic)
    changes: int = 0  # row changes applied (insert, update, delete; a TRUNCATE counts once)
    transactions: int = 0
    batches: int = 0
    rereads: int = 0
    partial_updates: int = 0
    reconnects: int = 0
    acked_lsn: int = 0
    server_lsn: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=200_000))  # commit -> applied, seconds
    last_latency: float = 0.0
    pending_since: float | None = None  # unix commit time of the oldest commit received, not yet applied
    watermark: str | None = None  # poll mode
    deleted_orphans: int = 0
    filled_missing: int = 0
    schema_changes: int = 0  # DDL and partition changes followed while streaming (sync.schema_watch)

    @property
    def lag_bytes(self) -> int:
        return max(0, self.server_lsn - self.acked_lsn)

    def lag_seconds(self) -> float:
        """How late sync is now: the age of the oldest commit not yet applied, else the last one's latency."""
        pending = self.pending_since
        return max(self.last_latency, time.time() - pending if pending is not None else 0.0)

    def rate(self, since: float | None = None) -> float:
        elapsed = time.monotonic() - (since or self.started)
        return self.changes / elapsed if elapsed > 0 else 0.0


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"
