"""Sync's own small records kept with the target: :class:`_StateStore`.

Shared by both runners: the CDC runner's "initial copy finished" marker
(:mod:`.cdc`) and poll mode's watermark (:mod:`.poll`).
"""

from __future__ import annotations

import json

from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.checkpoints import FileRecords
from pg2qdrant.runtime.target import target_identity

SYNC_NAMESPACE = "pg2qdrant-sync"  # point IDs of sync records


class _StateStore:
    """Sync's own small records (poll watermark, "initial copy finished" marker), kept with the target.

    Next to the collection, like migrate's progress (destination/checkpoints.py), so that a
    new or deleted collection starts over: in ``<--migration.offsets-collection>_sync``
    (a payload-only collection, or a file of that name in an Edge folder), or with
    ``--migration.state-file PATH`` in the file ``PATH.sync.json``. Separate from
    migrate's records, whose readers expect only migration states.

    A record kept in the target belongs to it by where it lives; one in a state file names
    its target (as migrate's state ids do), since the file may serve several targets: a
    marker written for one Qdrant must never answer for another.
    """

    def __init__(self, target, options: MigrationOptions, key: str):
        self.key = key
        self.where: dict | None = None
        if options.state_file:
            self.records = FileRecords(options.state_file + ".sync.json")
            self.where = target_identity(parse_target_url(options.qdrant_url))
            self.key = f"{key}@{json.dumps(self.where, sort_keys=True)}"
        else:
            self.records = target.records(f"{options.offsets_collection}_sync", SYNC_NAMESPACE)

    def load(self) -> dict | None:
        return self.records.load(self.key)

    def save(self, record: dict) -> None:
        self.records.save(self.key, record if self.where is None else {**record, "target": self.where})

    def others(self, **match) -> list[dict]:
        """Records of other targets in the same state file whose fields equal ``match`` (none in a target)."""
        if self.where is None:
            return []
        return [r for r in self.records.records()
                if r.get("target") not in (None, self.where) and all(r.get(k) == v for k, v in match.items())]
