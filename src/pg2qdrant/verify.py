"""`pg2qdrant verify`: prove that a collection is the table, through the same plan and mapping as the copy.

Verification never converts values its own way: source rows are read with the
plan's SELECT expressions and loaders and mapped with
:class:`~pg2qdrant.mapping.RowMapper` (point IDs with
:func:`~pg2qdrant.mapping.make_point_id`), so the expected point is exactly what
migrate would write; then it is compared with what Qdrant returns, field by
field and vector by vector. The plan itself comes from
:func:`pipeline.open_source`, in one REPEATABLE READ snapshot, so all five
checks see the same table state:

1. counts: exact ``count`` per leaf relation (partitions) vs Qdrant's exact count;
2. IDs: every row's point exists, no orphan point, no two rows on one ID;
3. values: a sample of rows compared with :func:`compare_points`;
4. schema: the collection's vectors vs the plan's;
5. search parity: pgvector's exact top-k vs Qdrant's exact and HNSW top-k.

Memory of the ID check (2): IDs are streamed from both sides (key columns only
on the source, ``scroll`` without payload or vectors on the target) into
compact numpy arrays, integers as 8 bytes and UUIDs as 16, then sorted and
merged. That costs at most :data:`BYTES_PER_ROW` bytes per row at the peak
(72 measured: about 70 MB for a 1M-row table). When the expected row count would
exceed ``--verify.id-memory`` (256 MiB by default, ~2.6M rows), the ID space is
split into hash buckets and both sides are streamed once per bucket, holding one
bucket at a time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import psycopg
from psycopg import sql

from pg2qdrant.errors import InputError, Pg2QdrantError
from pg2qdrant.mapping import PointBatch, RowMapper, SparseValue, make_point_id
from pg2qdrant.plan import CollectionShape, Plan, VectorSpec, shape_differences
from pg2qdrant.report import FAIL, PASS, SKIP, WARN, CheckResult, Report, render_summary, report_format, \
    worst, write_report
from pg2qdrant.source import reader

# float16 keeps 11 significant bits: after normalisation on either side values can
# differ by one float16 ulp (2^-11 relative) plus float32 rounding.
FLOAT16_RTOL = 2.0 ** -10
COSINE_ATOL = 1e-6  # normalised float32 vectors: notes/05 "allclose(atol=1e-6)"


@dataclass(frozen=True)
class Mismatch:
    point_id: Any
    field: str  # payload field or "vector:<name>" or "point"
    expected: Any
    actual: Any
    reason: str

    def describe(self) -> str:
        return f"point {self.point_id!r}: {self.field}: {self.reason} (expected {_short(self.expected)}, " \
               f"found {_short(self.actual)})"


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def ulps_apart(a: float, b: float) -> int:
    """Distance between two doubles in units in the last place."""
    ia, ib = (struct.unpack("<q", struct.pack("<d", x))[0] for x in (a, b))
    # Map the sign-magnitude bit patterns onto a monotonic integer line.
    ia = ia if ia >= 0 else -(2**63) - ia
    ib = ib if ib >= 0 else -(2**63) - ib
    return abs(ia - ib)


def same_json(expected: Any, actual: Any, float_ulps: int = 0) -> str | None:
    """None when equal in value and JSON type (int stays int, null stays null); else why not.

    ``float_ulps`` tolerates floats that differ by that many units in the last place
    (Qdrant Edge re-parses payload floats with serde_json's default parser, which is
    not exact; see README "Known target limitations").
    """
    te, ta = json_type(expected), json_type(actual)
    if te != ta:
        return f"type {te} became {ta}"
    if te == "list":
        if len(expected) != len(actual):
            return f"list of {len(expected)} became {len(actual)} items"
        for i, (e, a) in enumerate(zip(expected, actual)):
            why = same_json(e, a, float_ulps)
            if why:
                return f"[{i}]: {why}"
        return None
    if te == "object":
        if set(expected) != set(actual):
            missing = sorted(set(expected) - set(actual))
            extra = sorted(set(actual) - set(expected))
            return f"keys differ (missing {missing}, extra {extra})"
        for k in expected:
            why = same_json(expected[k], actual[k], float_ulps)
            if why:
                return f".{k}: {why}"
        return None
    if te == "float" and expected != actual:
        if math.isnan(expected) and math.isnan(actual):
            return None
        if math.isfinite(expected) and math.isfinite(actual):
            n = ulps_apart(expected, actual)
            return None if n <= float_ulps else f"float differs by {n} ULP"
    return None if expected == actual else "value differs"


def _normalized(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def compare_vector(spec: VectorSpec, expected: Any, actual: Any) -> str | None:
    """None when the vector Qdrant holds is the one the row maps to (see module constants)."""
    if spec.is_sparse:
        exp: SparseValue = expected
        idx = np.asarray(getattr(actual, "indices", []), dtype=np.int64)
        val = np.asarray(getattr(actual, "values", []), dtype=np.float32)
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
        if not np.array_equal(idx, exp.indices.astype(np.int64)):
            return "sparse indices differ"
        if not np.array_equal(val, exp.values):
            return "sparse values differ"
        return None
    exp_arr = np.asarray(expected, dtype=np.float32)
    act_arr = np.asarray(actual, dtype=np.float32)
    if exp_arr.shape != act_arr.shape:
        return f"dimension {exp_arr.shape[0]} became {act_arr.shape[0] if act_arr.ndim else 0}"
    if spec.distance == "Cosine":
        # Qdrant normalises cosine vectors on write (a server returns them normalised).
        e, a = _normalized(exp_arr.astype(np.float64)), _normalized(act_arr.astype(np.float64))
        tol = dict(rtol=FLOAT16_RTOL, atol=FLOAT16_RTOL) if spec.datatype == "float16" else dict(rtol=0, atol=COSINE_ATOL)
        return None if np.allclose(e, a, **tol) else "values differ"
    if spec.datatype == "float16":
        return None if np.allclose(exp_arr, act_arr, rtol=FLOAT16_RTOL, atol=0) else "values differ"
    if not np.array_equal(exp_arr, act_arr):
        bad = int(np.flatnonzero(exp_arr != act_arr)[0])
        return f"component {bad} differs ({float(exp_arr[bad])!r} vs {float(act_arr[bad])!r}): not bit-exact"
    return None


def compare_points(plan: Plan, batch: PointBatch, records: Iterable[Any], *, float_ulps: int = 0) -> list[Mismatch]:
    """Every expected point of ``batch`` against the records Qdrant returned for their IDs."""
    by_id = {_norm_id(r.id): r for r in records}
    specs = {v.name: v for v in plan.vectors}
    out: list[Mismatch] = []
    for i, pid in enumerate(batch.ids):
        rec = by_id.get(_norm_id(pid))
        if rec is None:
            out.append(Mismatch(pid, "point", "present", "missing", "point is missing in the collection"))
            continue
        payload = rec.payload or {}
        expected_payload = batch.payloads[i]
        for name, value in expected_payload.items():
            if name not in payload:
                out.append(Mismatch(pid, name, value, "<absent>", "field missing (null dropped?)"
                                    if value is None else "field missing"))
                continue
            why = same_json(value, payload[name], float_ulps)
            if why:
                out.append(Mismatch(pid, name, value, payload[name], why))
        for name in sorted(set(payload) - set(expected_payload)):
            out.append(Mismatch(pid, name, "<absent>", payload[name], "field not in the source row"))
        vectors = rec.vector if isinstance(rec.vector, dict) else ({"": rec.vector} if rec.vector else {})
        expected_vectors = batch.vectors_of(i)
        for name, spec in specs.items():
            exp, act = expected_vectors.get(name), vectors.get(name)
            if exp is None and act is None:
                continue
            if exp is None:
                out.append(Mismatch(pid, f"vector:{name}", None, "present", "vector should be absent (NULL)"))
            elif act is None:
                out.append(Mismatch(pid, f"vector:{name}", "present", None, "vector missing"))
            else:
                why = compare_vector(spec, exp, act)
                if why:
                    out.append(Mismatch(pid, f"vector:{name}", _short([float(x) for x in np.asarray(exp)[:4]] if not
                                        spec.is_sparse else exp), _short(act), why))
    return out


def _norm_id(pid: Any) -> Any:
    return str(pid) if not isinstance(pid, int) else pid


# ---------------------------------------------------------------------------------------
# Reading the source (the plan's own SELECT, optionally filtered or sampled)
# ---------------------------------------------------------------------------------------

def source_select(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                  params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                  limit: int | None = None) -> sql.Composable:
    """``COPY (SELECT <plan reads> FROM table [TABLESAMPLE ...] [WHERE ...] [LIMIT n]) TO STDOUT``."""
    columns = sql.SQL(", ").join(sql.SQL(r.sql) for r in plan.reads)  # built from quoted catalog names
    query = sql.SQL("COPY (SELECT {c} FROM {t}{s}{w}{l}) TO STDOUT (FORMAT BINARY)").format(
        c=columns, t=plan.table.ident,
        s=(sql.SQL(" TABLESAMPLE ") + tablesample) if tablesample is not None else sql.SQL(""),
        w=(sql.SQL(" WHERE ") + where) if where is not None else sql.SQL(""),
        l=sql.SQL(" LIMIT {}").format(sql.Literal(int(limit))) if limit is not None else sql.SQL(""))
    if params:  # COPY takes no bind parameters: render them client-side, safely quoted
        query = sql.SQL(psycopg.ClientCursor(conn).mogrify(query, params))
    return query


def iter_source_batches(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                        params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                        limit: int | None = None, batch_rows: int = 256) -> Iterator[PointBatch]:
    """Stream rows with the plan's SELECT and map them like migrate, ``batch_rows`` at a time."""
    oids = reader.prepare_connection(conn, plan)
    mapper = RowMapper(plan)
    query = source_select(conn, plan, where, params, tablesample=tablesample, limit=limit)
    for rows in reader.copy_rows(conn, query, oids, batch_rows):
        yield mapper.map_rows(rows)


