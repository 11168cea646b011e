"""What the flows need from a Qdrant target: the Target protocol and the capabilities it declares.

Callers read a target's capabilities (one writer process or several, requests in
flight, request size bound, HNSW, payload indexes, wire encoding) instead of
checking what kind of target it is, so a new target is one class that declares
what it can do. Targets see the collection only as a CollectionSpec: no table,
no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.plan import CollectionShape, CollectionSpec
from pg2qdrant.destination import operations as ops


@dataclass(frozen=True)
class Capabilities:
    """What a target can do, declared by the target itself."""

    # Runs inside this process and locks its folder: one writer process, so reader workers
    # hand their batches to the coordinator instead of writing themselves.
    in_process: bool
    max_in_flight: int  # concurrent write requests worth sending
    max_request_bytes: int | None  # bound on one write request's estimated size; None: no network request
    hnsw: bool  # builds HNSW indexes (False: every search is exhaustive, as in qdrant-client's local mode)
    payload_indexes: bool  # creates the payload indexes of the spec
    encodes_wire: bool  # encode() turns a batch into its request bytes once; the writer sizes requests by them


@dataclass(frozen=True)
class StrictMode:
    """A collection's strict-mode limits that bind what pg2qdrant sends (None: no limit), as the
    server reports them (``config.strict_mode_config`` with ``enabled: true``), and the payload
    indexes it has (field -> type)."""

    upsert_max_batchsize: int | None = None
    write_rate_limit: int | None = None  # per minute; a request costs its points
    max_query_limit: int | None = None
    max_payload_index_count: int | None = None
    unindexed_filtering_update: bool = True
    unindexed_filtering_retrieve: bool = True
    indexed: tuple[tuple[str, str], ...] = ()

    def points_per_request(self) -> int | None:
        """The most points one write request may carry: the upsert limit, and the write rate
        limit's bucket (a request costing more than it is refused, not delayed)."""
        limits = [n for n in (self.upsert_max_batchsize, self.write_rate_limit) if n]
        return min(limits) if limits else None

    def limit_name(self) -> str:
        if self.upsert_max_batchsize and self.upsert_max_batchsize == self.points_per_request():
            return f"upsert_max_batchsize={self.upsert_max_batchsize}"
        return f"write_rate_limit={self.write_rate_limit}/min"


class Target(Protocol):
    """One Qdrant (server, local mode or Edge folder) holding collections."""

    capabilities: Capabilities
    retries: int  # transient failures retried so far (reported in the summary)

    def check_reachable(self) -> None: ...
    def shape(self, collection: str) -> CollectionShape | None: ...
    def create_collection(self, spec: CollectionSpec) -> None: ...
    def finish_load(self, spec: CollectionSpec, created: bool) -> None: ...
    def records(self, collection: str, namespace: str) -> Any: ...
    def delete_collection(self, collection: str) -> None: ...
    def encode(self, batch: PointBatch) -> PointBatch: ...
    def upsert(self, collection: str, batch: PointBatch, *, wait: bool = True) -> None: ...
    def apply(self, collection: str, operations: list[ops.Operation], *, wait: bool = True) -> None: ...
    def count(self, collection: str) -> int: ...
    def retrieve(self, collection: str, ids: list, *, with_vectors: bool = True) -> list: ...
    def scroll(self, collection: str, *, batch: int = 1000, with_vectors: bool = False,
               with_payload: bool | list[str] = True) -> Iterator[Any]: ...
    def search(self, collection: str, vector_name: str, query: Any, limit: int, *,
               exact: bool) -> list[tuple[Any, float]]: ...
    def index_status(self, collection: str) -> tuple[int, int, bool]: ...
    def delete_points(self, collection: str, ids: Iterable) -> None: ...
    def strict_mode(self, collection: str) -> StrictMode | None: ...
    def close(self) -> None: ...
