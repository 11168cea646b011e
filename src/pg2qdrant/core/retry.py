"""Retrying transient failures: exponential backoff, the one place its pauses are computed.

- :func:`call_with_retries` (with :class:`RetryPolicy`): one call, retried with jitter,
  bounded by count and by time. Only failures classified as transient are retried (a
  server restarting, a rate limit, a dropped connection); permanent ones (bad input,
  rejected credentials) stop at once with the server's message.
- :class:`Backoff`: the pauses of loops that retry until stopped (sync's reconnects),
  reset once the loop makes progress again.
- :func:`pause`: the pause before a numbered attempt (a reader re-reading a range).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("pg2qdrant.core.retry")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # --migration.max-retries
    deadline_s: float = 300.0  # --migration.retry-deadline: total time spent retrying one call
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (spreads retries of many workers)."""
        return random.uniform(0, pause(attempt, self.base_delay_s, self.max_delay_s))


def pause(attempt: int, start_s: float, max_s: float) -> float:
    """The pause before retry number ``attempt + 1``: ``start_s`` doubled per attempt, at most ``max_s``."""
    return min(max_s, start_s * 2.0 ** min(attempt, 60))  # bounded exponent: a float, never an overflow


class Backoff:
    """Pauses for a loop that retries until stopped: :func:`pause` of the failures since the last
    :meth:`reset` (the loop calls that once it makes progress again)."""

    def __init__(self, start_s: float, max_s: float):
        self.start_s, self.max_s = start_s, max_s
        self.failures = 0

    def next(self) -> float:
        """The pause before the next try (counts one more failure)."""
        delay = pause(self.failures, self.start_s, self.max_s)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def call_with_retries(fn: Callable[[], T], *, policy: RetryPolicy, is_transient: Callable[[BaseException], bool],
                      what: str, on_retry: Callable[[int, BaseException, float], None] | None = None,
                      failed: BaseException | None = None, started: float | None = None) -> T:
    """Call ``fn``; retry transient failures per ``policy``; re-raise the last failure otherwise.
    ``failed``: the error of a first attempt already made elsewhere (begun at ``started``, by
    time.monotonic()): handled as if ``fn`` had just raised it, the deadline counting from then."""
    started = time.monotonic() if started is None else started
    attempt = 0
    while True:
        if failed is None:
            try:
                return fn()
            except Exception as exc:
                failed = exc
        exc, failed = failed, None
        if not is_transient(exc) or attempt >= policy.max_retries:
            raise exc
        delay = max(policy.delay(attempt), float(getattr(exc, "retry_after_s", 0) or 0))
        if time.monotonic() - started + delay > policy.deadline_s:
            raise exc
        attempt += 1
        log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__, exc, attempt,
                    policy.max_retries, delay)
        if on_retry:
            on_retry(attempt, exc, delay)
        time.sleep(delay)
