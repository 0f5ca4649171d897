"""The clock a hub reads "now" from, passed down instead of read from a global.

Library code that needs the current instant takes a ``now`` argument or a :class:`Clock`;
the process's edge (``Hub.open``) hands it the :class:`SystemClock`, and tests hand it
a clock they set, so that nothing they check depends on today's date, weekday or the
machine's zone.  Instants are always aware and in UTC; the zone a rule counts days in
(Beijing for the official calendar) is the rule's business, never the machine's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...


class SystemClock:
    """The machine's clock, in UTC whatever the machine's zone (``TZ``) is."""

    def now(self) -> datetime:
        return datetime.now(UTC)
