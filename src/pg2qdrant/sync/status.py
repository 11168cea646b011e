"""Stop signals and status: :class:`_StopSignals` (SIGTERM / Ctrl-C) and :class:`StatusLine` (rate, lag)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from pg2qdrant.source.lsn import format_lsn
from pg2qdrant.sync.options import LAG_WARN_BYTES, LAG_WARN_EVERY_S, LAG_WARN_SECONDS, SyncStats, _mib
from pg2qdrant.ui import UI


class _StopSignals:
    """SIGTERM / Ctrl-C set ``stop``: the loop applies what it holds, acknowledges, and exits.

    A second Ctrl-C interrupts at once (the slot still holds everything not acknowledged).
    Only the main thread can install handlers; elsewhere (tests, an embedding app) the
    caller's ``stop`` event is the way to stop.
    """

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class StatusLine:
    """changes/s, lag in bytes and seconds: a live line on a terminal, a plain line now and then otherwise."""

    def __init__(self, ui: UI, stats: SyncStats, every_s: float, what: str):
        self.ui = ui
        self.stats = stats
        self.every_s = every_s
        self.what = what
        self.live = ui.err.is_terminal and not ui.quiet
        self._status = None
        self._last = time.monotonic()
        self._last_changes = 0
        self._last_warn = 0.0
        self._interval_rate = 0.0

    def __enter__(self) -> StatusLine:
        if self.live:
            self._status = self.ui.err.status(self.text())
            self._status.__enter__()
        return self

    def text(self) -> str:
        s = self.stats
        lag = f"lag {_mib(s.lag_bytes)}, {s.last_latency:.2f} s" if self.what == "cdc" else \
            f"watermark {s.watermark or '-'}"
        return (f"sync: {s.changes:,} changes applied ({self._interval_rate:,.0f}/s), {lag}"
                + (f", confirmed LSN {format_lsn(s.acked_lsn)}" if self.what == "cdc" else ""))

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.5 if self.live else self.every_s):
            return
        self._interval_rate = (self.stats.changes - self._last_changes) / max(now - self._last, 1e-9)
        self._last, self._last_changes = now, self.stats.changes
        if self._status is not None:
            self._status.update(self.text())
        elif not self.ui.quiet:
            self.ui.info(self.text())
        s = self.stats
        if (s.lag_bytes > LAG_WARN_BYTES or s.last_latency > LAG_WARN_SECONDS) and \
                now - self._last_warn > LAG_WARN_EVERY_S:
            self._last_warn = now
            self.ui.warn(f"sync is behind by {_mib(s.lag_bytes)} ({s.last_latency:,.0f} s): PostgreSQL keeps that "
                         "WAL until it is applied. Check Qdrant's write speed (--migration.batch-size), and see "
                         "`pg2qdrant sync status`.")

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
