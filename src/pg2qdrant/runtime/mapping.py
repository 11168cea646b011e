"""The row mapping every flow uses, with what it needs from below core: Qdrant's BM25.

``mapping.RowMapper`` is pure; a plan with ``--qdrant.bm25`` vectors also needs their document
encoder (``qdrant_edge.Bm25``, imported only in destination/). This is the one place that hands it
over, so migrate's workers, sync and verify map a row to the same point.
"""

from __future__ import annotations

from pg2qdrant.core.mapping.batch import RowMapper
from pg2qdrant.core.plan import Plan


def row_mapper(plan: Plan) -> RowMapper:
    if not plan.bm25:
        return RowMapper(plan)
    from pg2qdrant.destination.bm25 import document_encoders
    return RowMapper(plan, document_encoders(plan.bm25))