def fetch_source_batch(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                       params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                       limit: int | None = None) -> PointBatch:
    """Read rows with the plan's own SELECT (optionally filtered) and map them like migrate."""
    oids = reader.prepare_connection(conn, plan)
    query = source_select(conn, plan, where, params, tablesample=tablesample, limit=limit)
    rows = [row for chunk in reader.copy_rows(conn, query, oids, 10_000) for row in chunk]
    return RowMapper(plan).map_rows(rows)


# ---------------------------------------------------------------------------------------
# Options and thresholds
# ---------------------------------------------------------------------------------------

DEFAULT_QUERIES = 50  # notes/05: tier 2 needs >= 50 queries
DEFAULT_K = 10  # notes/05 measures recall@10
SAMPLE_ALL_BELOW = 100_000  # notes/05: "all rows under 100k"
SAMPLE_MIN_ROWS = 1_000  # notes/05: "at least 1,000 rows or 1%"
SAMPLE_FRACTION = 0.01
INDEX_TIMEOUT_S = 300.0  # wait this long for Qdrant's optimizer before measuring HNSW recall
INDEX_POLL_S = 1.0
ID_MEMORY_MB = 256  # budget of the ID check; above it the IDs are compared in hash buckets
# Peak bytes per row in the ID check: each row is two IDs (source, target) of 19 bytes
# (two uint64 halves, a uint16 leaf tag, a side flag), built once (38), plus the lexsort order
# and one sorted copy at a time (~32). Measured with tracemalloc on 1M rows: 72 (UUIDs or
# integers alike); rounded up for Python's per-chunk lists.
BYTES_PER_ROW = 100
ID_READ_ROWS = 10_000  # key-only rows per source batch (small tuples: cheap)
ID_SCROLL_BATCH = 5_000  # IDs per scroll request (no payload, no vectors: small responses)
RETRIEVE_BATCH = 256  # points per retrieve of the values check (vectors included)
EXAMPLES_KEPT = 20  # findings kept per check (the report shows the first 10)
SCORE_PAIRS_KEPT = 2_000  # points per scatter plot series


@dataclass(frozen=True)
class Thresholds:
    """Pass marks. Defaults: Qdrant's migration guide (notes/05), plus exactness for exact search."""

    top1: float = 0.80  # tier 1: share of queries whose nearest point is the same
    overlap: float = 0.70  # tier 1: mean top-k overlap
    recall_mean: float = 0.85  # tier 2: mean recall@k passes at or above this...
    recall_investigate: float = 0.70  # ...warns between this and recall_mean, fails below
    recall_median: float = 0.90
    recall_min: float = 0.50
    recall_p5: float = 0.60
    spearman: float = 0.80  # mean Spearman rank correlation on the overlap
    tier2_queries: int = 50  # tier 2 is judged only with at least this many queries
    exact_recall: float = 0.99  # Qdrant exact vs pgvector exact: the same data must give the same top-k
    # Qdrant and pgvector compute distances in float32 in different orders (and Qdrant
    # normalises cosine vectors, float16 vectors are summed from halves): scores of the same
    # point agree to ~1e-6 relative on float32; 1e-3 leaves room for float16.
    score_tolerance: float = 1e-3  # |pgvector score - Qdrant score| / max(1, |score|)
    payload_ulps: int = 2  # payload floats this close are reported apart (Qdrant Edge), not failed


THRESHOLD_NAMES = {f.name.replace("_", "-"): f.name for f in dataclasses.fields(Thresholds)}


def parse_thresholds(values: Iterable[str] | None) -> Thresholds:
    """``recall-mean=0.9,top1=0.8`` items, repeatable and/or comma-separated."""
    changes: dict[str, Any] = {}
    for raw in values or ():
        for item in raw.replace(";", ",").split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            attr = THRESHOLD_NAMES.get(name.strip().lower().replace("_", "-"))
            if not sep or attr is None:
                raise InputError(f"--verify.threshold {item!r} is not name=value with a known name.",
                                 fix=f"names are: {', '.join(THRESHOLD_NAMES)}; e.g. --verify.threshold "
                                     "recall-mean=0.9,top1=0.8.")
            kind = type(getattr(Thresholds(), attr))
            try:
                number = kind(value.strip())
            except ValueError:
                raise InputError(f"--verify.threshold {item!r}: {value.strip()!r} is not a{'n integer' if kind is int else ' number'}.",
                                 fix=f"e.g. --verify.threshold {name.strip()}={getattr(Thresholds(), attr)}.") from None
            if number < 0 or not math.isfinite(number):
                raise InputError(f"--verify.threshold {item!r} must be a non-negative number.",
                                 fix=f"e.g. --verify.threshold {name.strip()}={getattr(Thresholds(), attr)}.")
            changes[attr] = number
    return dataclasses.replace(Thresholds(), **changes)


def parse_sample(text: str | None) -> tuple[str, float] | None:
    """``N`` rows or ``P%`` of the table; None for the default rule."""
    if text is None or not str(text).strip():
        return None
    t = str(text).strip()
    try:
        if t.endswith("%"):
            pct = float(t[:-1])
            if 0 <= pct <= 100:
                return "percent", pct
        else:
            n = int(t)
            if n >= 0:
                return "rows", n
    except ValueError:
        pass
    raise InputError(f"--verify.sample {t!r} is neither a row count nor a percentage.",
                     fix="give rows (--verify.sample 5000) or a share of the table (--verify.sample 2%).")


def sample_size(text: str | None, total: int) -> tuple[int, str]:
    """Rows the values check compares, and the rule that chose that number."""
    spec = parse_sample(text)
    if spec is None:
        if total < SAMPLE_ALL_BELOW:
            return total, "all rows (the table has under 100,000)"
        return min(total, max(SAMPLE_MIN_ROWS, math.ceil(total * SAMPLE_FRACTION))), "max(1,000 rows, 1%)"
    kind, value = spec
    if kind == "percent":
        return min(total, math.ceil(total * value / 100)), f"{value:g}% (--verify.sample)"
    return min(total, int(value)), f"{int(value):,} rows (--verify.sample)"


