"""Target-neutral write operations, applied in order by ``target.apply(collection, ops)``.

The copy only upserts whole points; keeping Qdrant in sync also needs partial
changes (an UPDATE whose vector arrived as "unchanged TOAST" must not touch
the vector), deletes and a TRUNCATE. Both targets translate these into their
own calls: one ``batch_update_points`` request for qdrant-client (applied in
order by the server), a sequence of update operations for Qdrant Edge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.ids import PointId
from pg2qdrant.core.mapping.vectors import SparseValue


@dataclass(frozen=True)
class Upsert:
    """Write whole points (replacing any previous version, vectors not given included)."""

    batch: PointBatch


@dataclass(frozen=True)
class SetPayload:
    """Set these payload fields of one point, leaving its other fields and vectors alone."""

    point_id: PointId
    payload: dict[str, Any]


@dataclass(frozen=True)
class UpdateVectors:
    """Replace these named vectors of one point (dense: float list or numpy row; sparse: SparseValue)."""

    point_id: PointId
    vectors: dict[str, Any]


@dataclass(frozen=True)
class DeleteVectors:
    point_id: PointId
    names: tuple[str, ...]


@dataclass(frozen=True)
class DeletePoints:
    ids: tuple[PointId, ...]


@dataclass(frozen=True)
class ClearCollection:
    """Remove every point (a TRUNCATE of the source table)."""

    reason: str = field(default="truncate")


Operation = Upsert | SetPayload | UpdateVectors | DeleteVectors | DeletePoints | ClearCollection


def halves(request: PointBatch | list[Operation]) -> tuple | None:
    """The same request as two smaller ones, in order (for a server that refused it as too large);
    None when it is one point or one change that cannot be split."""
    if isinstance(request, PointBatch):
        n = len(request)
        return None if n <= 1 else (request.slice(0, n // 2), request.slice(n // 2, n))
    if len(request) > 1:
        half = len(request) // 2
        return request[:half], request[half:]
    if len(request) == 1 and isinstance(request[0], Upsert):
        parts = halves(request[0].batch)
        return None if parts is None else tuple([Upsert(part)] for part in parts)
    return None


def first_point_id(request: PointBatch | list[Operation]) -> PointId | None:
    """The point a request that cannot be split is about (for the error message)."""
    if isinstance(request, PointBatch):
        return request.ids[0] if len(request) else None
    for op in request:
        if isinstance(op, Upsert):
            return op.batch.ids[0] if len(op.batch) else None
        if isinstance(op, (SetPayload, UpdateVectors, DeleteVectors)):
            return op.point_id
        if isinstance(op, DeletePoints) and op.ids:
            return op.ids[0]
    return None


def estimated_bytes(op: Operation) -> int:
    """About how many request bytes ``op`` takes (JSON), to keep requests under the server's limit."""
    if isinstance(op, Upsert):
        return sum(op.batch.point_sizes())
    if isinstance(op, SetPayload):
        return 64 + len(json.dumps(op.payload, default=str))
    if isinstance(op, UpdateVectors):
        return 64 + sum(20 * len(v.indices) if isinstance(v, SparseValue) else 12 * len(v)
                        for v in op.vectors.values())
    if isinstance(op, DeletePoints):
        return 64 + 40 * len(op.ids)
    return 64
