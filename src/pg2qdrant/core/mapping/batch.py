"""Rows -> a batch of points: :class:`RowMapper` applies the plan to rows read in its order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pg2qdrant.core.errors import DataError
from pg2qdrant.core.mapping.ids import PointId, make_point_id
from pg2qdrant.core.mapping.scalars import _identity, payload_converter
from pg2qdrant.core.mapping.vectors import DenseColumn, DimensionMismatch, SparseValue, decode_vector_column
from pg2qdrant.core.plan import Plan, VectorSpec


@dataclass
class PointBatch:
    """Points ready for a target: parallel lists, vectors kept as numpy arrays."""

    ids: list[PointId]
    payloads: list[dict[str, Any]]
    dense: dict[str, DenseColumn] = field(default_factory=dict)
    sparse: dict[str, list[SparseValue | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def vectors_of(self, i: int) -> dict[str, Any]:
        """Named vectors of point ``i`` (NULL vectors are absent), as numpy rows / SparseValue."""
        out: dict[str, Any] = {}
        for name, col in self.dense.items():
            if col.present[i]:
                out[name] = col.values[i]
        for name, values in self.sparse.items():
            if values[i] is not None:
                out[name] = values[i]
        return out

    def points(self, make_sparse: Callable[[list[int], list[float]], Any], *,
               buffers: bool = False) -> Iterator[tuple[PointId, dict, dict]]:
        """(id, named vectors, payload) per point; NULL vectors are left out.

        Dense vectors are float lists (what qdrant-client serialises), or with
        ``buffers=True`` float32 memoryviews of the batch's array: Qdrant Edge reads
        those without creating a Python float per component (~2.5x cheaper per point).
        """
        dense = []
        for name, col in self.dense.items():
            values = np.ascontiguousarray(col.values, dtype=np.float32)
            rows = [memoryview(r) for r in values] if buffers else values.tolist()
            dense.append((name, rows, col.present))
        for i, pid in enumerate(self.ids):
            vector: Any = {name: rows[i] for name, rows, present in dense if present[i]}
            for name, values in self.sparse.items():
                value = values[i]
                if value is not None:
                    vector[name] = make_sparse(value.indices.tolist(), value.values.tolist())
            if len(vector) == 1 and "" in vector:  # Qdrant's unnamed default vector goes as a plain list
                vector = vector[""]
            yield pid, vector, self.payloads[i]

    def point_sizes(self) -> list[int]:
        """Estimated request bytes of each point (JSON floats: ~12 bytes each), to stay under
        a server's request size limit."""
        fixed = sum(c.values.shape[1] * 12 for c in self.dense.values())
        sizes = [64 + fixed + len(json.dumps(p, default=str)) for p in self.payloads]
        for values in self.sparse.values():
            for i, v in enumerate(values):
                if v is not None:
                    sizes[i] += 20 * len(v.indices)
        return sizes

    def slice(self, start: int, stop: int) -> PointBatch:
        return PointBatch(
            ids=self.ids[start:stop], payloads=self.payloads[start:stop],
            dense={n: DenseColumn(c.values[start:stop], c.present[start:stop]) for n, c in self.dense.items()},
            sparse={n: v[start:stop] for n, v in self.sparse.items()},
        )


class RowMapper:
    """Converts rows (tuples in ``plan.reads`` order) into a :class:`PointBatch`."""

    def __init__(self, plan: Plan, text_encoders: Mapping[str, Callable[[str], SparseValue | None]] | None = None):
        """``text_encoders``: vector name -> the document encoder of each of ``plan.bm25`` (Qdrant's
        BM25, from destination/bm25.py through runtime.row_mapper; core imports no model)."""
        self.plan = plan
        missing = [b.name for b in plan.bm25 if b.name not in (text_encoders or {})]
        if missing:
            raise ValueError(f"no BM25 encoder for {', '.join(missing)}: use runtime.row_mapper(plan)")
        self._bm25 = [(b.name, b.read_index, (text_encoders or {})[b.name]) for b in plan.bm25]
        self.key = plan.key
        self._payload = [(p.name, p.read_index, payload_converter(p.kind, array=p.array))
                         for p in plan.payload]
        self._vectors = list(plan.vectors)

    def point_id(self, row: Sequence[Any]) -> PointId:
        values = [row[i] for i in self.key.read_indexes]
        if any(v is None for v in values):
            raise DataError(
                f"Key column(s) {', '.join(self.key.columns)} of {self.plan.table.display} hold NULL "
                f"in a row (other columns: {self._describe_row(row)}).",
                fix="every row needs a key: fill the NULLs, or choose a NOT NULL unique column "
                    "with --pg.key-column.",
            )
        return make_point_id(self.key, values)

    def _describe_row(self, row: Sequence[Any]) -> str:
        shown = [f"{p.name}={row[p.read_index]!r}" for p in self.plan.payload[:3]]
        return ", ".join(shown)[:200]

    def key_text(self, row: Sequence[Any]) -> str:
        values = [row[i] for i in self.key.read_indexes]
        return ", ".join(f"{c}={v!r}" for c, v in zip(self.key.columns, values))

    # complexity: the hot loop of every flow: one branch per column kind, inline rather than a call per value.
    def map_rows(self, rows: Sequence[Sequence[Any]]) -> PointBatch:
        ids = [self.point_id(r) for r in rows]
        # Column by column: one list comprehension per converted column, none for the
        # columns whose decoded value is already the payload value (ints, bools, json...).
        names = [name for name, _, _ in self._payload]
        columns = []
        for _name, idx, convert in self._payload:
            values = [r[idx] for r in rows]
            if convert is not _identity:
                values = [None if v is None else convert(v) for v in values]
            columns.append(values)
        payloads = [dict(zip(names, vals)) for vals in zip(*columns)] if columns else [{} for _ in rows]
        if self.plan.payload_keys or self.plan.payload_shape:
            from pg2qdrant.core.layouts import shape_payloads  # renames, nesting, framework shapers
            payloads = shape_payloads(self.plan, payloads)
        batch = PointBatch(ids=ids, payloads=payloads)
        for spec in self._vectors:
            blobs = [r[spec.read_index] for r in rows]
            try:
                decoded = decode_vector_column(spec, blobs)
            except DimensionMismatch as exc:
                raise self._dimension_error(spec, rows, exc) from None
            if spec.is_sparse:
                batch.sparse[spec.name] = decoded
            else:
                batch.dense[spec.name] = decoded
        for name, idx, encode in self._bm25:  # NULL or token-less text: no vector (None)
            batch.sparse[name] = [encode(r[idx]) if r[idx] else None for r in rows]
        return batch

    def _dimension_error(self, spec: VectorSpec, rows, exc: DimensionMismatch) -> DataError:
        examples = "; ".join(f"{self.key_text(rows[i])} has {d}" for i, d in zip(exc.rows, exc.dims))
        how = "the column is declared without a dimension and" if spec.size_from_data else "the"
        return DataError(
            f"Vector column {spec.column} ({spec.declared}) does not have one dimension: {how} "
            f"collection uses {exc.expected}, but {examples}.",
            fix=f"make all rows of {spec.column} the same dimension (or declare it {spec.column} "
                f"vector({exc.expected}) and fix the odd rows), or leave it out with --pg.columns.",
        )