@dataclass
class VerifyOptions:
    sample: str | None = None  # N | P% | None (default rule)
    queries: int = DEFAULT_QUERIES
    k: int = DEFAULT_K
    report: str | None = None  # .json | .md | .html
    queries_file: str | None = None
    vectors: list[str] = field(default_factory=list)  # named vectors to search (default: all searchable)
    thresholds: Thresholds = field(default_factory=Thresholds)
    index_timeout_s: float = INDEX_TIMEOUT_S
    seed: int | None = None  # sampling seed (random and reported when not given)
    id_memory_mb: int = ID_MEMORY_MB

    def validate(self) -> None:
        parse_sample(self.sample)
        if self.queries < 0:
            raise InputError(f"--verify.queries must not be negative (got {self.queries}).",
                             fix=f"use e.g. --verify.queries {DEFAULT_QUERIES} (0 skips search parity).")
        if self.k <= 0:
            raise InputError(f"--verify.k must be positive (got {self.k}).", fix=f"use e.g. --verify.k {DEFAULT_K}.")
        if self.index_timeout_s < 0:
            raise InputError("--verify.index-timeout must not be negative.", fix="give seconds, e.g. 300.")
        if self.id_memory_mb <= 0:
            raise InputError("--verify.id-memory must be positive.", fix=f"give MiB, e.g. {ID_MEMORY_MB}.")
        if self.report:
            report_format(self.report)
        if self.queries_file and not Path(self.queries_file).is_file():
            raise InputError(f"--verify.queries-file {self.queries_file!r} does not exist.",
                             fix="give a .json, .jsonl or .npy file of query vectors.")

    def settings(self, seed: int) -> dict[str, Any]:
        out: dict[str, Any] = {"sample": self.sample or "default", "queries": self.queries, "k": self.k,
                               "seed": seed}
        if self.queries_file:
            out["queries file"] = self.queries_file
        changed = {k: v for k, v in dataclasses.asdict(self.thresholds).items()
                   if v != getattr(Thresholds(), k)}
        if changed:
            out["thresholds changed"] = changed
        return out


# ---------------------------------------------------------------------------------------
# Check 2 (and the counts of check 1): IDs streamed from both sides
# ---------------------------------------------------------------------------------------

def _uuid_bytes(pid: Any) -> bytes:
    if isinstance(pid, uuid.UUID):
        return pid.bytes
    text = str(pid)
    try:  # canonical text (what make_point_id and Qdrant produce): 5x faster than uuid.UUID()
        return bytes.fromhex(text.replace("-", "")) if len(text) == 36 else uuid.UUID(text).bytes
    except ValueError:
        return uuid.UUID(text).bytes


class _IdArrays:
    """Point IDs kept compactly as two uint64 columns (integer IDs: the value and 0; UUIDs: their
    128 bits), per kind, each with a small tag (the leaf relation the row came from)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"int": [], "uuid": []}
        self.size = 0

    def add(self, ids: Sequence[Any], tag: int, bucket: int, buckets: int) -> None:
        ints = np.fromiter((i for i in ids if isinstance(i, int)), dtype=np.uint64)
        raw = b"".join(_uuid_bytes(i) for i in ids if not isinstance(i, int))
        halves = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)
        columns = {"int": (ints, np.zeros(len(ints), dtype=np.uint64)), "uuid": (halves[:, 0], halves[:, 1])}
        for kind, (hi, lo) in columns.items():
            if buckets > 1:  # ints by value, UUIDs by their low bits (uniform for uuid5/uuid4)
                keep = (hi if kind == "int" else lo) % np.uint64(buckets) == bucket
                hi, lo = hi[keep], lo[keep]
            if len(hi):
                self._parts[kind].append((hi, lo, np.full(len(hi), tag, dtype=np.uint16)))
                self.size += len(hi)

    def take(self, kind: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The (hi, lo, tags) parts of one kind; this object lets go of them."""
        parts, self._parts[kind] = self._parts[kind], []
        return parts


def _decode_id(kind: str, hi: Any, lo: Any) -> int | str:
    return int(hi) if kind == "int" else str(uuid.UUID(int=(int(hi) << 64) | int(lo)))


@dataclass
class IdScan:
    """What streaming every ID from both sides found."""

    leaf_names: list[str]
    leaf_rows: list[int]
    target_points: int = 0
    missing: int = 0
    missing_by_leaf: list[int] = field(default_factory=list)
    orphans: int = 0
    duplicate_rows: int = 0  # rows beyond the first that map onto an already used ID
    examples: list[tuple[str, Any, str]] = field(default_factory=list)  # (kind, id, leaf)
    passes: int = 1
    peak_ids: int = 0  # source and target IDs held at once (two per row)

    @property
    def source_rows(self) -> int:
        return sum(self.leaf_rows)


def _leaf_relations(plan: Plan) -> list[tuple[str, sql.Composable]]:
    """(name, FROM clause) of every relation holding rows: each partition or inheritance child
    alone (ONLY), or the whole view / foreign table."""
    table = plan.table
    if table.relkind in ("v", "f") or not table.leaves:
        return [(table.display, table.ident)]
    return [(leaf.display, sql.SQL("ONLY ") + leaf.ident) for leaf in table.leaves]


def scan_ids(conn: psycopg.Connection, plan: Plan, target, collection: str, *, memory_mb: float = ID_MEMORY_MB,
             expected_points: int = 0, progress=None) -> IdScan:
    """Every source row's point ID (mapped like migrate) against every point ID in the collection.

    Reads only the key columns, one leaf relation (partition) at a time, so that
    missing points can be attributed to their partition; see the module docstring
    for the memory this needs.
    """
    leaves = _leaf_relations(plan)
    oids = reader.prepare_connection(conn, plan)
    key_oids = [oids[i] for i in plan.key.read_indexes]
    keys = sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes)
    expected = max(plan.table.estimated_rows, expected_points, 1)
    passes = max(1, math.ceil(expected * BYTES_PER_ROW / (memory_mb * 2**20)))
    scan = IdScan([name for name, _ in leaves], [0] * len(leaves), missing_by_leaf=[0] * len(leaves),
                  passes=passes)
    for bucket in range(passes):
        source, found = _IdArrays(), _IdArrays()
        for tag, (_, relation) in enumerate(leaves):
            query = sql.SQL("COPY (SELECT {k} FROM {r}) TO STDOUT (FORMAT BINARY)").format(k=keys, r=relation)
            for rows in reader.copy_rows(conn, query, key_oids, ID_READ_ROWS):
                source.add([make_point_id(plan.key, r) for r in rows], tag, bucket, passes)
                if bucket == 0:
                    scan.leaf_rows[tag] += len(rows)
                if progress is not None:
                    progress.advance(len(rows))
        chunk: list[Any] = []
        for record in target.scroll(collection, batch=ID_SCROLL_BATCH, with_vectors=False, with_payload=False):
            chunk.append(record.id)
            if len(chunk) >= ID_SCROLL_BATCH:
                found.add(chunk, 0, bucket, passes)
                if bucket == 0:
                    scan.target_points += len(chunk)
                chunk = []
        found.add(chunk, 0, bucket, passes)
        if bucket == 0:
            scan.target_points += len(chunk)
        scan.peak_ids = max(scan.peak_ids, source.size + found.size)
        for kind in ("int", "uuid"):
            _merge(scan, kind, source, found)
    return scan


