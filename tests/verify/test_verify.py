"""`pg2qdrant verify` on a real PostgreSQL + pgvector and real collections (local mode, Qdrant Edge).

A clean migration passes every check; each corruption made directly in the
collection afterwards is caught by the check responsible for it, with a message
naming the point ID and the field.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from conftest import migrate_args
from helpers import fill_items
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.runtime.ids import scan_ids
from pg2qdrant.runtime.session import open_source
from pg2qdrant.runtime.target import connect_target
from pg2qdrant.ui import UI
from pg2qdrant.verify.checks import run_verify
from pg2qdrant.verify.options import Thresholds, VerifyOptions, parse_thresholds, sample_size
from pg2qdrant.verify.report import write_report
from pg2qdrant.verify.search import qdrant_score, recall_at_k, spearman_on_overlap

ROWS = 240


def create_items(db, rows: int = ROWS, key: str = "bigint") -> None:
    db.execute(f"CREATE TABLE t (id {key} PRIMARY KEY, title text, n int, score float8, v vector(16));"
               "CREATE INDEX ON t USING hnsw (v vector_ip_ops)")
    with db.connect() as conn:
        fill_items(conn, "t", rows, key=key)


def verify_args(db, qdrant_path, *extra: str, report: Path | None = None) -> list[str]:
    args = migrate_args(db, "t", qdrant_path, "c", "--verify.seed", "7", *extra)
    args[0] = "verify"
    return args + (["--verify.report", str(report)] if report else [])


def verdicts(report_path: Path) -> dict[str, str]:
    data = json.loads(report_path.read_text())
    return {c["name"]: c["verdict"] for c in data["checks"]}


def check_of(report_path: Path, name: str) -> dict:
    return next(c for c in json.loads(report_path.read_text())["checks"] if c["name"] == name)


@pytest.fixture
def migrated(db, qdrant_path, cli):
    create_items(db)
    r = cli(*migrate_args(db, "t", qdrant_path, "c", "--migration.num-workers", "1"))
    assert r.exit_code == 0, r.output
    return db


def corrupt(qdrant_path: Path, change) -> None:
    client = QdrantClient(path=str(qdrant_path))
    try:
        change(client)
    finally:
        client.close()  # local mode: one process (client) per folder at a time


def test_search_progress_counts_queries():
    import io
    progress = UI(stdout=io.StringIO(), stderr=io.StringIO()).progress(10, "Searching v on both sides",
                                                                        unit="queries")
    progress.advance(4)
    assert re.fullmatch(r"Searching v on both sides: 4 / 10 queries \(40%\), [\d,]+ queries/s, ETA \S+",
                        progress.line()), progress.line()


# --- a clean migration ---------------------------------------------------------------------------

def test_clean_migration_passes_every_check(migrated, qdrant_path, tmp_path, cli):
    report = tmp_path / "r.json"
    r = cli(*verify_args(migrated, qdrant_path, "--qdrant.api-key", "secret-api-key-42", report=report))
    assert r.exit_code == 0, r.output
    assert verdicts(report) == {"Counts": "pass", "IDs": "pass", "Values": "pass", "Schema": "pass",
                                "Search parity": "pass"}
    for line in ("240 source rows = 240 points", "every one of the 240 source rows has its point",
                 "all 240 rows: every payload field and vector equal", "Verdict: PASS"):
        assert line in r.stdout
    table = [line for line in r.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(map(len, table)) <= 100  # not a terminal: the table reads in a log
    search = check_of(report, "Search parity")
    exact = search["figures"]["v"]["exact"]
    assert exact["recall mean"] == exact["top-1 agreement"] == 1.0 and exact["queries"] == 50
    assert exact["max score difference (relative)"] < 1e-5
    assert len(search["plots"]["vectors"]["v"]["recall_exact"]) == 50
    assert "local mode has no HNSW" in " ".join(search["details"])  # said, not hidden
    assert "secret-api-key-42" not in r.output + report.read_text()


# --- each corruption, caught by its check ---------------------------------------------------------

def _delete_point(c):
    c.delete("c", points_selector=models.PointIdsList(points=[7]))


def _extra_point(c):
    c.upsert("c", points=[models.PointStruct(id=100000, vector={"v": [0.5] * 16},
                                             payload={"id": 100000, "title": "x", "n": 1, "score": 1.0})])


def _alter_vector(c):
    v = np.asarray(c.retrieve("c", [3], with_vectors=True)[0].vector["v"], dtype=np.float32)
    v[4] = np.float32(float(v[4]) + 1e-5)  # the 5th decimal
    c.update_vectors("c", points=[models.PointVectors(id=3, vector={"v": v.tolist()})])


def _int_to_float(c):
    c.set_payload("c", payload={"n": 15.0}, points=[5])  # n = 3 * id = 15, now a float


def _drop_null(c):
    c.delete_payload("c", keys=["title"], points=[10])  # title is NULL for every 10th row


@pytest.mark.parametrize("change,failing,must_pass,pid,field,words", [
    (_delete_point, {"Counts", "IDs"}, {"Values", "Schema"}, 7, "point", "missing in the collection"),
    (_extra_point, {"Counts", "IDs"}, {"Values", "Schema"}, 100000, "point", "orphan"),
    (_alter_vector, {"Values"}, {"Counts", "IDs", "Schema"}, 3, "vector:v", "component 4 differs"),
    (_int_to_float, {"Values"}, {"Counts", "IDs", "Schema", "Search parity"}, 5, "n", "type int became float"),
    (_drop_null, {"Values"}, {"Counts", "IDs", "Schema", "Search parity"}, 10, "title",
     "field missing (null dropped?)"),
], ids=["point-deleted", "extra-point", "vector-5th-decimal", "int-became-float", "null-dropped"])
def test_corruption_is_caught_by_its_check(migrated, qdrant_path, tmp_path, cli, change, failing, must_pass, pid,
                                           field, words):
    corrupt(qdrant_path, change)
    report = tmp_path / "r.json"
    r = cli(*verify_args(migrated, qdrant_path, report=report))
    assert r.exit_code == 1, r.output
    got = verdicts(report)
    assert {name for name, v in got.items() if v == "fail"} >= failing, got
    assert all(got[name] == "pass" for name in must_pass), got
    for name in failing - {"Counts"}:  # Counts has no per-point finding, only the totals
        finding = next(m for m in check_of(report, name)["mismatches"] if m["id"] == pid)
        assert finding["field"] == field and words in finding["message"], finding
    assert f"point {pid}" in r.stdout and words in r.stdout  # the terminal names them too


def test_collection_created_with_the_wrong_distance(db, qdrant_path, tmp_path, cli):
    create_items(db)
    # The table's index says inner product (Dot); the collection was created with Euclid.
    r = cli(*migrate_args(db, "t", qdrant_path, "c", "--migration.num-workers", "1",
                          "--qdrant.distance-metric", "v=euclid"))
    assert r.exit_code == 0, r.output
    report = tmp_path / "r.json"
    r = cli(*verify_args(db, qdrant_path, report=report))
    assert r.exit_code == 1
    schema = check_of(report, "Schema")
    assert schema["verdict"] == "fail"
    assert "vector 'v' uses Euclid in the collection, the plan says Dot" in schema["line"]
    assert schema["mismatches"][0]["field"] == "vector:v"
    # Searching it ranks by another metric: parity fails as well (scores are L2 distances, not dot products).
    assert check_of(report, "Search parity")["verdict"] == "fail"
    assert verdicts(report)["Values"] == "pass"  # Euclid stores the vectors unchanged


def test_collection_with_a_wrong_dimension(migrated, qdrant_path, tmp_path, cli):
    def shrink(c):
        points = c.scroll("c", limit=1000, with_payload=True, with_vectors=True)[0]
        c.delete_collection("c")
        c.create_collection("c", vectors_config={"v": models.VectorParams(size=15, distance=models.Distance.DOT)})
        c.upsert("c", points=[models.PointStruct(id=p.id, vector={"v": p.vector["v"][:15]}, payload=p.payload)
                              for p in points])

    corrupt(qdrant_path, shrink)
    report = tmp_path / "r.json"
    r = cli(*verify_args(migrated, qdrant_path, report=report))
    assert r.exit_code == 1
    got = verdicts(report)
    assert got["Schema"] == "fail" and got["Values"] == "fail" and got["Counts"] == got["IDs"] == "pass"
    assert "vector 'v' has size 15 in the collection, 16 in the table" in check_of(report, "Schema")["line"]
    values = check_of(report, "Values")
    assert values["mismatches"][0]["field"] == "vector:v" and "dimension 16 became 15" in values["line"]
    # Not searched at all (Qdrant would reject a 16-d query), and said so.
    assert "not searched: the collection's vector has size 15" in check_of(report, "Search parity")["line"]


# --- partitions, ID streaming in buckets --------------------------------------------------------

def test_partitioned_table_counts_per_partition_and_names_the_partition(db, qdrant_path, tmp_path, cli):
    db.execute("CREATE TABLE t (id bigint, title text, n int, score float8, v vector(16), PRIMARY KEY (id)) "
               "PARTITION BY RANGE (id); CREATE TABLE t_low PARTITION OF t FOR VALUES FROM (0) TO (100);"
               "CREATE TABLE t_high PARTITION OF t FOR VALUES FROM (100) TO (10000)")
    with db.connect() as conn:
        fill_items(conn, "t", 150)
    assert cli(*migrate_args(db, "t", qdrant_path, "c", "--migration.num-workers", "1",
                             "--qdrant.distance-metric", "v=dot")).exit_code == 0
    corrupt(qdrant_path, lambda c: c.delete("c", points_selector=models.PointIdsList(points=[120])))
    report = tmp_path / "r.json"
    r = cli(*verify_args(db, qdrant_path, "--qdrant.distance-metric", "v=dot", "--verify.queries", "0",
                         report=report))
    assert r.exit_code == 1
    counts = check_of(report, "Counts")
    assert counts["figures"]["rows per leaf relation"] == {"public.t_high": 51, "public.t_low": 99}
    assert "public.t_high: 51 rows, 1 without a point" in counts["details"]
    assert "point 120: missing in the collection (its row is in public.t_high)" in \
        check_of(report, "IDs")["mismatches"][0]["message"]
    assert verdicts(report)["Search parity"] == "skip"


def test_ids_compared_in_several_hash_buckets_find_the_same_differences(db, qdrant_path):
    create_items(db, 300, key="text")  # text keys: every point ID is a uuid5
    options = MigrationOptions(pg_url=db.url, table="t", collection="c", qdrant_url=f"local:{qdrant_path}",
                               num_workers=1)
    from pg2qdrant.migrate.copy import migrate
    migrate(options, UI(quiet=True))
    session = open_source(options, UI(quiet=True))
    target = connect_target(options)
    try:
        gone = target.scroll("c", batch=3, with_payload=False).__next__().id
        target.delete_points("c", [gone])
        whole = scan_ids(session.conn, session.plan, target, "c", expected_points=299)
        # 300 rows x 100 bytes in a 10 KiB budget: three hash buckets, each side streamed three times.
        buckets = scan_ids(session.conn, session.plan, target, "c", expected_points=299, memory_mb=0.01)
    finally:
        target.close()
        session.close()
    assert (whole.passes, buckets.passes) == (1, 3)
    for scan in (whole, buckets):
        assert (scan.source_rows, scan.target_points, scan.missing, scan.orphans) == (300, 299, 1, 0)
        assert scan.examples == [("missing", str(gone), "public.t")]


# --- the Qdrant Edge target: HNSW measured, ULP-level payload floats reported apart ---------------

def test_edge_target_measures_hnsw_and_reports_ulp_level_floats(db, tmp_path, cli):
    pytest.importorskip("qdrant_edge")
    create_items(db)
    db.execute("UPDATE t SET score = id * 1.1::float8 WHERE score IS NOT NULL")  # Edge re-parses ~1/4 inexactly
    args = migrate_args(db, "t", tmp_path, "c", "--migration.num-workers", "1")
    args[args.index("--qdrant.url") + 1] = f"edge:{tmp_path / 'edge'}"
    assert cli(*args).exit_code == 0
    report = tmp_path / "r.json"
    args[0] = "verify"
    r = cli(*args, "--verify.seed", "3", "--verify.report", str(report))
    assert r.exit_code == 0, r.output  # warnings do not fail
    search = check_of(report, "Search parity")
    assert search["verdict"] == "pass", search
    assert search["figures"]["v"]["HNSW"]["recall mean"] >= 0.85
    assert len(search["plots"]["vectors"]["v"]["recall_hnsw"]) == 50
    # Edge's known float re-parsing (docs/targets.md, known target limitations) is its own finding: neither
    # hidden as equality nor a failure; payload-ulps=0 turns it into one.
    values = check_of(report, "Values")
    assert values["verdict"] == "warn" and values["figures"]["payload floats within 2 ULP"] > 10
    assert "ULP-level" in values["mismatches"][0]["reason"] and values["mismatches"][0]["field"] == "score"
    assert "Qdrant Edge re-parses payload floats" in " ".join(values["details"])
    assert "WARN" in r.stdout and "within 2 ULP" in r.stdout
    strict = cli(*args, "--verify.queries", "0", "--verify.threshold", "payload-ulps=0")
    assert strict.exit_code == 1 and "score: float differs by 1 ULP" in strict.stdout


@pytest.mark.parametrize("front", ["grpc", "rest"])
def test_server_target_passes_and_measures_hnsw(db, tmp_path, cli, front):
    """migrate then verify against a server (the Edge-backed test endpoint, tests/qdrant_endpoint)."""
    from qdrant_endpoint import QdrantEndpoint
    create_items(db)
    with QdrantEndpoint() as q:
        args = migrate_args(db, "t", tmp_path, "c", "--migration.num-workers", "1")
        args[args.index("--qdrant.url") + 1] = q.target_url(front)
        r = cli(*args)
        assert r.exit_code == 0, r.output
        report = tmp_path / "r.json"
        args[0] = "verify"
        r = cli(*args, "--verify.seed", "3", "--verify.report", str(report))
        assert r.exit_code == 0, r.output
        assert {u.front for u in q.seen(collection="c")} == {front}
        checks = verdicts(report)
        assert all(checks[name] == "pass" for name in ("Counts", "IDs", "Schema", "Search parity")), checks
        assert checks["Values"] in ("pass", "warn")  # warn: Edge's float payload re-parsing (docs/targets.md)
        search = check_of(report, "Search parity")
        assert search["figures"]["v"]["HNSW"]["recall mean"] >= 0.85
        assert q.info("c").indexed_vectors_count == ROWS  # HNSW was really built and searched


# --- the report files ------------------------------------------------------------------------------

class _Balanced(HTMLParser):
    """Checks that every element that must be closed is closed, in order."""

    VOID = {"meta", "br", "img", "hr", "input", "link", "rect", "circle", "line"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_report_files_hold_verdicts_findings_and_figures(migrated, qdrant_path, tmp_path):
    corrupt(qdrant_path, _int_to_float)
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps([[0.1 * i for i in range(16)], [1.0] * 16, [-1.0] * 8 + [1.0] * 8]))
    options = MigrationOptions(pg_url=migrated.url, table="t", collection="c", qdrant_url=f"local:{qdrant_path}")
    html_path = tmp_path / "out" / "report.html"
    report = run_verify(options, VerifyOptions(report=str(html_path), seed=5, queries_file=str(queries)),
                        UI(quiet=True))
    assert report.exit_code == 1 and report.check("Values").verdict == "fail"
    assert report.check("Search parity").figures["v"]["exact"]["recall mean"] == 1.0
    write_report(report, str(tmp_path / "report.md"))
    write_report(report, str(tmp_path / "report.json"))

    page = html_path.read_text()
    parser = _Balanced()
    parser.feed(page)
    assert parser.stack == ["html"] or parser.stack == []
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 2  # recall@k distribution, source vs target scores
    for svg in svgs:
        ET.fromstring(svg)  # well-formed SVG
    assert "recall@10 per query" in svgs[0] and "<rect" in svgs[0]
    assert "Qdrant score" in svgs[1] and svgs[1].count("<circle") >= 20
    for text in ("FAIL", "point 5", "type int became float", "Search parity", "tier 2"):
        assert text in page
    assert "<script" not in page and "http" not in page.split("</style>")[0]  # self-contained

    md = (tmp_path / "report.md").read_text()
    assert "| 3 | Values | **FAIL** |" in md and "| `5` | n |" in md
    assert "| | v: exact |" in md and "| recall mean | 1 |" in md  # search figures per vector and mode
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["verdict"] == "fail" and data["exit_code"] == 1
    assert data["settings"]["seed"] == 5 and len(data["checks"]) == 5


# --- exit codes and input errors ------------------------------------------------------------------

def test_input_errors_exit_2_before_connecting(cli, tmp_path):
    base = ["verify", "--pg.url", "postgresql://nobody@127.0.0.1:1/x", "--pg.table", "t",
            "--qdrant.url", f"local:{tmp_path}", "--qdrant.collection", "c"]
    for extra, words in ((["--verify.sample", "lots"], "--verify.sample 'lots' is neither"),
                         (["--verify.report", "r.pdf"], "unknown report format '.pdf'"),
                         (["--verify.k", "0"], "--verify.k must be positive"),
                         (["--verify.threshold", "recall=1"], "--verify.threshold 'recall=1' is not name=value"),
                         (["--verify.queries-file", str(tmp_path / "none.json")], "does not exist")):
        r = cli(*base, *extra)
        assert r.exit_code == 2, r.output
        assert words in r.stderr and "Fix:" in r.stderr and "Traceback" not in r.output


def test_missing_collection_is_an_input_error(db, qdrant_path, cli):
    create_items(db, 20)
    r = cli(*verify_args(db, qdrant_path))
    assert r.exit_code == 2
    assert "Collection 'c' does not exist" in r.stderr and "run pg2qdrant migrate first" in r.stderr


# --- --log-format / --log-file --------------------------------------------------------------------

def json_events(*texts: str) -> list[dict]:
    """Every line of ``texts`` parsed: each must be one JSON object."""
    return [json.loads(line) for text in texts for line in text.splitlines() if line.strip()]


def summary_event(events: list[dict]) -> dict:
    (event,) = [e for e in events if e.get("event") == "verify_summary"]
    return event


def test_log_format_json_and_log_file_as_migrate_takes_them(migrated, qdrant_path, tmp_path, cli):
    """verify takes --log-format / --log-file as migrate and sync do: one JSON object a line (the
    report's summary included), written to the file when named, the URL's password masked."""
    password = migrated.server.password
    assert password and password in migrated.url
    corrupt(qdrant_path, _delete_point)  # a failing check: its mismatches are in the event too
    r = cli(*verify_args(migrated, qdrant_path, "--log-format", "json"))
    assert r.exit_code == 1, r.output
    events = json_events(r.stdout, r.stderr)
    summary = summary_event(events)
    assert summary["verdict"] == "fail" and summary["exit_code"] == 1 and summary["collection"] == "c"
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["Counts"]["verdict"] == "fail" and "240 source rows" in checks["Counts"]["finding"]
    assert any("point 7" in m and "missing in the collection" in m for m in checks["IDs"]["mismatches"])
    assert summary["message"].startswith("Verification of c against ") and "FAIL" in summary["message"]
    assert password not in r.output

    for log_format in ("json", "text"):
        log = tmp_path / f"verify-{log_format}.log"
        r = cli(*verify_args(migrated, qdrant_path, "--log-format", log_format, "--log-file", str(log)))
        assert r.exit_code == 1, r.output
        written = log.read_text()
        assert "Verification of c against" in written and "Counts fail" in written
        assert "Verification of c" not in r.output and password not in written + r.output  # in the file only
        if log_format == "json":
            assert summary_event(json_events(written))["checks"][1]["name"] == "IDs"
            json_events(r.stdout, r.stderr)  # anything left on the terminal is JSON too


@pytest.mark.parametrize("where", ["command line", "file"])
def test_log_format_json_with_a_migration_file(migrated, qdrant_path, tmp_path, cli, where):
    """verify --config FILE with --log-format json and --log-file, typed or written in the file: the
    entries' reports and the file's summary are events in the log."""
    url = migrated.url.replace(f":{migrated.server.password}@", "@")
    log = tmp_path / "verify.jsonl"
    flags = ["--log-format", "json", "--log-file", str(log)]
    path = tmp_path / "tables.toml"
    path.write_text(f'pg.url = "{url}"\nqdrant.url = "local:{qdrant_path}"\n'
                    + (f'log-format = "json"\nlog-file = "{log}"\n' if where == "file" else "")
                    + '[[table]]\npg.table = "t"\nqdrant.collection = "c"\n')
    r = cli("verify", "--config", str(path), "--verify.queries", "3", *(flags if where == "command line" else []),
            env={"PGPASSWORD": migrated.server.password})
    assert r.exit_code == 0, r.output
    events = json_events(log.read_text())
    assert summary_event(events)["verdict"] == "pass"
    assert [e for e in events if e.get("event") == "entries_summary"] == []  # one summary per run
    assert "Verification of c" not in r.output  # in the log only
    json_events(r.stdout, r.stderr)  # anything left on the terminal is JSON too


# --- the pure parts -------------------------------------------------------------------------------

def test_pgvector_distances_become_qdrant_scores():
    assert qdrant_score("Cosine", 0.25) == 0.75  # <=> is 1 - cosine similarity
    assert qdrant_score("Dot", -3.5) == 3.5  # <#> is the negative inner product
    assert qdrant_score("Euclid", 2.0) == 2.0 and qdrant_score("Manhattan", 4.0) == 4.0


def test_recall_counts_ties_at_the_boundary_and_spearman_on_the_overlap():
    expected = [(1, 0.9), (2, 0.8), (3, 0.5), (4, 0.5)]
    assert recall_at_k(expected, [(1, 0.9), (2, 0.8), (3, 0.5), (9, 0.5)], tol=1e-6) == 1.0  # 9 ties 4
    assert recall_at_k(expected, [(1, 0.9), (2, 0.8), (3, 0.5), (9, 0.95)], tol=1e-6) == 0.75
    assert recall_at_k(expected, [], tol=1e-6) == 0.0 and recall_at_k([], [(1, 1.0)], tol=1e-6) is None
    ranked = [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert spearman_on_overlap(ranked, ranked) == pytest.approx(1.0)
    assert spearman_on_overlap(ranked, ranked[::-1]) == pytest.approx(-1.0)
    assert spearman_on_overlap(ranked[:2], [(2, 2.0), (7, 1.0)]) is None  # one common point
    # Hamming-style ties returned in another order are not a disagreement.
    tied = [(1, 0.0), (2, 4.0), (3, 4.0), (4, 4.0)]
    assert spearman_on_overlap(tied, [(1, 0.0), (4, 4.0), (2, 4.0), (3, 4.0)]) == pytest.approx(1.0)


def test_sample_sizes_and_thresholds():
    assert sample_size(None, 5_000) == (5_000, "all rows (the table has under 100,000)")
    assert sample_size(None, 250_000)[0] == 2_500 and sample_size(None, 120_000)[0] == 1_200
    assert sample_size("2%", 1_000)[0] == 20 and sample_size("500", 100)[0] == 100
    t = parse_thresholds(["recall-mean=0.9,top1=0.75", "payload-ulps=0"])
    assert (t.recall_mean, t.top1, t.payload_ulps, t.recall_min) == (0.9, 0.75, 0, Thresholds().recall_min)


def test_sparse_search_parity_ignores_pgvectors_zero_score_padding(db, qdrant_path, tmp_path, cli):
    """pgvector fills a sparse top-k with rows sharing no index (score 0); Qdrant never returns those."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, s sparsevec(1000))")
    rng = np.random.default_rng(3)
    with db.connect() as conn:
        for i in range(1, 301):
            idx = sorted(rng.choice(1000, size=3, replace=False) + 1)
            conn.execute("INSERT INTO t VALUES (%s, %s::sparsevec)",
                         (i, "{" + ",".join(f"{j}:{rng.random() + 0.1:.3f}" for j in idx) + "}/1000"))
    assert cli(*migrate_args(db, "t", qdrant_path, "c")).exit_code == 0
    report = tmp_path / "r.json"
    r = cli(*verify_args(db, qdrant_path, "--verify.queries", "20", report=report))
    assert r.exit_code == 0, r.output
    assert verdicts(report)["Search parity"] == "pass"
