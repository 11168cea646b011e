"""`pg2qdrant sync`: keep a collection equal to its table after the copy.

Users who keep PostgreSQL as the source of truth find keeping Qdrant in step
the hard part: deletes, UPDATEs whose vector PostgreSQL does not even send
(unchanged TOAST), key changes, TRUNCATE, crashes and restarts. This module
is the apply loop that gets those right; source/replication.py reads the stream.

Three modes:

- ``cdc`` (default): logical replication with pgoutput. Changes are collected
  into batches; a batch is reduced to its net effect per point (commit order
  per key, any order across keys), turned into target operations
  (destination/operations.py) and applied with wait=true. Only then is the LSN of
  the last commit fully inside the batch acknowledged to PostgreSQL, whose
  slot (``confirmed_flush_lsn``) is therefore the checkpoint: after a crash
  the stream replays from there, and replaying is harmless because every
  operation is idempotent and the replay ends in the same state.
- ``poll``: re-copy rows whose ``--sync.updated-column`` advanced past a
  watermark (minus an overlap window for late commits); no deletes.
- ``reconcile``: compare ID sets and fix both directions (also ``--sync.reconcile``
  on top of the other two modes).

An UPDATE that left vectors as unchanged TOAST (``u``) becomes SetPayload /
UpdateVectors of what was sent, never a whole point rebuilt from holes. When
such a partial change cannot be applied to an existing point (the point is
missing: a replay after a delete, a key change, a TRUNCATE), the row is read
again from PostgreSQL by key, with the plan's own reads, and upserted (or the
point deleted when the row is gone). Reading the current row is safe in the
middle of a stream: every later change of that key is applied after it, so
the point still converges to the row.

Layout (one module per concern):

- :mod:`.options`: :class:`SyncOptions`, :class:`SyncStats` and the tuning constants;
- :mod:`.apply`: the net effect of a batch per point (:class:`ChangeBatch`,
  :class:`SourceLookup`, :class:`Applier`);
- :mod:`.reconcile`: :func:`reconcile_ids` (ID sets compared, orphans deleted, missing filled);
- :mod:`.status`: stop signals and :class:`StatusLine`;
- :mod:`.state`: sync's own records kept with the target (CDC marker, poll watermark);
- :mod:`.cdc`: :class:`CdcSync`, the logical-replication runner (setup, reconnects);
- :mod:`.stream`: its stream loop, receive -> fold -> apply -> acknowledge;
- :mod:`.poll`: :class:`PollSync`, poll mode (and ``--sync.mode reconcile``);
- here: the entry points :func:`run_sync`, :func:`sync_status`, :func:`sync_drop`.
"""

from __future__ import annotations

import threading
import time

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.source import connect, slots
from pg2qdrant.source import sync_status as sync_status_queries
from pg2qdrant.source.lsn import format_lsn
from pg2qdrant.sync.cdc import CdcSync
from pg2qdrant.sync.options import LAG_WARN_BYTES, SyncOptions, SyncStats, _mib
from pg2qdrant.sync.poll import PollSync
from pg2qdrant.sync.status import _StopSignals
from pg2qdrant.ui import UI, Summary

RESUME_BY_RERUN = "rerun to resume"  # the summary's word on a kept slot (an alias's stream says otherwise)


def run_sync(options: MigrationOptions, sync_options: SyncOptions | None, ui: UI, *,
             initial_copy: bool | None = None, stop: threading.Event | None = None,
             stats: SyncStats | None = None, service=None, resume: str = RESUME_BY_RERUN) -> SyncStats:
    """Run `sync` until stopped (SIGTERM, Ctrl-C, ``stop`` set) or, with ``once``, caught up.

    ``initial_copy=True`` is `migrate --then-sync`: copy from the new slot's snapshot,
    then stream from its consistent point.
    ``service`` (observability.Service, --metrics-port): fed with the stream's stats and slot.
    ``resume``: how to go on from the kept slot, in the summary (an alias's stream is resumed by `sync`
    on its version, not by rerunning the migrate command that started it).
    """
    sync_options = sync_options or SyncOptions()
    if initial_copy is not None:
        sync_options.initial_copy = initial_copy
    sync_options.validate(options)
    stop = stop or threading.Event()
    stats = stats or SyncStats()
    runner: CdcSync | PollSync
    runner = CdcSync(options, sync_options, ui, stop, stats) if sync_options.mode == "cdc" else \
        PollSync(options, sync_options, ui, stop, stats)
    try:
        runner.prepare()
        if service is not None:
            # labelled as its copy is: the table and the collection the plan writes (a layout may name it)
            runner.observer = service.sync_observer(stats, getattr(runner, "slot", None),
                                                    labels=(options.table, runner.plan.collection))
        with _StopSignals(stop):
            if sync_options.mode == "cdc":
                ui.info(f"Streaming changes of {runner.plan.table.display} into {runner.plan.collection!r} "
                        f"(slot {runner.slot}, publication {runner.publication}); stop with Ctrl-C or SIGTERM.")
            elif sync_options.mode == "poll":
                ui.info(f"Polling {runner.plan.table.display} every {sync_options.interval_s:g} s on "
                        f"{sync_options.updated_column} (overlap {sync_options.overlap:g}).")
            runner.run()
    finally:
        runner.close()
    _summary(sync_options, runner, stats, resume).render(ui)
    return stats