def _merge(scan: IdScan, kind: str, source: _IdArrays, found: _IdArrays) -> None:
    """Sort both sides' IDs together; in each run of equal IDs the source rows come first.

    A run led by a target ID has no source row (an orphan); a source row after the
    first of its run shares its ID with another row; a run without a target ID is a
    missing point. Arrays are built once and replaced as soon as they are sorted, so the
    peak stays near :data:`BYTES_PER_ROW` per row.
    """
    s_parts, f_parts = source.take(kind), found.take(kind)
    n_source = sum(len(p[0]) for p in s_parts)
    if not s_parts and not f_parts:
        return
    hi = np.concatenate([p[0] for p in s_parts + f_parts])
    lo = np.concatenate([p[1] for p in s_parts + f_parts])
    tags = np.concatenate([p[2] for p in s_parts + f_parts])
    del s_parts, f_parts
    is_target = np.zeros(len(hi), dtype=bool)
    is_target[n_source:] = True
    order = np.lexsort((is_target, lo, hi))
    hi = hi[order]
    lo = lo[order]
    is_target = is_target[order]
    tags = tags[order]
    del order
    first = np.ones(len(hi), dtype=bool)
    first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    run = np.cumsum(first) - 1
    run_has_target = np.zeros(int(run[-1]) + 1, dtype=bool)
    run_has_target[run[is_target]] = True
    missing = first & ~is_target & ~run_has_target[run]
    del run, run_has_target
    orphan = first & is_target
    duplicate = ~first & ~is_target
    scan.orphans += int(orphan.sum())
    scan.duplicate_rows += int(duplicate.sum())
    scan.missing += int(missing.sum())
    for tag, n in enumerate(np.bincount(tags[missing], minlength=len(scan.leaf_names))):
        scan.missing_by_leaf[tag] += int(n)
    for what, mask in (("missing", missing), ("duplicate", duplicate), ("orphan", orphan)):
        for i in np.flatnonzero(mask)[:EXAMPLES_KEPT]:
            if len(scan.examples) < 3 * EXAMPLES_KEPT:
                leaf = "" if what == "orphan" else scan.leaf_names[int(tags[i])]
                scan.examples.append((what, _decode_id(kind, hi[i], lo[i]), leaf))


# ---------------------------------------------------------------------------------------
# Check 5 helpers: scores, recall, rank correlation (pure functions)
# ---------------------------------------------------------------------------------------

# pgvector operator giving each Qdrant distance, and how its value becomes Qdrant's score.
PG_OPERATORS = {
    "Cosine": ("<=>", "score = 1 - cosine distance"),
    "Dot": ("<#>", "score = -(negative inner product)"),
    "Euclid": ("<->", "score = L2 distance"),
    "Manhattan": ("<+>", "score = L1 distance"),
}
HAMMING = ("<~>", "score = Hamming distance (Manhattan on 0/1)")


def qdrant_score(distance: str, pg_distance: float) -> float:
    """pgvector's operator value converted to the score Qdrant reports for ``distance``."""
    if distance == "Cosine":
        return 1.0 - pg_distance
    if distance == "Dot":
        return -pg_distance
    return pg_distance  # Euclid, Manhattan (and Hamming on bits): Qdrant reports the distance


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a))


def recall_at_k(expected: Sequence[tuple[Any, float]], found: Sequence[tuple[Any, float]], *,
                tol: float) -> float | None:
    """Share of the expected top-k that was found; a found point tied with the k-th expected
    score counts too (ties at the boundary can be returned in either order). None if nothing expected."""
    if not expected:
        return None
    want = {pid for pid, _ in expected}
    kth = expected[-1][1]
    hits = 0
    for pid, score in found[:len(expected)]:
        # A point pgvector did not list but that scores like its k-th one is a tie at the boundary.
        # (A "better" score is not a hit: exact search cannot miss one, so it means the scores disagree.)
        if pid in want or _close(kth, score, tol):
            hits += 1
    return min(hits, len(expected)) / len(expected)


def top1_agrees(expected: Sequence[tuple[Any, float]], found: Sequence[tuple[Any, float]], tol: float) -> bool:
    if not expected:
        return True
    if not found:
        return False
    return found[0][0] == expected[0][0] or _close(expected[0][1], found[0][1], tol)


def _fractional_ranks(scores: Sequence[float], tol: float) -> np.ndarray:
    """Ranks of a list already in rank order; a run of tied scores shares its average rank."""
    ranks = np.arange(len(scores), dtype=np.float64)
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and _close(scores[i], scores[j + 1], tol):
            j += 1
        ranks[i:j + 1] = (i + j) / 2
        i = j + 1
    return ranks


def spearman_on_overlap(expected: Sequence[tuple[Any, float]], found: Sequence[tuple[Any, float]],
                        tol: float = 0.0) -> float | None:
    """Spearman's rho between the two rankings of the points both lists contain.

    Tied scores (within ``tol``) share their average rank, so points at equal distance
    returned in another order (common with Hamming distances) do not count as disagreement.
    None with fewer than 2 common points, or when only one side ranks them all as tied.
    """
    in_found = {pid for pid, _ in found}
    common = [(pid, score) for pid, score in expected if pid in in_found]
    if len(common) < 2:
        return None
    in_common = {pid for pid, _ in common}
    found_common = [(pid, score) for pid, score in found if pid in in_common]
    rank_found = dict(zip((pid for pid, _ in found_common),
                          _fractional_ranks([s for _, s in found_common], tol)))
    a = _fractional_ranks([s for _, s in common], tol)
    b = np.array([rank_found[pid] for pid, _ in common])
    if a.std() == 0 or b.std() == 0:
        return 1.0 if a.std() == b.std() == 0 else None
    return float(np.corrcoef(a, b)[0, 1])


def distribution(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "min": float(a.min()),
            "p5": float(np.percentile(a, 5))}


@dataclass
class ParityStats:
    """One vector, one Qdrant search mode, against pgvector's exact top-k."""

    mode: str  # exact | HNSW
    recalls: list[float] = field(default_factory=list)
    top1: list[bool] = field(default_factory=list)
    spearman: list[float] = field(default_factory=list)
    empty: int = 0  # queries where pgvector found points and Qdrant none
    max_score_diff: float = 0.0
    score_pairs: list[tuple[float, float]] = field(default_factory=list)
    worst: list[tuple[float, Any, str]] = field(default_factory=list)  # (recall, query label, what differs)

    def add(self, label: Any, expected, found, *, tol: float) -> None:
        recall = recall_at_k(expected, found, tol=tol)
        if recall is None:
            return
        self.recalls.append(recall)
        self.top1.append(top1_agrees(expected, found, tol))
        rho = spearman_on_overlap(expected, found, tol)
        if rho is not None:
            self.spearman.append(rho)
        if not found:
            self.empty += 1
        scores = dict(found)
        for pid, score in expected:
            if pid in scores:
                diff = abs(score - scores[pid]) / max(1.0, abs(score))
                self.max_score_diff = max(self.max_score_diff, diff)
                if len(self.score_pairs) < SCORE_PAIRS_KEPT:
                    self.score_pairs.append((score, scores[pid]))
        if recall < 1.0:
            lost = [p for p, _ in expected if p not in scores][:5]
            extra = [p for p, _ in found if p not in {q for q, _ in expected}][:5]
            self.worst.append((recall, label, f"recall {recall:.2f}; pgvector's points not returned: {lost}; "
                                              f"returned instead: {extra}"))

    def judge(self, t: Thresholds, *, exact: bool) -> tuple[str, list[str]]:
        """Verdict and the criteria that were missed (or that could not be judged)."""
        if not self.recalls:
            return SKIP, ["no query had results in pgvector"]
        d = distribution(self.recalls)
        top1 = float(np.mean(self.top1))
        missed: list[tuple[str, str]] = []  # (verdict, why)
        if top1 < t.top1:
            missed.append((FAIL, f"top-1 agreement {top1:.0%} < {t.top1:.0%}"))
        if d["mean"] < t.overlap:
            missed.append((FAIL, f"mean top-k overlap {d['mean']:.3f} < {t.overlap}"))
        if self.empty:
            missed.append((FAIL, f"{self.empty} queries returned nothing where pgvector found points"))
        if len(self.recalls) >= t.tier2_queries:
            if d["mean"] < t.recall_investigate:
                missed.append((FAIL, f"mean recall {d['mean']:.3f} < {t.recall_investigate}"))
            elif d["mean"] < t.recall_mean:
                missed.append((WARN, f"mean recall {d['mean']:.3f} < {t.recall_mean} (investigate)"))
            for name, limit in (("median", t.recall_median), ("min", t.recall_min), ("p5", t.recall_p5)):
                if d[name] < limit:
                    missed.append((FAIL, f"{name} recall {d[name]:.3f} < {limit}"))
            if self.spearman and float(np.mean(self.spearman)) <= t.spearman:
                missed.append((FAIL, f"mean Spearman {float(np.mean(self.spearman)):.3f} <= {t.spearman}"))
        if exact:
            if d["mean"] < t.exact_recall:
                missed.append((FAIL, f"exact search: mean recall {d['mean']:.3f} < {t.exact_recall} "
                                     "(the same data should give the same neighbours)"))
            if self.max_score_diff > t.score_tolerance:
                missed.append((FAIL, f"scores differ by up to {self.max_score_diff:.2g} (relative) > "
                                     f"{t.score_tolerance:g}"))
        return worst(v for v, _ in missed) if missed else PASS, [why for _, why in missed]

    def figures(self) -> dict[str, Any]:
        if not self.recalls:
            return {}
        d = distribution(self.recalls)
        return {"queries": len(self.recalls), "recall mean": d["mean"], "recall median": d["median"],
                "recall min": d["min"], "recall p5": d["p5"], "top-1 agreement": float(np.mean(self.top1)),
                "Spearman mean": float(np.mean(self.spearman)) if self.spearman else None,
                "empty results": self.empty, "max score difference (relative)": self.max_score_diff}


