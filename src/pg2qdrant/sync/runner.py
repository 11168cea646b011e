"""What every sync runner (CDC, poll) holds: its options, the stop event, the stats, the target."""

from __future__ import annotations

import threading

from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.core.plan import Plan
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.runtime.observability import NullObserver
from pg2qdrant.runtime.session import open_source
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
        self.observer = NullObserver()  # --metrics-port: observability.SyncObserver

    def _plan(self):
        """(target address, plan): the input checks and the plan every run starts with.

        The plan's snapshot is only for planning here, so rows are not counted.
        """
        self.options.validate()
        address = parse_target_url(self.options.qdrant_url)
        session = open_source(self.options, self.ui, count=False)
        session.close()
        return address, session.plan

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None
