"""Retrying transient failures: exponential backoff with jitter, bounded by count and by time.

Only failures classified as transient are retried (a server restarting, a
rate limit, a dropped connection); permanent ones (bad input, rejected
credentials) stop at once with the server's message.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger("pg2qdrant.retry")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # --migration.max-retries
    deadline_s: float = 300.0  # --migration.retry-deadline: total time spent retrying one call
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (spreads retries of many workers)."""
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * (2 ** attempt)))


def call_with_retries(fn: Callable[[], T], *, policy: RetryPolicy, is_transient: Callable[[BaseException], bool],
                      what: str, on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """Call ``fn``; retry transient failures per ``policy``; re-raise the last failure otherwise."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt >= policy.max_retries:
                raise
            delay = max(policy.delay(attempt), float(getattr(exc, "retry_after_s", 0) or 0))
            if time.monotonic() - started + delay > policy.deadline_s:
                raise
            attempt += 1
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__, exc, attempt,
                        policy.max_retries, delay)
            if on_retry:
                on_retry(attempt, exc, delay)
            time.sleep(delay)
