"""Check 2 (and the counts of check 1): every point ID streamed from both sides and merged.

Separate because it is the one check that reads the whole table and the whole
collection, with its own memory management (numpy arrays, hash-bucket passes).

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

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pg2qdrant.core.mapping.ids import make_point_id
from pg2qdrant.core.plan import Plan
from pg2qdrant.core.table import Leaf
from pg2qdrant.source import ids as source_ids
from pg2qdrant.source.connect import Connection

ID_MEMORY_MB = 256  # budget of the ID check; above it the IDs are compared in hash buckets
# Peak bytes per row in the ID check: each row is two IDs (source, target) of 19 bytes
# (two uint64 halves, a uint16 leaf tag, a side flag), built once (38), plus the lexsort order
# and one sorted copy at a time (~32). Measured with tracemalloc on 1M rows: 72 (UUIDs or
# integers alike); rounded up for Python's per-chunk lists.
BYTES_PER_ROW = 100
ID_READ_ROWS = 10_000  # key-only rows per source batch (small tuples: cheap)
ID_SCROLL_BATCH = 5_000  # IDs per scroll request (no payload, no vectors: small responses)

EXAMPLES_KEPT = 20  # findings kept per check (the report shows the first 10)




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


IdsHook = Callable[[list[int | str]], None]


@dataclass(frozen=True)
class _Hooks:
    on_orphans: IdsHook | None = None
    on_missing: IdsHook | None = None
    on_duplicates: IdsHook | None = None


class IdSet:
    """A set of point IDs held compactly (16 bytes each, sorted numpy arrays per kind), to test
    streamed batches against: what a caller keeps of an ID scan instead of Python objects."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {"int": [], "uuid": []}
        self._sorted: dict[str, np.ndarray] | None = None
        self.size = 0

    @staticmethod
    def _codes(ids: Sequence[Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per kind: (each ID's bytes, its position in ``ids``)."""
        ints = [n for n, i in enumerate(ids) if isinstance(i, int)]
        uuids = [n for n, i in enumerate(ids) if not isinstance(i, int)]
        return {"int": (np.array([ids[n] for n in ints], dtype=np.uint64).astype(">u8").view("S8"),
                        np.array(ints, dtype=np.int64)),
                "uuid": (np.frombuffer(b"".join(_uuid_bytes(ids[n]) for n in uuids), dtype="S16"),
                         np.array(uuids, dtype=np.int64))}

    def add(self, ids: Sequence[Any]) -> None:
        for kind, (codes, _) in self._codes(ids).items():
            if len(codes):
                self._parts[kind].append(codes)
                self.size += len(codes)
        self._sorted = None

    def __len__(self) -> int:
        return self.size

    def contains(self, ids: Sequence[Any]) -> list[bool]:
        """For each of ``ids``: whether it is in the set."""
        if self._sorted is None:  # sorted once, then each batch is a binary search
            self._sorted = {kind: np.sort(np.concatenate(parts)) for kind, parts in self._parts.items() if parts}
            self._parts = {kind: [self._sorted[kind]] if kind in self._sorted else [] for kind in self._parts}
        found = np.zeros(len(ids), dtype=bool)
        for kind, (codes, positions) in self._codes(ids).items():
            ref = self._sorted.get(kind)
            if ref is not None and len(codes):
                at = np.minimum(np.searchsorted(ref, codes), len(ref) - 1)
                found[positions] = ref[at] == codes
        return found.tolist()


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


def scan_ids(conn: Connection, plan: Plan, target, collection: str, *, memory_mb: float = ID_MEMORY_MB,
             expected_points: int = 0, progress=None,
             on_orphans: IdsHook | None = None, on_missing: IdsHook | None = None,
             on_duplicates: IdsHook | None = None, leaves: Sequence[Leaf] | None = None) -> IdScan:
    """Every source row's point ID (mapped like migrate) against every point ID in the collection.

    Reads only the key columns, one leaf relation (partition) at a time, so that
    missing points can be attributed to their partition (only the ``leaves`` given,
    when given); see the module docstring for the memory this needs. The hooks see
    the IDs a hash bucket at a time (a bucket's IDs are never seen again by the later
    buckets): ``on_duplicates`` first, all the bucket's IDs that several rows map to
    in one list (the source connection is idle then); then ``on_orphans`` (points with
    no row: it may delete them) and ``on_missing`` (rows with no point), in lists of at
    most ID_SCROLL_BATCH.
    """
    hooks = _Hooks(on_orphans, on_missing, on_duplicates)
    names = source_ids.relation_names(plan, leaves)
    expected = max(plan.table.estimated_rows, expected_points, 1)
    passes = max(1, math.ceil(expected * BYTES_PER_ROW / (memory_mb * 2**20)))
    scan = IdScan(names, [0] * len(names), missing_by_leaf=[0] * len(names), passes=passes)
    for bucket in range(passes):
        source, found = _IdArrays(), _IdArrays()
        for tag, rows in source_ids.key_batches(conn, plan, ID_READ_ROWS, leaves=leaves):
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
            _merge(scan, kind, source, found, hooks)
    return scan


# complexity: the numpy merge of two sorted ID arrays per leaf and bucket: one pass that yields orphans, missing and
# duplicates together.
def _merge(scan: IdScan, kind: str, source: _IdArrays, found: _IdArrays, hooks: _Hooks | None = None) -> None:
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
    if hooks is not None:
        if hooks.on_duplicates is not None and duplicate.any():
            where = np.flatnonzero(duplicate)
            hooks.on_duplicates([_decode_id(kind, high, low) for high, low in zip(hi[where], lo[where])])
        for hook, mask in ((hooks.on_orphans, orphan), (hooks.on_missing, missing)):
            if hook is None:
                continue
            where = np.flatnonzero(mask)
            for start in range(0, len(where), ID_SCROLL_BATCH):
                chunk = where[start:start + ID_SCROLL_BATCH]
                hook([_decode_id(kind, high, low) for high, low in zip(hi[chunk], lo[chunk])])
    for what, mask in (("missing", missing), ("duplicate", duplicate), ("orphan", orphan)):
        for i in np.flatnonzero(mask)[:EXAMPLES_KEPT]:
            if len(scan.examples) < 3 * EXAMPLES_KEPT:
                leaf = "" if what == "orphan" else scan.leaf_names[int(tags[i])]
                scan.examples.append((what, _decode_id(kind, hi[i], lo[i]), leaf))
