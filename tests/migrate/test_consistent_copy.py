"""`migrate --config FILE --migration.consistent`: every table read in one exported snapshot.

Three account tables hold rows with disjoint IDs; while the copy runs, a writer moves rows from
one table to another and transfers amounts between rows of different tables, each in one
transaction. The collections together must then equal the tables as of one committed state:
each ID in exactly one collection, the total amount unchanged, and the whole equal to the state
after some prefix of the writer's transactions.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
import urllib.parse

import numpy as np
import pytest

from helpers import assert_collection_equals_table, vector_literal

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

TABLES = ("acct_a", "acct_b", "acct_c")
ROWS = 300  # per table
AMOUNT = 1000  # each row's amount at the start


def _no_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}").geturl()


def _env(db) -> dict[str, str]:
    return {"PGPASSWORD": urllib.parse.urlsplit(db.url).password or ""}


@pytest.fixture
def accounts(db):
    """acct_a/b/c: IDs 1-300, 301-600, 601-900; every row's amount 1000."""
    rng = np.random.default_rng(7)
    with db.connect() as conn:
        for t, table in enumerate(TABLES):
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, amount bigint NOT NULL, v vector(4))")
            with conn.cursor().copy(f"COPY {table} (id, amount, v) FROM STDIN") as copy:
                for i in range(t * ROWS + 1, (t + 1) * ROWS + 1):
                    copy.write_row((i, AMOUNT, vector_literal(rng.normal(size=4))))
        conn.execute("ANALYZE")
    return db


def _file(tmp_path, db, *, extra: str = "", last: str = "", workers: int = 2) -> str:
    entries = "".join(f'\n[[table]]\npg.table = "{t}"\nqdrant.collection = "{t}"\n' for t in TABLES)
    text = (f'pg.url = "{_no_password(db.url)}"\nqdrant.url = "local:{tmp_path / "qdrant"}"\n{extra}\n'
            f'[migration]\nnum-workers = {workers}\nrange-rows = 50\nbatch-size = 10\nbatch-delay = 5\n'
            + entries + last)
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return str(path)


