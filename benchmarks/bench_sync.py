"""Benchmark: how many changes per second `pg2qdrant sync` (CDC) applies, and with what lag.

    python benchmarks/bench_sync.py                          # 500, 2000, 5000 changes/s + max; :memory: and edge:
    python benchmarks/bench_sync.py --rates 1000 --seconds 20 --targets edge
    python benchmarks/bench_sync.py --rows 2000 --seconds 5  # smoke run
    python benchmarks/bench_sync.py --tables 10 --rates 1000,5000 --targets memory
                                  # one slot over 10 tables (sync --config) against 10 single-table syncs
    python benchmarks/bench_sync.py --rates 1000,5000 --targets server,edge --rtt-ms 20
                                  # over gRPC to a server 20 ms away, beside in-process Edge

It starts a throwaway PostgreSQL 18 + pgvector (pg2qdrant.localpg, wal_level=logical),
creates `bench_items` (benchmarks/dataset.py: id bigint primary key, title, category,
score, created_at, embedding vector(768)), and for each target starts
`sync.run_sync(..., initial_copy=True)` in a thread of this process (as `pg2qdrant
sync --sync.initial-copy` runs). Targets: `memory` (`:memory:`), `edge` (`edge:DIR`) and
`server`: gRPC to the Edge-backed test endpoint (tests/qdrant_endpoint, served by
endpoint_server.py as a process of its own, a fresh one per run) with --rtt-ms of simulated
round trip added to every request, as to a remote (cloud) cluster. Once it streams, a load
generator in another process offers a steady load for --seconds: transactions of --per-txn changes,
paced to the offered rate, mixing

  40% payload-only UPDATEs (the 768-d vector is TOASTed and arrives as unchanged 'u':
      applied in place), 20% vector UPDATEs, 20% INSERTs, 20% DELETEs.

`max` offers changes as fast as one connection can write them (100 per transaction).

With --tables N (N > 1) there are N such tables (bench_items_0...), each transaction writes
one of them (in turn), and each offered load runs twice: `one-slot` (sync.many.run_many:
one publication and one slot, as `sync --config FILE`) and `N-slots` (N run_sync threads, one
slot each, as N single-table syncs); applied/s and the lag percentiles cover all tables.

Measured, per target and offered load:

  applied/s   changes applied during the run / seconds from the first offered change
              until sync had acknowledged everything (the load's duration plus the
              drain); equals the offered rate when sync keeps up
  lag p50/p99 end-to-end: commit time in PostgreSQL (from the commit record) to the
              moment Qdrant acknowledged the batch holding it (SyncStats.latencies)
  drain       seconds sync needed after the load stopped to apply the backlog
  breakdown   where the apply time goes (single-table runs): batches applied and their
              changes, seconds inside Applier.apply, and within it the requests to the
              target (batch updates, point reads) and PostgreSQL re-reads, count and seconds

Results: a table on stdout, JSON in benchmarks/results/sync-<time>.json (git-ignored).
The machine should be quiet: the load generator, PostgreSQL and sync share the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

TABLE = "bench_items"
COLLECTION = "bench_sync"
SLOT = "bench_sync"


def _load(url: str, rate: float, seconds: float, per_txn: int, first_new_id: int, live: int, dim: int,
          seed: int, result, tables: tuple[str, ...] = (TABLE,)) -> None:
    """Offer ``rate`` changes/s (0 = as fast as possible) for ``seconds``; put the count in ``result``."""
    import numpy as np
    import psycopg
    from pgvector.psycopg import register_vector

    rng = np.random.default_rng(seed)
    all_ids = {t: list(range(1, live + 1)) for t in tables}
    next_id = first_new_id
    done = txns = 0
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if rate:
                due = start + done / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            table = tables[txns % len(tables)]
            ids = all_ids[table]
            txns += 1
            with conn.transaction(), conn.cursor() as cur:
                for _ in range(per_txn):
                    r = rng.random()
                    if r < 0.4 and ids:
                        cur.execute(f"UPDATE {table} SET title = %s, score = %s WHERE id = %s",
                                    (f"edited {done}", float(rng.random()), ids[int(rng.integers(len(ids)))]))
                    elif r < 0.6 and ids:
                        cur.execute(f"UPDATE {table} SET embedding = %s WHERE id = %s",
                                    (rng.normal(size=dim).astype(np.float32), ids[int(rng.integers(len(ids)))]))
                    elif r < 0.8 or not ids:
                        cur.execute(f"INSERT INTO {table} (id, title, category, score, created_at, embedding) "
                                    "VALUES (%s, %s, 'news', %s, now(), %s)",
                                    (next_id, f"new {next_id}", float(rng.random()),
                                     rng.normal(size=dim).astype(np.float32)))
                        ids.append(next_id)
                        next_id += 1
                    else:
                        k = ids.pop(int(rng.integers(len(ids))))
                        cur.execute(f"DELETE FROM {table} WHERE id = %s", (k,))
                    done += 1
    result.put(done)


def _streaming(conn, slot: str) -> bool:
    row = conn.execute("SELECT r.state FROM pg_replication_slots s JOIN pg_stat_replication r "
                       "ON r.pid = s.active_pid WHERE s.slot_name = %s", (slot,)).fetchone()
    return bool(row) and row[0] in ("streaming", "catchup")


def _insert_lsn(conn) -> int:
    from pg2qdrant.source.lsn import parse_lsn
    return parse_lsn(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])


class Timings:
    """Calls and seconds of a few methods of sync's apply path, counted while the benchmark runs.

    The methods are wrapped in place (classes of this process: sync runs in a thread here).
    """

    WRAPPED = (("pg2qdrant.sync.apply", "Applier", "apply", "apply"),
               ("pg2qdrant.destination.qdrant", "QdrantTarget", "apply", "request: batch update"),
               ("pg2qdrant.destination.qdrant", "QdrantTarget", "retrieve", "request: read points"),
               ("pg2qdrant.destination.edge", "EdgeTarget", "apply", "request: batch update"),
               ("pg2qdrant.destination.edge", "EdgeTarget", "retrieve", "request: read points"),
               ("pg2qdrant.sync.apply", "SourceLookup", "fetch_rows", "postgres: re-read rows"))

    def __init__(self) -> None:
        import importlib
        self.calls: dict[str, list] = {}
        for module, cls, name, label in self.WRAPPED:
            owner = getattr(importlib.import_module(module), cls)
            setattr(owner, name, self._timed(getattr(owner, name), label))

    def _timed(self, fn, label: str):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                entry = self.calls.setdefault(label, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - started
        return timed

    def snapshot(self) -> dict[str, tuple[int, float]]:
        return {k: (v[0], v[1]) for k, v in self.calls.items()}

    @staticmethod
    def since(before: dict, after: dict) -> dict[str, dict]:
        return {k: {"calls": n - before.get(k, (0, 0.0))[0], "seconds": round(t - before.get(k, (0, 0.0))[1], 3)}
                for k, (n, t) in after.items()}


TIMINGS: Timings | None = None


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


@contextlib.contextmanager
def target_url(target: str, workdir: Path, rtt_ms: float) -> Iterator[str]:
    """The --qdrant.url of a target, fresh for each run (a server: started here, stopped after)."""
    if target == "memory":
        yield ":memory:"
    elif target == "edge":
        shutil.rmtree(workdir / "edge", ignore_errors=True)
        yield f"edge:{workdir / 'edge'}"
    elif target == "server":
        from bench_migrate import serving
        shutil.rmtree(workdir / "server", ignore_errors=True)
        with serving("server-edge", workdir / "server", "--rtt-ms", str(rtt_ms)) as server:
            yield server["url"]
    else:
        raise SystemExit(f"unknown target {target!r}: memory, edge or server")


def run_one(url: str, target_url: str, rows: int, dim: int, rate: float, seconds: float, per_txn: int,
            seed: int, label: str | None = None) -> dict:
    import psycopg

    import dataset
    from pg2qdrant.core.options import MigrationOptions
    from pg2qdrant.sync import run_sync
    from pg2qdrant.sync.options import SyncOptions, SyncStats
    from pg2qdrant.ui import UI

    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))
        conn.execute("DROP PUBLICATION IF EXISTS bench_sync")
    dataset.create_table(url, rows, dim, table=TABLE, seed=seed)
    options = MigrationOptions(pg_url=url, table=TABLE, collection=COLLECTION, qdrant_url=target_url,
                               num_workers=1, batch_size=256, hnsw_m=0, restart=True)
    stop, stats = threading.Event(), SyncStats()
    errors: list[BaseException] = []

    def sync_thread() -> None:
        try:
            run_sync(options, SyncOptions(slot=SLOT, publication="bench_sync"), UI(quiet=True),
                     initial_copy=True, stop=stop, stats=stats)
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=sync_thread, daemon=True)
    worker.start()
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 300
        while not _streaming(conn, SLOT):
            if errors or time.monotonic() > deadline:
                raise RuntimeError(f"sync did not start: {errors}")
            time.sleep(0.1)
        time.sleep(1.0)  # let the first keepalive round trip settle
        changes_before, latencies_before = stats.changes, len(stats.latencies)
        batches_before, timed_before = stats.batches, TIMINGS.snapshot() if TIMINGS else {}
        started, load_end, offered = _offer_load(url, rate, seconds, per_txn, rows, dim, seed)
        end_lsn = _insert_lsn(conn)
        last_change, seen = time.monotonic(), stats.changes
        while stats.acked_lsn < end_lsn:
            if errors or not worker.is_alive():
                raise RuntimeError(f"sync stopped: {errors}")
            now = time.monotonic()
            if stats.changes != seen:
                last_change, seen = now, stats.changes
            elif now - last_change > 3 and stats.acked_lsn >= stats.server_lsn:
                break  # the insert position lies in WAL not flushed yet: everything sent is applied
            time.sleep(0.02)
        caught_up = time.monotonic() if stats.acked_lsn >= end_lsn else last_change
    stop.set()
    worker.join(60)
    applied = stats.changes - changes_before
    lat = list(stats.latencies)[latencies_before:]
    breakdown = {"batches": stats.batches - batches_before,
                 **(Timings.since(timed_before, TIMINGS.snapshot()) if TIMINGS else {})}
    return {
        "target": label or (target_url.split(":")[0] if target_url != ":memory:" else "memory"),
        "offered_rate": rate or "max", "seconds": seconds, "per_txn": per_txn,
        "offered_changes": offered, "offered_per_s": offered / (load_end - started),
        "applied_changes": applied, "applied_per_s": applied / (caught_up - started),
        "drain_s": caught_up - load_end,
        "lag_p50_s": _percentile(lat, 50), "lag_p99_s": _percentile(lat, 99), "lag_max_s": max(lat, default=0),
        "transactions": len(lat), "batches": stats.batches, "partial_updates": stats.partial_updates,
        "rereads": stats.rereads, "breakdown": breakdown,
    }


def _offer_load(url: str, rate: float, seconds: float, per_txn: int, rows: int, dim: int, seed: int,
                *tables: object) -> tuple[float, float, int]:
    """Run the write load in its own process: (start, end, changes offered)."""
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    load = ctx.Process(target=_load, args=(url, rate, seconds, per_txn, 10_000_000, rows, dim, seed + 1, result,
                                           *tables))
    started = time.monotonic()
    load.start()
    offered = result.get()
    load.join()
    return started, time.monotonic(), offered


def run_tables(url: str, target_url: str, n: int, rows: int, dim: int, rate: float, seconds: float,
               per_txn: int, seed: int, mode: str) -> dict:
    """One offered load over ``n`` tables: ``one-slot`` (run_many) or ``n-slots`` (n run_sync threads)."""
    import psycopg

    import dataset
    from pg2qdrant.core.options import MigrationOptions
    from pg2qdrant.sync import run_sync
    from pg2qdrant.sync.many import run_many
    from pg2qdrant.sync.options import SyncOptions, SyncStats
    from pg2qdrant.ui import UI

    tables = tuple(f"{TABLE}_{i}" for i in range(n))
    with psycopg.connect(url, autocommit=True) as conn:
        for (slot,) in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        for (pub,) in conn.execute("SELECT pubname FROM pg_publication").fetchall():
            conn.execute(f"DROP PUBLICATION {pub}")
    for i, table in enumerate(tables):
        dataset.create_table(url, rows, dim, table=table, seed=seed + i)
    options = [MigrationOptions(pg_url=url, table=t, collection=t, qdrant_url=target_url, num_workers=1,
                                batch_size=256, hnsw_m=0, restart=True) for t in tables]
    stop, errors = threading.Event(), []
    if mode == "one-slot":
        stats_list = [SyncStats()]
        slots = ["bench_many"]
        runs = [lambda: run_many(options, SyncOptions(slot="bench_many", publication="bench_many"), UI(quiet=True),
                                 initial_copy=True, stop=stop, stats=stats_list[0])]
    else:
        stats_list = [SyncStats() for _ in tables]
        slots = [f"bench_{t}" for t in tables]
        runs = [lambda o=o, st=st, sl=sl: run_sync(o, SyncOptions(slot=sl, publication=sl), UI(quiet=True),
                                                   initial_copy=True, stop=stop, stats=st)
                for o, st, sl in zip(options, stats_list, slots)]

    def guarded(fn) -> None:
        try:
            fn()
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=guarded, args=(fn,), daemon=True) for fn in runs]
    for w in workers:
        w.start()
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 600
        while not all(_streaming(conn, slot) for slot in slots):
            if errors or time.monotonic() > deadline:
                raise RuntimeError(f"sync did not start: {errors}")
            time.sleep(0.1)
        time.sleep(1.0)
        before = [(st.changes, len(st.latencies)) for st in stats_list]
        started, load_end, offered = _offer_load(url, rate, seconds, per_txn, rows, dim, seed, tables)
        end_lsn = _insert_lsn(conn)
        # each slot has caught up when it acknowledged the end (or, idle, all it was sent)
        deadline = time.monotonic() + 300
        while not all(st.acked_lsn >= end_lsn or st.acked_lsn >= st.server_lsn > 0 and
                      time.monotonic() - load_end > 3 for st in stats_list):
            if errors or time.monotonic() > deadline:
                raise RuntimeError(f"sync stopped or did not catch up: {errors}")
            time.sleep(0.02)
        caught_up = time.monotonic()
    stop.set()
    for w in workers:
        w.join(60)
    applied = sum(st.changes - b[0] for st, b in zip(stats_list, before))
    lat = [x for st, b in zip(stats_list, before) for x in list(st.latencies)[b[1]:]]
    return {"mode": mode if mode == "one-slot" else f"{n}-slots", "tables": n, "offered_rate": rate or "max",
            "offered_changes": offered, "offered_per_s": offered / (load_end - started),
            "applied_changes": applied, "applied_per_s": applied / (caught_up - started),
            "drain_s": caught_up - load_end, "lag_p50_s": _percentile(lat, 50), "lag_p99_s": _percentile(lat, 99),
            "target": "memory" if target_url == ":memory:" else target_url.split(":")[0]}


def _breakdown_line(r: dict) -> str:
    """Where one run's apply time went, as a line."""
    b = dict(r["breakdown"])
    batches = b.pop("batches") or 1
    apply = b.pop("apply", {"calls": 0, "seconds": 0.0})
    parts = [f"{label}: {v['calls'] / batches:.1f}/batch, {v['seconds']:.1f} s" for label, v in sorted(b.items())]
    requests = sum(v["calls"] for label, v in b.items() if label.startswith("request"))
    rtt = r.get("rtt_ms") or 0
    waited = f" ({requests} round trips x {rtt:g} ms = {requests * rtt / 1000:.1f} s of it)" if rtt else ""
    return (f"        {batches} batches ({r['applied_changes'] / batches:,.0f} changes each), {apply['seconds']:.1f} s "
            f"applying ({apply['seconds'] * 1000 / batches:.0f} ms/batch){waited}; " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="rows copied before streaming")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rates", default="500,2000,5000,max", help="offered changes/s, comma-separated; max = unpaced")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each offered load")
    parser.add_argument("--per-txn", type=int, default=10, help="changes per transaction (paced loads)")
    parser.add_argument("--targets", default="memory,edge", help="memory, edge, server (comma-separated)")
    parser.add_argument("--rtt-ms", type=float, default=20.0,
                        help="server target: simulated network round trip added to every request")
    parser.add_argument("--tables", type=int, default=1,
                        help="N > 1: one slot over N tables against N single-table syncs")
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args()

    from pg2qdrant.localpg import LocalPostgres

    global TIMINGS
    TIMINGS = Timings()
    load_start = os.getloadavg()
    results = []
    # synchronous_commit on (the launcher's default for tests is off): with it off, the walsender
    # sees a commit only when the WAL writer flushes it (every 200 ms), which would dominate the lag.
    server = LocalPostgres(settings={"synchronous_commit": "on"})
    workdir = Path(tempfile.mkdtemp(prefix="pg2qdrant-bench-sync-"))
    try:
        server.start()
        url = server.url()
        for target in args.targets.split(","):
            for rate_text in args.rates.split(","):
                rate = 0.0 if rate_text == "max" else float(rate_text)
                per_txn = 100 if rate == 0 else args.per_txn
                label = f"server ({args.rtt_ms:g} ms)" if target == "server" else None
                if args.tables > 1:
                    for mode in ("one-slot", "n-slots"):
                        with target_url(target, workdir, args.rtt_ms) as qdrant_url:
                            r = run_tables(url, qdrant_url, args.tables, args.rows, args.dim, rate, args.seconds,
                                           per_txn, 7, mode)
                        r["target"] = label or r["target"]
                        results.append(r)
                        print(f"{r['mode']:>9} offered {str(r['offered_rate']):>5}/s ({r['offered_per_s']:7,.0f}/s "
                              f"real): applied {r['applied_per_s']:7,.0f} changes/s, lag p50 "
                              f"{r['lag_p50_s'] * 1000:6.0f} ms, p99 {r['lag_p99_s'] * 1000:6.0f} ms, drain "
                              f"{r['drain_s']:5.1f} s", flush=True)
                    continue
                try:
                    with target_url(target, workdir, args.rtt_ms) as qdrant_url:
                        r = run_one(url, qdrant_url, args.rows, args.dim, rate, args.seconds, per_txn, seed=7,
                                    label=label)
                    if target == "server":
                        r["rtt_ms"] = args.rtt_ms
                except Exception as exc:  # e.g. :memory: before pipeline.migrate takes target=
                    print(f"{target:>6} offered {rate_text}/s: failed: {exc}", flush=True)
                    continue
                results.append(r)
                print(_breakdown_line(r), flush=True)
                print(f"{r['target']:>6} offered {str(r['offered_rate']):>5}/s ({r['offered_per_s']:7,.0f}/s real): "
                      f"applied {r['applied_per_s']:7,.0f} changes/s, lag p50 {r['lag_p50_s'] * 1000:6.0f} ms, "
                      f"p99 {r['lag_p99_s'] * 1000:6.0f} ms, drain {r['drain_s']:5.1f} s", flush=True)
    finally:
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out) if args.out else HERE / "results" / time.strftime("sync-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    import pg2qdrant
    out.write_text(json.dumps({"results": results, "args": vars(args), "cpus": os.cpu_count(),
                               "load_average_start": load_start, "load_average": os.getloadavg(), "version": pg2qdrant.__version__,
                               "python": sys.version}, indent=2))
    print(f"load average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs); "
          f"results: {out}")


if __name__ == "__main__":
    main()
