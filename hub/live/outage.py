"""Retrying a dependency that fails and comes back (the event log's server, the catalog
database): a jittered backoff and an outage that is reported once, not once per retry."""

from __future__ import annotations

import logging
import random
import time

log = logging.getLogger(__name__)


def backoff_s(failures: int, base: float, cap: float) -> float:
    """How long to wait after ``failures`` failures in a row: doubling from ``base`` up to
    ``cap``, times a random factor in [0.5, 1.5) so that many processes (or subscribers)
    that lost the same server do not come back at the same instant."""
    return float(min(cap, base * 2 ** max(0, failures - 1)) * (0.5 + random.random()))


class Outage:
    """The state of a dependency that fails and comes back: one warning when it starts,
    one every ``every_s`` while it lasts, one when it ends (never one per retry)."""

    def __init__(self, what: str, every_s: float = 30.0) -> None:
        self.what, self.every_s = what, every_s
        self.failures = 0
        self._since = 0.0
        self._said = 0.0

    def failed(self, err: BaseException) -> None:
        now = time.monotonic()
        self.failures += 1
        if self.failures == 1:
            self._since = self._said = now
            log.warning("%s unavailable (%s); retrying with backoff", self.what, err)
        elif now - self._said >= self.every_s:
            self._said = now
            log.warning(
                "%s still unavailable after %.0f s and %d attempts (%s)",
                self.what,
                now - self._since,
                self.failures,
                err,
            )

    def ok(self) -> None:
        if self.failures:
            log.warning(
                "%s available again after %.1f s (%d failed attempts)",
                self.what,
                time.monotonic() - self._since,
                self.failures,
            )
            self.failures = 0