# ---------------------------------------------------------------------------------------
# Query vectors: sampled from the table or read from --verify.queries-file
# ---------------------------------------------------------------------------------------

class QueryReservoir:
    """A uniform sample of up to ``n`` (point ID, vector) per named vector from a stream of batches."""

    def __init__(self, names: Sequence[str], n: int, rng: random.Random):
        self.n, self.rng = n, rng
        self.kept: dict[str, list[tuple[Any, Any]]] = {name: [] for name in names}
        self.seen = dict.fromkeys(names, 0)

    def offer(self, batch: PointBatch) -> None:
        if self.n <= 0:
            return
        for i, pid in enumerate(batch.ids):
            vectors = batch.vectors_of(i)
            for name, kept in self.kept.items():
                v = vectors.get(name)
                if v is None:
                    continue
                self.seen[name] += 1
                if len(kept) < self.n:
                    kept.append((pid, _copy_vector(v)))
                else:
                    j = self.rng.randrange(self.seen[name])
                    if j < self.n:
                        kept[j] = (pid, _copy_vector(v))


def _copy_vector(v: Any) -> Any:
    return v if isinstance(v, SparseValue) else np.array(v, copy=True)


def load_queries_file(path: str, specs: Sequence[VectorSpec]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Query vectors from ``.npy`` (one 2-D array), ``.json`` (a list of vectors, or {vector name: list})
    or ``.jsonl`` (one vector per line). A bare list is for the only searched vector."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".npy":
            data: Any = np.load(p, allow_pickle=False).tolist()
        elif p.suffix.lower() == ".jsonl":
            data = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--verify.queries-file {path}: cannot read it ({exc}).",
                         fix="give a .npy array (queries x dimension), a .json list of vectors (or "
                             "{\"vector name\": [...]}) or a .jsonl file with one vector per line.") from None
    by_name = {s.name: s for s in specs}
    if isinstance(data, dict):
        unknown = [n for n in data if n not in by_name]
        if unknown:
            raise InputError(f"--verify.queries-file {path} names vector(s) {unknown} that are not searched.",
                             fix=f"searched vectors: {', '.join(by_name)} (choose with --verify.vector).")
        named = data
    elif len(specs) == 1:
        named = {specs[0].name: data}
    else:
        raise InputError(f"--verify.queries-file {path} holds a plain list, but {len(specs)} vectors are searched "
                         f"({', '.join(by_name)}).",
                         fix="choose one with --verify.vector NAME, or write {\"vector name\": [[...], ...]}.")
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, vectors in named.items():
        spec = by_name[name]
        if spec.is_sparse:
            raise InputError(f"--verify.queries-file: vector {name!r} is sparse; query files hold dense vectors.",
                             fix="leave it out of the file (sparse queries are sampled from the table).")
        rows = []
        for i, v in enumerate(vectors if isinstance(vectors, list) else []):
            arr = np.asarray(v, dtype=np.float32)
            if arr.ndim != 1 or len(arr) != spec.size or not np.isfinite(arr).all():
                raise InputError(f"--verify.queries-file {path}: query {i} for {name!r} is not a vector of "
                                 f"{spec.size} finite numbers.",
                                 fix=f"every query for {name!r} must have {spec.size} numbers.")
            rows.append((f"file #{i}", arr))
        if not rows:
            raise InputError(f"--verify.queries-file {path} holds no query for {name!r}.",
                             fix="put at least one vector in it.")
        out[name] = rows
    return out


# ---------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------

def _id(pid: Any) -> Any:
    """A point ID as JSON: the integer, or the UUID's canonical text."""
    return pid if isinstance(pid, int) else str(pid)


def _finding(pid: Any, field_name: str, reason: str, message: str, expected: Any = "", actual: Any = "") -> dict:
    return {"id": _id(pid), "field": field_name, "reason": reason, "message": message,
            "expected": _shown(expected), "actual": _shown(actual)}


def _shown(value: Any) -> str:
    """A value for the findings table: repr (so "1" and 1 differ), markers and vector excerpts as they are."""
    if isinstance(value, str) and (value in ("", "<absent>", "present", "missing") or value.startswith("[")):
        return value
    return _short(value)


def _brief(m: Mismatch) -> str:
    return f"point {m.point_id!r}: {m.field}: {m.reason}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _mismatch_finding(m: Mismatch) -> dict:
    return _finding(m.point_id, m.field, m.reason, m.describe(), m.expected, m.actual)


def is_ulp_level(m: Mismatch, ulps: int) -> bool:
    """A payload float that differs only by a few units in the last place (Qdrant Edge re-parsing)."""
    if ulps <= 0 or m.field == "point" or m.field.startswith("vector:") or "ULP" not in m.reason:
        return False
    return same_json(m.expected, m.actual, float_ulps=ulps) is None


