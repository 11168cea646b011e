"""Sync's own small records kept with the target: :class:`_StateStore`.

Shared by both runners: the CDC runner's "initial copy finished" marker
(:mod:`.cdc`) and poll mode's watermark (:mod:`.poll`).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from pg2qdrant.pipeline import MigrationOptions
from pg2qdrant.target.qdrant import parse_target_url


class _StateStore:
    """Sync's own small records (poll watermark, "initial copy finished" marker), kept with the target.

    Next to the collection, like migrate's progress (target/checkpoints.py), so that a
    new or deleted collection starts over: qdrant-client targets (server, local,
    :memory:) use the payload-only collection ``<--migration.offsets-collection>_sync``,
    an Edge folder the file ``<offsets collection>_sync.json`` in it, and
    ``--migration.state-file PATH`` the file ``PATH.sync.json``. Separate from
    migrate's records, whose readers expect only migration states.
    """

    def __init__(self, target, options: MigrationOptions, key: str):
        self.target = target
        self.key = key
        self.point_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "pg2qdrant-sync:" + key))
        name = f"{options.offsets_collection}_sync"
        self.collection = name
        self.file: Path | None = None
        if options.state_file:
            self.file = Path(options.state_file + ".sync.json")
        elif parse_target_url(options.qdrant_url).kind == "edge":
            self.file = Path(parse_target_url(options.qdrant_url).path) / f"{name}.json"

    def _read_file(self) -> dict:
        return json.loads(self.file.read_text() or "{}") if self.file.exists() else {}

    def load(self) -> dict | None:
        if self.file is not None:
            return self._read_file().get(self.key)
        client = self.target.client
        if not client.collection_exists(self.collection):
            return None
        records = client.retrieve(self.collection, [self.point_id], with_payload=True)
        return json.loads(records[0].payload["record"]) if records else None

    def save(self, record: dict) -> None:
        if self.file is not None:
            data = self._read_file()
            data[self.key] = record
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(self.file.name + ".tmp")
            with open(tmp, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file)
            return
        from qdrant_client import models
        client = self.target.client
        if not client.collection_exists(self.collection):
            client.create_collection(self.collection, vectors_config={})
        client.upsert(self.collection, points=[models.PointStruct(
            id=self.point_id, vector={}, payload={"key": self.key, "record": json.dumps(record)})], wait=True)