def _summary(sync_options: SyncOptions, runner, stats: SyncStats, resume: str = RESUME_BY_RERUN) -> Summary:
    elapsed = time.monotonic() - stats.started
    rows = [("changes applied", f"{stats.changes:,}"), ("time", f"{elapsed:,.1f} s"),
            ("rate", f"{stats.rate():,.0f} changes/s")]
    if sync_options.mode == "cdc":
        rows += [("transactions", f"{stats.transactions:,}"),
                 ("last applied LSN", format_lsn(stats.acked_lsn)),
                 ("rows read again by key", f"{stats.rereads:,}"),
                 ("reconnects", f"{stats.reconnects:,}"),
                 ("slot", f"{runner.slot} (kept: {resume}; `pg2qdrant sync drop` removes it)")]
    elif sync_options.mode == "poll":
        rows.append(("watermark", stats.watermark or "-"))
    if stats.deleted_orphans or stats.filled_missing or sync_options.reconcile or sync_options.mode == "reconcile":
        rows += [("orphans deleted", f"{stats.deleted_orphans:,}"), ("missing filled", f"{stats.filled_missing:,}")]
    title = "Reconcile summary" if sync_options.mode == "reconcile" else "Sync summary"
    return Summary(title, rows)


def sync_status(pg_url: str, collection: str, sync_options: SyncOptions, ui: UI) -> None:
    """`pg2qdrant sync status`: the slot's position, lag and retained WAL."""
    slot, publication = sync_options.names(collection)
    conn = connect.connect(pg_url, autocommit=True)
    try:
        info = slots.slot_info(conn, slot)
        settings = slots.wal_settings(conn)
        pub_exists, pub = sync_status_queries.publication_tables(conn, publication)
    finally:
        conn.close()
    if info is None:
        raise InputError(f"There is no replication slot {slot!r} on this server.",
                         fix="start syncing with `pg2qdrant sync --sync.initial-copy ...` (or pass the "
                             "--sync.slot / --qdrant.collection used when it was created).")
    keep = settings.get("max_slot_wal_keep_size", "-1")
    rows = [
        ("slot", f"{slot} ({'active, server process ' + str(info.active_pid) if info.active else 'inactive'})"),
        ("publication", f"{publication} ({pub})" if pub_exists else f"{publication} (missing!)"),
        ("last applied LSN", format_lsn(info.confirmed_flush)),
        ("server WAL LSN", format_lsn(info.current_wal)),
        ("lag", _mib(info.lag_bytes)),
        ("WAL kept by the slot", _mib(info.retained_bytes)),
        ("wal_status", f"{info.wal_status}" + (f" (safe_wal_size {_mib(info.safe_wal_size)})"
                                                 if info.safe_wal_size is not None else "")),
        ("max_slot_wal_keep_size", "unlimited" if keep == "-1" else keep),
    ]
    Summary("Sync status", rows).render(ui)
    if info.wal_status == "lost":
        ui.warn("the slot lost WAL it needed (max_slot_wal_keep_size): changes are missing. Drop it with "
                "`pg2qdrant sync drop` and start again with --sync.initial-copy.")
    elif not info.active and info.lag_bytes > LAG_WARN_BYTES:
        ui.warn(f"no sync is reading this slot and it holds {_mib(info.retained_bytes)} of WAL; restart sync or "
                "drop the slot (`pg2qdrant sync drop`) before the disk fills.")
    if keep == "-1":
        ui.info("max_slot_wal_keep_size is unlimited: a stopped sync keeps WAL without bound; consider setting it.")


def sync_drop(pg_url: str, collection: str, sync_options: SyncOptions, ui: UI) -> None:
    """`pg2qdrant sync drop`: remove the slot and (if sync created it) the publication."""
    slot, publication = sync_options.names(collection)
    conn = connect.connect(pg_url, autocommit=True)
    try:
        dropped = slots.drop_slot(conn, slot)
        pub = slots.drop_publication(conn, publication)
    finally:
        conn.close()
    ui.info(f"Replication slot {slot!r}: {'dropped' if dropped else 'did not exist'}.")
    ui.info({"dropped": f"Publication {publication!r}: dropped.",
             "absent": f"Publication {publication!r}: did not exist.",
             "kept": f"Publication {publication!r} was not created by pg2qdrant: left in place "
                     f"(DROP PUBLICATION {publication} removes it)."}[pub])

