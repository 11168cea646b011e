"""What every sync runner (CDC, poll) holds: its options, the stop event, the stats, the target."""

from __future__ import annotations

import threading

from pg2qdrant.pipeline import MigrationOptions
from pg2qdrant.plan import Plan
from pg2qdrant.sync.options import SyncOptions, SyncStats
from pg2qdrant.ui import UI


class Runner:
    """Base of CdcSync and PollSync: run_sync calls prepare(), run(), then close()."""

    def __init__(self, options: MigrationOptions, sync_options: SyncOptions, ui: UI, stop: threading.Event,
                 stats: SyncStats):
        self.options = options
        self.sync = sync_options
        self.ui = ui
        self.stop = stop
        self.stats = stats
        self.plan: Plan | None = None
        self.target = None

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None