class Verification:
    """The five checks on one source session (snapshot) and one target collection."""

    def __init__(self, session, target, target_display: str, is_local_mode: bool, opts: VerifyOptions, ui):
        self.conn: psycopg.Connection = session.conn
        self.plan: Plan = session.plan
        self.target = target
        self.target_display = target_display
        self.is_local_mode = is_local_mode
        self.opts = opts
        self.t = opts.thresholds
        self.ui = ui
        self.collection = self.plan.collection
        self.seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)

    # -- orchestration --------------------------------------------------------------------
    def run(self) -> Report:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        clock = time.monotonic()
        shape = self.target.shape(self.collection)
        if shape is None:
            raise InputError(f"Collection {self.collection!r} does not exist at {self.target_display}.",
                             fix="run pg2qdrant migrate first, or check --qdrant.url and --qdrant.collection.")
        report = Report(self.plan.table.display, self.target_display, self.collection, started,
                        self.opts.settings(self.seed), notes=list(self.plan.warnings))
        searched = self._searched_specs()  # input errors (vector names, query file) before the long scans
        file_queries = load_queries_file(self.opts.queries_file, searched) if self.opts.queries_file else None
        schema = self._timed(lambda: self.check_schema(shape))
        scan_started = time.monotonic()
        target_count = self.target.count(self.collection)
        with self.ui.progress(max(self.plan.table.estimated_rows, 0) or None, "Checking IDs") as progress:
            scan = scan_ids(self.conn, self.plan, self.target, self.collection, memory_mb=self.opts.id_memory_mb,
                            expected_points=target_count, progress=progress)
        counts = self.check_counts(scan, target_count)
        ids = self.check_ids(scan)
        ids.seconds = time.monotonic() - scan_started  # one scan serves both (counts: no time of its own)
        reservoir = QueryReservoir([s.name for s in searched] if file_queries is None else [],
                                   self.opts.queries, self.rng)
        values = self._timed(lambda: self.check_values(scan.source_rows, reservoir))
        search = self._timed(lambda: self.check_search(shape, searched, file_queries or reservoir.kept))
        report.checks = [counts, ids, values, schema, search]
        report.seconds = time.monotonic() - clock
        return report

    @staticmethod
    def _timed(fn) -> CheckResult:
        start = time.monotonic()
        result = fn()
        result.seconds = time.monotonic() - start
        return result

    # -- 4. schema --------------------------------------------------------------------------
    def check_schema(self, shape: CollectionShape) -> CheckResult:
        expected = self.plan.shape()
        diffs = shape_differences(expected, shape)
        figures = {"plan": expected.describe(), "collection": shape.describe()}
        if diffs:
            findings = [_finding("(collection)", _vector_field(d), "schema differs", d) for d in diffs]
            return CheckResult(4, "Schema", FAIL, "the collection does not match the plan: " + "; ".join(diffs),
                               details=[f"the table needs: {expected.describe()}",
                                        f"the collection has: {shape.describe()}"],
                               figures=figures, mismatches=findings)
        return CheckResult(4, "Schema", PASS, f"vectors match the plan: {expected.describe()}", figures=figures,
                           details=[f"{v.name}: {v.declared} -> {_vector_shape(v)} (distance from "
                                    f"{v.distance_source})" for v in self.plan.vectors])

    # -- 1. counts ----------------------------------------------------------------------------
    def check_counts(self, scan: IdScan, target_count: int) -> CheckResult:
        rows = scan.source_rows
        partitioned = len(scan.leaf_names) > 1
        figures: dict[str, Any] = {"source rows": rows, "points in the collection": target_count}
        details = []
        if partitioned:
            figures["rows per leaf relation"] = dict(zip(scan.leaf_names, scan.leaf_rows))
            details = [f"{name}: {n:,} rows" + (f", {m:,} without a point" if m else "")
                       for name, n, m in zip(scan.leaf_names, scan.leaf_rows, scan.missing_by_leaf)]
        where = f" in {len(scan.leaf_names)} partitions/children" if partitioned else ""
        if rows == target_count:
            return CheckResult(1, "Counts", PASS, f"{rows:,} source rows{where} = {target_count:,} points",
                               details=details, figures=figures)
        diff = target_count - rows
        return CheckResult(1, "Counts", FAIL,
                           f"{rows:,} source rows{where} but {target_count:,} points in the collection "
                           f"({abs(diff):,} {'more' if diff > 0 else 'fewer'})", details=details, figures=figures)

    # -- 2. IDs -------------------------------------------------------------------------------
    def check_ids(self, scan: IdScan) -> CheckResult:
        findings = []
        for what, pid, leaf in scan.examples:
            if what == "missing":
                findings.append(_finding(pid, "point", "missing in the collection",
                                         f"point {pid!r}: missing in the collection (its row is in {leaf})"))
            elif what == "orphan":
                findings.append(_finding(pid, "point", "orphan: no source row maps to it",
                                         f"point {pid!r}: orphan, no source row maps to it"))
            else:
                findings.append(_finding(pid, "point", "several source rows map to this ID",
                                         f"point {pid!r}: several source rows of {leaf} map to this one ID"))
        mem = (f"IDs compared in {_plural(scan.passes, 'pass', 'hash-bucket passes')}, at most "
               f"{scan.peak_ids:,} IDs (source and target) in memory at once (at most "
               f"{scan.peak_ids / 2 * BYTES_PER_ROW / 2**20:,.1f} MiB; budget --verify.id-memory "
               f"{self.opts.id_memory_mb} MiB)")
        figures = {"source rows": scan.source_rows, "points scrolled": scan.target_points,
                   "missing points": scan.missing, "orphan points": scan.orphans,
                   "rows sharing an ID": scan.duplicate_rows, "passes": scan.passes}
        problems = []
        if scan.missing:
            problems.append(f"{_plural(scan.missing, 'source row has', 'source rows have')} no point (IDs "
                            f"{_examples(scan, 'missing')})")
        if scan.orphans:
            problems.append(f"{_plural(scan.orphans, 'point matches', 'points match')} no source row "
                            f"(orphans: {_examples(scan, 'orphan')})")
        if scan.duplicate_rows:
            problems.append(f"{_plural(scan.duplicate_rows, 'row maps', 'rows map')} onto an ID another row "
                            f"already uses (IDs {_examples(scan, 'duplicate')})")
        if problems:
            return CheckResult(2, "IDs", FAIL, "; ".join(problems), details=[mem], figures=figures,
                               mismatches=findings)
        return CheckResult(2, "IDs", PASS, f"every one of the {scan.source_rows:,} source rows has its point, "
                                           "and no other point is in the collection",
                           details=[mem], figures=figures)

    # -- 3. values ----------------------------------------------------------------------------
    def check_values(self, total: int, reservoir: QueryReservoir) -> CheckResult:
        n, rule = sample_size(self.opts.sample, total)
        if n == 0:
            self._fill_reservoir(reservoir, total)
            return CheckResult(3, "Values", SKIP, "no row sampled" + (" (empty table)" if total == 0 else
                                                                      " (--verify.sample 0)"))
        compared = ulp = absent = 0
        real: list[Mismatch] = []
        ulp_examples: list[Mismatch] = []
        rows_bad: set[Any] = set()
        by_field: Counter[str] = Counter()
        ulps = self.t.payload_ulps
        with self.ui.progress(n if n >= total else None, "Comparing sampled rows") as progress:
            for batch in self._sample(n, total):
                reservoir.offer(batch)
                records = self.target.retrieve(self.collection, list(batch.ids), with_vectors=True)
                for m in compare_points(self.plan, batch, records):
                    if m.field == "point":  # no point at all: the IDs check reports it (with its partition)
                        absent += 1
                        continue
                    if is_ulp_level(m, ulps):
                        ulp += 1
                        if len(ulp_examples) < EXAMPLES_KEPT:
                            ulp_examples.append(m)
                        continue
                    rows_bad.add(_norm_id(m.point_id))
                    by_field[m.field] += 1
                    if len(real) < EXAMPLES_KEPT:
                        real.append(m)
                compared += len(batch)
                progress.advance(len(batch))
        compared -= absent
        fields = len(self.plan.payload) + len(self.plan.vectors)
        sampled = f"{compared:,} rows sampled ({rule}; seed {self.seed})" if compared + absent < total else \
            f"all {compared:,} rows"
        figures = {"rows compared": compared, "fields per row": fields, "rows with a difference": len(rows_bad),
                   "differences": sum(by_field.values()), "payload floats within "
                   f"{ulps} ULP": ulp, "differences per field": dict(by_field.most_common())}
        details = [f"compared: every payload field's value and JSON type (null kept, int stays int) and every "
                   f"vector ({_vector_rules(self.plan)})"]
        if absent:
            details.append(f"{_plural(absent, 'sampled row has', 'sampled rows have')} no point in the collection: "
                           "not compared here, the IDs check reports them")
            figures["sampled rows without a point"] = absent
        if compared == 0:
            return CheckResult(3, "Values", SKIP, "no sampled row has a point to compare (see the IDs check)",
                               details=details, figures=figures)
        if ulp:
            details.append(f"{ulp:,} payload float(s) differ from the source by at most {ulps} ULP (units in the "
                           "last place), e.g. " + "; ".join(m.describe() for m in ulp_examples[:3]) +
                           ". Qdrant Edge re-parses payload floats inexactly (see README, known target "
                           "limitations); set --verify.threshold payload-ulps=0 to count them as failures.")
        findings = [_mismatch_finding(m) for m in real] + [
            {**_mismatch_finding(m), "reason": f"ULP-level: {m.reason}"} for m in ulp_examples[:5]]
        if real:
            what = ", ".join(f"{f} ({c})" for f, c in by_field.most_common(5))
            return CheckResult(3, "Values", FAIL,
                               f"{_plural(sum(by_field.values()), 'difference', 'differences')} in "
                               f"{len(rows_bad):,} of {sampled}: {what}; e.g. {_brief(real[0])}",
                               details=details, figures=figures, mismatches=findings)
        if ulp:
            return CheckResult(3, "Values", WARN, f"{sampled} equal, except "
                                                  f"{_plural(ulp, 'payload float', 'payload floats')} within "
                                                  f"{ulps} ULP (e.g. {_brief(ulp_examples[0])})",
                               details=details, figures=figures, mismatches=findings)
        return CheckResult(3, "Values", PASS, f"{sampled}: every payload field and vector equal",
                           details=details, figures=figures)

    def _sample(self, n: int, total: int) -> Iterator[PointBatch]:
        """About ``n`` rows (at least n, almost surely), each kept with the same probability
        (reproducible with the seed), or all rows.

        No LIMIT: cutting an oversampled scan at n would drop the rows stored last (often the
        newest, which a migration is most likely to have missed); the sample is a little larger
        instead (Bernoulli counts are binomial: +3 standard deviations).
        """
        if n >= total:
            yield from iter_source_batches(self.conn, self.plan, batch_rows=RETRIEVE_BATCH)
            return
        pct = min(100.0, 100.0 * (n + 3 * math.sqrt(n)) / total)
        if self.plan.table.relkind in ("v", "f"):  # TABLESAMPLE needs a table or materialized view
            self.conn.execute("SELECT setseed(%s)", (self.seed / 2**31,))
            yield from iter_source_batches(self.conn, self.plan, sql.SQL("random() < {}").format(
                sql.Literal(pct / 100)), batch_rows=RETRIEVE_BATCH)
            return
        clause = sql.SQL("BERNOULLI ({}) REPEATABLE ({})").format(sql.Literal(pct), sql.Literal(self.seed))
        yield from iter_source_batches(self.conn, self.plan, tablesample=clause, batch_rows=RETRIEVE_BATCH)

    def _fill_reservoir(self, reservoir: QueryReservoir, total: int) -> None:
        """Query vectors when the values check sampled nothing."""
        if reservoir.n and total:
            for batch in self._sample(min(total, max(4 * reservoir.n, 200)), total):
                reservoir.offer(batch)

    # -- 5. search parity -------------------------------------------------------------------
    def _searched_specs(self) -> list[VectorSpec]:
        names = [v.name for v in self.plan.vectors]
        unknown = [n for n in self.opts.vectors if n not in names]
        if unknown:
            raise InputError(f"--verify.vector names {', '.join(map(repr, unknown))}, not a migrated vector.",
                             fix=f"vectors: {', '.join(names)}.")
        return [v for v in self.plan.vectors if not self.opts.vectors or v.name in self.opts.vectors]

    def check_search(self, shape: CollectionShape, searched: Sequence[VectorSpec],
                     queries_by_vector: dict[str, list[tuple[Any, Any]]]) -> CheckResult:
        """``queries_by_vector``: (label, vector) per named vector, from the table or a file."""
        k = self.opts.k
        from_file = bool(self.opts.queries_file)
        if self.opts.queries == 0 and not from_file:
            return CheckResult(5, "Search parity", SKIP, "not measured (--verify.queries 0)")
        specs = [v for v in searched if v.name in queries_by_vector]
        hnsw, hnsw_ready, hnsw_note = self._hnsw_state()
        plots: dict[str, Any] = {"k": k, "vectors": {}}
        lines, details, figures, findings, verdicts = [], [], {}, [], []
        same_as_exact: list[str] = []
        if hnsw_note:
            details.append(hnsw_note)
        for spec in specs:
            why_not = self._unsearchable(spec, shape)
            if why_not:
                verdicts.append(why_not[0])
                lines.append(f"{spec.name}: {why_not[1]}")
                continue
            queries = queries_by_vector[spec.name]
            if not queries:
                verdicts.append(SKIP)
                lines.append(f"{spec.name}: no row has this vector, nothing to search")
                continue
            try:
                exact, approx, index_used, hnsw_same = self._parity(spec, queries, hnsw)
            except (psycopg.Error, Pg2QdrantError) as exc:
                verdicts.append(FAIL)
                lines.append(f"{spec.name}: search failed: {exc}")
                continue
            if index_used:
                details.append(f"{spec.name}: pgvector's plan still used an index: its results may be approximate")
            if hnsw_same:
                same_as_exact.append(spec.name)
            distance = spec.distance or "Dot"
            conversion = (HAMMING if spec.kind == "bit" else PG_OPERATORS[distance])
            plots["vectors"][spec.name] = {
                "recall_exact": exact.recalls, "recall_hnsw": approx.recalls if approx else [],
                "scores_exact": exact.score_pairs, "scores_hnsw": approx.score_pairs if approx else [],
                "conversion": f"{conversion[0]}: {conversion[1]}"}
            v_exact, why_exact = exact.judge(self.t, exact=True)
            verdicts.append(v_exact)
            figures[spec.name] = {"exact": exact.figures()}
            text = (f"{spec.name} ({len(exact.recalls)} queries, {distance}, pgvector {conversion[0]}): exact "
                    f"recall@{k} {np.mean(exact.recalls):.3f}, top-1 {np.mean(exact.top1):.0%}")
            if why_exact:
                text += " [" + "; ".join(why_exact) + "]"
            if approx is not None:
                v_hnsw, why_hnsw = approx.judge(self.t, exact=False)
                if not hnsw_ready:
                    v_hnsw = worst([v_hnsw, WARN])
                verdicts.append(v_hnsw)
                figures[spec.name]["HNSW"] = approx.figures()
                text += f"; HNSW recall@{k} {np.mean(approx.recalls):.3f}, top-1 {np.mean(approx.top1):.0%}"
                if why_hnsw:
                    text += " [" + "; ".join(why_hnsw) + "]"
            else:
                text += "; HNSW not measured (local mode)" if self.is_local_mode else "; HNSW not measured"
            if len(exact.recalls) < self.t.tier2_queries:
                details.append(f"{spec.name}: {len(exact.recalls)} queries: tier 2 thresholds (recall "
                               f"distribution, Spearman) need {self.t.tier2_queries}; only tier 1 was judged")
            lines.append(text)
            for stats in (exact, approx):
                for recall, label, what in sorted((stats.worst if stats else []), key=lambda w: w[0])[:5]:
                    query = label if from_file else f"vector of point {label!r}"
                    findings.append(_finding(label, f"vector:{spec.name} ({stats.mode} search)", what,
                                             f"query = {query}, {spec.name}, {stats.mode} search: {what}"))
        verdict = worst(verdicts) if verdicts else SKIP
        if same_as_exact:
            details.append(f"{', '.join(same_as_exact)}: HNSW search returned exactly the exact-search results for "
                           "every query: on a small collection (which Qdrant may search exhaustively) this says "
                           "little about the index itself")
        details.append("pgvector searched exactly (index scans disabled, in the verification's snapshot); "
                       "a Qdrant point tied with pgvector's k-th score counts as found")
        return CheckResult(5, "Search parity", verdict, "; ".join(lines) or "no vector to search",
                           details=details, figures=figures, mismatches=findings, plots=plots)

    def _unsearchable(self, spec: VectorSpec, shape: CollectionShape) -> tuple[str, str] | None:
        if spec.is_sparse:
            if spec.name not in shape.sparse:
                return FAIL, "not searched: the collection has no such sparse vector"
            if self._sparse_dim(spec) is None:
                return SKIP, "not searched: sparsevec declared without a dimension"
            return None
        if spec.name not in shape.dense:
            return FAIL, "not searched: the collection has no such vector"
        if shape.dense[spec.name][0] != spec.size:
            return FAIL, (f"not searched: the collection's vector has size {shape.dense[spec.name][0]}, "
                          f"the table's {spec.size}")
        if spec.kind == "bit" and spec.distance != "Manhattan":
            return SKIP, f"not searched: pgvector has no {spec.distance} operator for bit vectors"
        return None

    def _sparse_dim(self, spec: VectorSpec) -> int | None:
        col = self.plan.table.column(spec.column)
        return col.typmod if col is not None and col.typmod > 0 else None

    def _hnsw_state(self) -> tuple[bool, bool, str]:
        """(HNSW search measured, index finished, what to say), after waiting for the optimizer."""
        if self.is_local_mode:
            return False, False, ("qdrant-client local mode has no HNSW index: its searches are always exhaustive, "
                           "so only exact parity is measured (HNSW recall needs a Qdrant server or edge:)")
        deadline = time.monotonic() + self.opts.index_timeout_s
        indexed, points, idle = self.target.index_status(self.collection)
        while not idle and time.monotonic() < deadline:
            time.sleep(INDEX_POLL_S)
            indexed, points, idle = self.target.index_status(self.collection)
        if not idle:
            return True, False, (f"Qdrant was still building the index after {self.opts.index_timeout_s:g} s "
                          f"({indexed:,} vectors indexed, {points:,} points): HNSW figures may be inflated by "
                          "exhaustive search of unindexed segments")
        if indexed == 0:
            return True, True, ("no vector is indexed (HNSW disabled with m=0, or segments below the indexing "
                          "threshold): Qdrant's 'HNSW' searches are exhaustive, so they equal exact search")
        return True, True, f"index ready: {indexed:,} vectors indexed for {points:,} points"

    def _parity(self, spec: VectorSpec, queries: Sequence[tuple[Any, Any]], hnsw: bool
                ) -> tuple[ParityStats, ParityStats | None, bool, bool]:
        """(exact stats, HNSW stats, pgvector used an index, HNSW gave the exact results every time)."""
        distance = spec.distance or "Dot"
        tol = self.t.score_tolerance
        exact, approx = ParityStats("exact"), (ParityStats("HNSW") if hnsw else None)
        search_sql = self._pg_search_sql(spec)
        index_used = False
        hnsw_same_as_exact = True
        self.conn.execute("SAVEPOINT pg2qdrant_verify")
        try:
            for setting in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
                self.conn.execute(sql.SQL("SET LOCAL {} = off").format(sql.Identifier(setting)))
            with self.ui.progress(len(queries), f"Searching {spec.name} on both sides") as progress:
                for i, (label, vector) in enumerate(queries):
                    literal = self._pg_literal(spec, vector)
                    if i == 0:
                        index_used = self._pg_uses_index(search_sql, literal)
                    # NaN distances (a zero vector under cosine) have no rank on either side.
                    expected = [(_norm_id(pid), qdrant_score(distance, d))
                                for pid, d in self._pg_top_k(search_sql, literal) if math.isfinite(d)]
                    if spec.is_sparse:
                        # Qdrant's sparse search returns only points sharing an index with the
                        # query; pgvector pads its top-k with unrelated rows scoring 0.
                        expected = [(pid, score) for pid, score in expected if score != 0]
                    if not expected:
                        progress.advance(1)
                        continue
                    query = vector if spec.is_sparse else np.asarray(vector, dtype=np.float32)
                    ids_by_mode = []
                    for stats, is_exact in ((exact, True), (approx, False)):
                        if stats is None:
                            continue
                        found = [(_norm_id(pid), float(s)) for pid, s in self.target.search(
                            self.collection, spec.name, query, self.opts.k, exact=is_exact)]
                        stats.add(_id(label), expected, found, tol=tol)
                        ids_by_mode.append([pid for pid, _ in found])
                    hnsw_same_as_exact = hnsw_same_as_exact and ids_by_mode[0] == ids_by_mode[-1]
                    progress.advance(1)
        finally:  # the savepoint also undoes the SET LOCALs
            self.conn.execute("ROLLBACK TO SAVEPOINT pg2qdrant_verify")
            self.conn.execute("RELEASE SAVEPOINT pg2qdrant_verify")
        return exact, approx, index_used, bool(approx is not None and approx.recalls and hnsw_same_as_exact)

    def _pg_search_sql(self, spec: VectorSpec) -> sql.Composable:
        schema = self._pgvector_schema()
        if spec.is_sparse:
            op, cast = "<#>", sql.Identifier(schema, "sparsevec")
        elif spec.kind == "bit":
            op, cast = HAMMING[0], sql.SQL("bit({})").format(sql.SQL(str(int(spec.size or 0))))
        else:
            col = self.plan.table.column(spec.column)
            op, cast = PG_OPERATORS[spec.distance or "Cosine"][0], sql.Identifier(col.type.schema, col.type.name)
        keys = sql.SQL(", ").join(sql.SQL(self.plan.reads[i].sql) for i in self.plan.key.read_indexes)
        column = sql.SQL(self.plan.reads[spec.read_index].sql)
        return sql.SQL("SELECT {keys}, {col} OPERATOR({schema}.{op}) %s::{cast} FROM {table} "
                       "WHERE {col} IS NOT NULL ORDER BY {pos} LIMIT {k}").format(
            keys=keys, col=column, schema=sql.Identifier(schema), op=sql.SQL(op), cast=cast,
            table=self.plan.table.ident, pos=sql.SQL(str(len(self.plan.key.read_indexes) + 1)),
            k=sql.Literal(self.opts.k))

    def _pgvector_schema(self) -> str:
        row = self.conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = "
                                "e.extnamespace WHERE e.extname = 'vector'").fetchone()
        return row[0] if row else "public"

    def _pg_literal(self, spec: VectorSpec, vector: Any) -> str:
        if spec.is_sparse:
            parts = ",".join(f"{int(i) + 1}:{float(v)!r}" for i, v in zip(vector.indices, vector.values))
            return f"{{{parts}}}/{self._sparse_dim(spec)}"
        if spec.kind == "bit":
            return "".join("1" if x else "0" for x in np.asarray(vector))
        return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"

    def _pg_top_k(self, query: sql.Composable, literal: str) -> list[tuple[Any, float]]:
        nkeys = len(self.plan.key.read_indexes)
        with self.conn.cursor(binary=True) as cur:
            rows = cur.execute(query, (literal,)).fetchall()
        return [(make_point_id(self.plan.key, r[:nkeys]), float(r[nkeys])) for r in rows]

    def _pg_uses_index(self, query: sql.Composable, literal: str) -> bool:
        text = json.dumps(self.conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, (literal,)).fetchone()[0])
        return "Index Scan" in text or "Index Only Scan" in text or "Bitmap" in text