class Writer(threading.Thread):
    """Moves rows between tables and transfers amounts across tables, one transaction each, and
    logs every committed change in order: (id, table, amount) after it."""

    def __init__(self, db, model: dict[int, list]):
        super().__init__(daemon=True)
        self.db, self.model = db, {k: list(v) for k, v in model.items()}
        self.log: list[list[tuple[int, str, int]]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = np.random.default_rng(11)
        ids = sorted(self.model)
        try:
            with self.db.connect() as conn:
                while not self.stop.is_set() or len(self.log) < 20:
                    a, b = (int(x) for x in rng.choice(ids, 2, replace=False))
                    with conn.transaction():
                        if rng.random() < 0.5:  # move a to another table: DELETE + INSERT
                            src = self.model[a][0]
                            dst = TABLES[(TABLES.index(src) + 1 + int(rng.integers(2))) % 3]
                            conn.execute(f"WITH gone AS (DELETE FROM {src} WHERE id = %s RETURNING *) "
                                         f"INSERT INTO {dst} SELECT * FROM gone", (a,))
                            change = [(a, dst, self.model[a][1])]
                        else:  # transfer k from a to b (UPDATEs, usually in two tables)
                            k = int(rng.integers(1, 50))
                            conn.execute(f"UPDATE {self.model[a][0]} SET amount = amount - %s WHERE id = %s", (k, a))
                            conn.execute(f"UPDATE {self.model[b][0]} SET amount = amount + %s WHERE id = %s", (k, b))
                            change = [(a, self.model[a][0], self.model[a][1] - k),
                                      (b, self.model[b][0], self.model[b][1] + k)]
                    for i, table, amount in change:
                        self.model[i] = [table, amount]
                    self.log.append(change)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _collections(tmp_path, open_qdrant) -> dict[int, list]:
    """{id: [collection, amount]} of every point of the three collections; an ID twice fails."""
    client = open_qdrant(tmp_path / "qdrant")
    seen: dict[int, list] = {}
    for name in TABLES:
        points, offset = [], None
        while True:
            page, offset = client.scroll(name, limit=500, offset=offset, with_payload=True)
            points += page
            if offset is None:
                break
        for p in points:
            assert p.id not in seen, f"point {p.id} is in {seen.get(p.id, [None])[0]} and in {name}"
            seen[p.id] = [name, p.payload["amount"]]
    client.close()
    return seen


def _prefix_equal_to(start: dict[int, list], log: list, copied: dict[int, list]) -> int | None:
    """The number of the writer's transactions after which the tables were exactly ``copied``."""
    state = {k: list(v) for k, v in start.items()}
    differ = {k for k in state if copied.get(k) != state[k]} | (copied.keys() - state.keys())
    for n in range(len(log) + 1):
        if not differ:
            return n
        if n < len(log):
            for i, table, amount in log[n]:
                state[i] = [table, amount]
                (differ.discard if copied.get(i) == state[i] else differ.add)(i)
    return None


def _summary(stdout: str) -> dict[str, str]:
    return {t: next(ln for ln in stdout.splitlines() if ln.startswith(f"│ {t} ")) for t in TABLES}


def test_the_collections_are_the_tables_at_one_point_in_time(accounts, tmp_path, cli, open_qdrant, monkeypatch):
    monkeypatch.setattr("pg2qdrant.ui.PLAIN_PROGRESS_EVERY_S", 0)  # a progress line at every step
    start = accounts_model_of(accounts)
    writer = Writer(accounts, start)
    writer.start()
    try:
        r = cli("migrate", "--config", _file(tmp_path, accounts), "--migration.consistent", env=_env(accounts))
    finally:
        writer.stop.set()
        writer.join(timeout=60)
    assert writer.error is None, writer.error
    assert r.exit_code == 0, r.output
    copied = _collections(tmp_path, open_qdrant)
    assert len(copied) == 3 * ROWS  # every row in exactly one collection (a moved row is not lost or doubled)
    assert sum(a for _, a in copied.values()) == 3 * ROWS * AMOUNT  # no transfer half-copied
    n = _prefix_equal_to(start, writer.log, copied)
    assert n is not None, "the collections are no committed state of the tables"

    # One summary table: per table its rows in the snapshot, points, time, rate and verdict.
    assert "Summary: 3 entries, 3 ok, 0 failed, read in one snapshot" in r.stdout
    lines = _summary(r.stdout)
    rows = {t: int(re.search(r"│ ([\d,]+) +│", lines[t]).group(1).replace(",", "")) for t in TABLES}
    assert rows == {t: sum(1 for c, _ in copied.values() if c == t) for t in TABLES}
    for line in lines.values():
        assert "rows/s" in line and " s " in line and "the collection equals the table" in line, line
    # One progress display: its lines count the rows of all tables together, each table in turn.
    progress = re.findall(r"^3 entries, one snapshot: Copying public\.(\w+): ([\d,]+) / ([\d,]+) rows", r.stderr, re.M)
    assert {t for t, _, _ in progress} == set(TABLES) and {total for _, _, total in progress} == {"900"}, r.stderr
    assert progress[-1][1] == "900"


def accounts_model_of(db) -> dict[int, list]:
    """{id: [table, amount]} as the tables are now."""
    out = {}
    with db.connect() as conn:
        for table in TABLES:
            for i, amount in conn.execute(f"SELECT id, amount FROM {table}"):
                out[i] = [table, amount]
    return out


class ReaderProcesses(threading.Thread):
    """The reader processes (spawned children) this test process has, seen while it watches."""

    def __init__(self):
        super().__init__(daemon=True)
        self.pids: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil
        me = psutil.Process()
        while not self.stop.is_set():
            for child in me.children(recursive=True):
                try:
                    if "spawn_main" in " ".join(child.cmdline()):
                        self.pids.add(child.pid)
                except psutil.Error:  # gone meanwhile
                    pass
            time.sleep(0.01)


@pytest.mark.parametrize("where, workers", [("local", 1), ("local", 2), ("server", 2)])
def test_the_tables_share_reader_processes_started_once(accounts, tmp_path, cli, where, workers):
    """Each table used to start its own readers (a process costs an interpreter and its imports, ~1 s):
    now they start once for the run, serve every table in turn and are gone after it. Writing to a
    server, each reader keeps its connection, and a table's retried writes are counted for it alone."""
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.qdrant import QdrantTarget
    from qdrant_endpoint import UPSERT, QdrantEndpoint, service_unavailable
    with QdrantEndpoint() as endpoint:
        url = endpoint.grpc_url if where == "server" else f"local:{tmp_path / 'qdrant'}"
        fault = endpoint.faults.add(UPSERT, collection="acct_b", times=2, action=service_unavailable())
        watcher = ReaderProcesses()
        watcher.start()
        try:
            r = cli("--debug", "migrate", "--config", _file(tmp_path, accounts, workers=workers),
                    "--migration.consistent", "--qdrant.url", url, env=_env(accounts))
        finally:
            watcher.stop.set()
            watcher.join()
        assert r.exit_code == 0, r.output
        readers = r"2 reader processes \(pids (\d+), (\d+)\)" if workers == 2 else r"1 reader thread()()"
        started = re.findall("started " + readers, r.stderr)
        reused = re.findall("reusing " + readers, r.stderr)
        assert len(started) == 1 and reused == started * 2, r.stderr  # tables 2 and 3: the readers of table 1
        assert watcher.pids <= {int(p) for p in started[0] if p}  # no other reader process ran
        assert bool(watcher.pids) == (workers == 2)
        assert multiprocessing.active_children() == []  # stopped after the last table
        target = QdrantTarget(parse_target_url(url))
        try:
            for t in TABLES:
                assert assert_collection_equals_table(accounts.url, t, target, t) == ROWS
        finally:
            target.close()
        if where == "server":
            assert fault.fired == 2
            retried = {t: re.search(rf"source +│ public\.{t} .*?(transient failures retried +│ (\d+)|verdict)",
                                    r.stdout, re.S).group(2) for t in TABLES}
            assert retried == {"acct_a": None, "acct_b": "2", "acct_c": None}, r.stdout
    lines = _summary(r.stdout)
    assert all(f"│ {ROWS} " in ln and "the collection equals the table" in ln for ln in lines.values()), lines


def test_an_interrupted_consistent_run_starts_over_or_resumes_table_by_table(accounts, tmp_path, cli):
    # acct_c must go into an existing collection, and there is none: it fails at run time, after a and b.
    path = _file(tmp_path, accounts, last="migration.create-collection = false\n")
    r = cli("migrate", "--config", path, "--migration.consistent", env=_env(accounts))
    assert r.exit_code == 2, r.output
    assert "3 entries, 2 ok, 1 failed, read in one snapshot" in r.stdout
    assert "cannot be resumed" in r.stderr and "without it to resume table by table" in r.stderr
    accounts.execute("DELETE FROM acct_a WHERE id <= 10")  # meanwhile: 10 rows of acct_a deleted

    # Rerun with --migration.consistent: saved progress (another snapshot) is not used; all copied again.
    path = _file(tmp_path, accounts)
    r = cli("migrate", "--config", path, "--migration.consistent", "--migration.delete-orphans", env=_env(accounts))
    assert r.exit_code == 0, r.output
    assert r.stderr.count("was read in another snapshot") == 2  # acct_a and acct_b had saved progress
    assert "Resuming" not in r.stderr and "already complete" not in r.stderr
    lines = _summary(r.stdout)
    assert "290" in lines["acct_a"] and "the collection equals the table" in lines["acct_a"], lines["acct_a"]
    assert all("the collection equals the table" in ln for ln in lines.values()), lines

    # Without it: table by table, each resumes from its own saved progress.
    r = cli("migrate", "--config", path, env=_env(accounts))
    assert r.exit_code == 0, r.output
    assert r.stderr.count("is already complete") == 3 and "read in one snapshot" not in r.stdout


def test_consistent_is_refused_across_databases_and_accepted_for_one_table(accounts, tmp_path, cli):
    other = _no_password(accounts.url).rsplit("/", 1)[0] + "/postgres"
    path = _file(tmp_path, accounts, last=f'pg.url = "{other}"\n')
    r = cli("migrate", "--config", path, "--migration.consistent", env=_env(accounts))
    assert r.exit_code == 2 and "one snapshot of one database" in r.stderr, r.output
    assert not (tmp_path / "qdrant").exists()
    # One table is always one snapshot: the flag changes nothing there.
    r = cli("migrate", "--pg.url", accounts.url, "--pg.table", "acct_a", "--qdrant.url", f"local:{tmp_path / 'q1'}",
            "--qdrant.collection", "a", "--migration.consistent")
    assert r.exit_code == 0, r.output
    assert "Migration summary" in r.stdout and "Summary:" not in r.stdout


def test_a_table_failing_mid_copy_stops_the_shared_readers_and_the_next_table_starts_new_ones(accounts, tmp_path,
                                                                                              cli):
    """acct_b's writes are refused for good half-way: its readers may be mid-range, so they are stopped
    (none left behind), and acct_c is copied by readers started for it; the others are complete."""
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.qdrant import QdrantTarget
    from qdrant_endpoint import UPSERT, QdrantEndpoint, wrong_input
    with QdrantEndpoint() as endpoint:
        endpoint.faults.add(UPSERT, collection="acct_b", skip=5, times=None, action=wrong_input())
        r = cli("--debug", "migrate", "--config", _file(tmp_path, accounts), "--migration.consistent",
                "--qdrant.url", endpoint.grpc_url, env=_env(accounts))
        assert r.exit_code == 1, r.output
        assert "3 entries, 2 ok, 1 failed, read in one snapshot" in r.stdout, r.stdout
        started = re.findall(r"started 2 reader processes \(pids (\d+), (\d+)\)", r.stderr)
        reused = re.findall(r"reusing 2 reader processes \(pids (\d+), (\d+)\)", r.stderr)
        assert len(started) == 2 and started[0] != started[1] and reused == started[:1], r.stderr
        assert multiprocessing.active_children() == []
        target = QdrantTarget(parse_target_url(endpoint.grpc_url))
        try:
            for t in ("acct_a", "acct_c"):
                assert assert_collection_equals_table(accounts.url, t, target, t) == ROWS
        finally:
            target.close()
    lines = _summary(r.stdout)
    assert "FAILED" in lines["acct_b"] and "the collection equals the table" in lines["acct_c"], lines


def test_a_consistent_run_checks_and_counts_each_table_once(accounts, tmp_path, cli, monkeypatch):
    """The checks before the first copy read the same snapshot as the copies: a table whose key no
    constraint makes unique (a view) is scanned for duplicate keys once, and counted once."""
    from pg2qdrant.source import checks
    accounts.execute("CREATE VIEW acct_view AS SELECT id, amount, v FROM acct_a")
    calls = {"duplicate_keys": 0, "count_rows": 0}
    for module, name in ((checks, "duplicate_keys"), (checks, "count_rows")):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kw):  # counts, then does the real work
            calls[_name] += 1
            return _real(*args, **kw)
        monkeypatch.setattr(module, name, spy)
    path = _file(tmp_path, accounts, last='\n[[table]]\npg.table = "acct_view"\nqdrant.collection = "acct_view"\n'
                                          'pg.key-column = "id"\n')
    r = cli("migrate", "--config", path, "--migration.consistent", env=_env(accounts))
    assert r.exit_code == 0, r.output
    assert calls == {"duplicate_keys": 1, "count_rows": 4}, calls
    assert all("the collection equals the table" in line for line in r.stdout.splitlines()
               if line.startswith(("│ acct_", "│ acct_view"))), r.stdout
