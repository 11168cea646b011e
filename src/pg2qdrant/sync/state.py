"""Sync's own small records kept with the target: :class:`_StateStore`.

Shared by both runners: the CDC runner's "initial copy finished" marker
(:mod:`.cdc`) and poll mode's watermark (:mod:`.poll`).
"""

from __future__ import annotations

from pg2qdrant.destination.checkpoints import FileRecords
from pg2qdrant.pipeline import MigrationOptions

SYNC_NAMESPACE = "pg2qdrant-sync"  # point IDs of sync records


class _StateStore:
    """Sync's own small records (poll watermark, "initial copy finished" marker), kept with the target.

    Next to the collection, like migrate's progress (destination/checkpoints.py), so that a
    new or deleted collection starts over: in ``<--migration.offsets-collection>_sync``
    (a payload-only collection, or a file of that name in an Edge folder), or with
    ``--migration.state-file PATH`` in the file ``PATH.sync.json``. Separate from
    migrate's records, whose readers expect only migration states.
    """

    def __init__(self, target, options: MigrationOptions, key: str):
        self.key = key
        if options.state_file:
            self.records = FileRecords(options.state_file + ".sync.json")
        else:
            self.records = target.records(f"{options.offsets_collection}_sync", SYNC_NAMESPACE)

    def load(self) -> dict | None:
        return self.records.load(self.key)

    def save(self, record: dict) -> None:
        self.records.save(self.key, record)
