"""Durable migration progress, for resume.

Progress is kept **in the target by default**, so a rerun from another machine
resumes: in a vector-less collection (``--migration.offsets-collection``,
default ``_pg2qdrant_state``) for qdrant-client targets, and in a JSON file
inside the ``edge:`` folder for Qdrant Edge. ``--migration.state-file PATH``
keeps it in a local JSON file instead.

One state record per (source system, database, table, collection, plan), and
per target for a ``--migration.state-file`` (a record kept in the target is
tied to it by where it lives; a local file can be reused against another Qdrant
or folder): runs of other tables, collections or targets never touch each
other's records. A record
holds the ranges themselves (so a resumed run reads exactly the same
boundaries) and which ranges are complete. A range is marked complete only
after Qdrant acknowledged every write of it (writes are sent with wait=true).
Nothing secret is stored: no URL, no password.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

STATE_VERSION = 1


@dataclass
class MigrationState:
    state_id: str
    source: dict[str, Any]  # system identifier, database, table (no credentials)
    collection: str
    plan_fingerprint: str
    ranges: list[dict[str, Any]]
    done: dict[str, int] = field(default_factory=dict)  # range index (str for JSON) -> rows
    status: str = "running"  # running | complete
    collection_created: bool = False  # by this migration: HNSW is enabled when it completes
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    version: int = STATE_VERSION
    target: dict[str, Any] = field(default_factory=dict)  # the Qdrant (host, port, prefix) or folder; no credentials

    @property
    def rows_done(self) -> int:
        return sum(self.done.values())

    def mark_done(self, range_index: int, rows: int) -> None:
        self.done[str(range_index)] = rows
        self.updated_at = time.time()

    def is_done(self, range_index: int) -> bool:
        return str(range_index) in self.done

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MigrationState:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def state_id_for(source: dict[str, Any], collection: str, plan_fingerprint: str,
                 target: dict[str, Any] | None = None) -> str:
    """The record's key; ``target`` for records kept outside the target (a state file)."""
    key: dict[str, Any] = {"source": source, "collection": collection, "plan": plan_fingerprint}
    if target is not None:
        key["target"] = target
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RecordStore(Protocol):
    """JSON records by key, kept with the target (or in a local file)."""

    def load(self, key: str) -> dict[str, Any] | None: ...
    def save(self, key: str, record: dict[str, Any]) -> None: ...
    def records(self) -> list[dict[str, Any]]: ...
    def delete(self, key: str) -> bool: ...
    def describe(self) -> str: ...


class CollectionRecords:
    """Records as payload-only points of a vector-less collection (qdrant-client targets).

    Each record is stored as one JSON string, so it reads back exactly as written;
    the point ID is uuid5 of ``namespace:key``.
    """

    def __init__(self, client, collection: str, namespace: str):
        self.client = client  # a qdrant_client.QdrantClient
        self.collection = collection
        self.namespace = namespace
        self._page: int | None = None  # scroll page size, read from the state collection on first listing

    def describe(self) -> str:
        return f"collection {self.collection!r} in the target"

    def _point_id(self, key: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.namespace}:{key}"))

    def load(self, key: str) -> dict[str, Any] | None:
        if not self.client.collection_exists(self.collection):
            return None
        found = self.client.retrieve(self.collection, [self._point_id(key)], with_payload=True)
        return json.loads(found[0].payload["record"]) if found else None

    def save(self, key: str, record: dict[str, Any]) -> None:
        from qdrant_client import models
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(self.collection, vectors_config={})
        self.client.upsert(self.collection, [models.PointStruct(
            id=self._point_id(key), vector={}, payload={"key": key, "record": json.dumps(record)})], wait=True)

    def records(self) -> list[dict[str, Any]]:
        if not self.client.collection_exists(self.collection):
            return []
        if self._page is None:  # read once per store: the state collection's strict mode does not change
            strict = self.client.get_collection(self.collection).config.strict_mode_config
            limit = strict.max_query_limit if strict is not None and strict.enabled else None
            self._page = min(100, limit) if limit else 100  # strict mode refuses a longer page
        out, offset = [], None
        while True:
            found, offset = self.client.scroll(self.collection, limit=self._page, offset=offset, with_payload=True)
            out += [json.loads(r.payload["record"]) for r in found]
            if offset is None:
                return out

    def delete(self, key: str) -> bool:
        from qdrant_client import models
        if self.load(key) is None:
            return False
        self.client.delete(self.collection, points_selector=models.PointIdsList(points=[self._point_id(key)]),
                           wait=True)
        return True


class FileRecords:
    """Records in one JSON file ``{key: record}``, replaced atomically (temp file, fsync, rename)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def describe(self) -> str:
        return f"file {self.path}"

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text() or "{}")

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self, key: str) -> dict[str, Any] | None:
        return self._read().get(key)

    def save(self, key: str, record: dict[str, Any]) -> None:
        data = self._read()
        data[key] = record
        self._write(data)

    def records(self) -> list[dict[str, Any]]:
        return list(self._read().values())

    def delete(self, key: str) -> bool:
        data = self._read()
        if data.pop(key, None) is None:
            return False
        self._write(data)
        return True


class StateStore:
    """Migration states (MigrationState) on top of a record store."""

    def __init__(self, records: RecordStore):
        self.records = records

    def describe(self) -> str:
        return self.records.describe()

    def load(self, state_id: str) -> MigrationState | None:
        data = self.records.load(state_id)
        return MigrationState.from_json(data) if data else None

    def save(self, state: MigrationState) -> None:
        self.records.save(state.state_id, state.to_json())

    def list(self) -> list[MigrationState]:
        return [MigrationState.from_json(r) for r in self.records.records()]

    def delete(self, state_id: str) -> bool:
        return self.records.delete(state_id)


STATE_NAMESPACE = "pg2qdrant-state"  # point IDs of migration records
