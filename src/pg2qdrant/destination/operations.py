"""Target-neutral write operations, applied in order by ``target.apply(collection, ops)``.

The copy only upserts whole points; keeping Qdrant in sync also needs partial
changes (an UPDATE whose vector arrived as "unchanged TOAST" must not touch
the vector), deletes and a TRUNCATE. Both targets translate these into their
own calls: one ``batch_update_points`` request for qdrant-client (applied in
order by the server), a sequence of update operations for Qdrant Edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pg2qdrant.mapping import PointBatch, PointId


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