def _examples(scan: IdScan, what: str) -> str:
    ids = [repr(pid) for kind, pid, _ in scan.examples if kind == what]
    total = {"missing": scan.missing, "orphan": scan.orphans, "duplicate": scan.duplicate_rows}[what]
    return ", ".join(ids[:5]) + (", ..." if total > 5 else "")


def _vector_field(diff: str) -> str:
    start = diff.find("'")
    end = diff.find("'", start + 1)
    return f"vector:{diff[start + 1:end]}" if start >= 0 and end > start else "vectors"


def _vector_shape(v: VectorSpec) -> str:
    return "sparse" if v.is_sparse else f"{v.size}-d {v.distance} {v.datatype}"


def _vector_rules(plan: Plan) -> str:
    rules = {"dense": "float32 bit-exact", "half": "float16 precision", "sparse": "exact", "bit": "exact"}
    out = []
    for v in plan.vectors:
        rule = rules[v.kind]
        if v.distance == "Cosine" and v.kind in ("dense", "half"):
            rule = "normalised, atol 1e-6" if v.kind == "dense" else "normalised, float16 precision"
        out.append(f"{v.name}: {rule}")
    return ", ".join(out)


# ---------------------------------------------------------------------------------------
# Entry point for `pg2qdrant verify` and `migrate --verify`
# ---------------------------------------------------------------------------------------

def run_verify(options, verify_options: VerifyOptions, ui, *, session=None) -> Report:
    """Run the five checks, print the summary, write the report file; return the report.

    ``options`` are the migrate options (same plan, same mapping). With ``session``
    (an open :class:`pipeline.SourceSession`, e.g. the copy's own snapshot) it is used
    and left open; otherwise one is opened and closed here. Input problems raise
    InputError (exit 2); the caller exits with ``report.exit_code`` (0 pass, 1 fail).
    """
    from pg2qdrant import pipeline  # pipeline may import this module for migrate --verify
    from pg2qdrant.target.qdrant import parse_target_url

    started = time.monotonic()
    verify_options.validate()
    address = parse_target_url(options.qdrant_url)
    own = session is None
    if own:
        session = pipeline.open_source(options, ui)
    target = None
    try:
        target = pipeline.connect_target(options, address, ui)
        report = Verification(session, target, address.display(), address.kind in ("local", "memory"),
                              verify_options, ui).run()
        report.seconds = time.monotonic() - started
    finally:
        if target is not None:
            target.close()
        if own:
            session.close()
    render_summary(ui, report)
    if verify_options.report:
        write_report(report, verify_options.report)
        ui.info(f"Report written to {verify_options.report}")
    return report
