"""The portal breaker: whether the portal is reachable at all, and when to ask again. Pure.

While the portal is down (no connection, 503 pages, answers lost on the way), trying the
backlog submission by submission spends their attempts and the operator's patience for
nothing. The breaker opens on such a failure; the worker then sends one cheap probe at a
growing interval instead, and when the portal answers, the breaker closes and the whole
backlog is due at once. Per-submission backoff stays for errors about a submission.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.bitrix import BitrixError, OutcomeUnknown, Unavailable, Unreachable

# The error labels of "nothing ran: the portal as a whole could not take it": submissions that
# failed only so are released at once when the portal answers again.
PORTAL_DOWN_LABELS = ("Unreachable", "Unavailable", "OVERLOAD_LIMIT", "QUERY_LIMIT_EXCEEDED")


def portal_down(error: BitrixError | None) -> bool:
    """A failure of the portal as a whole, not of one submission."""
    if isinstance(error, Unreachable | Unavailable):
        return True
    return isinstance(error, OutcomeUnknown) and not error.settled


@dataclass(slots=True)
class Breaker:
    """Closed: deliver. Open: probe at `next_probe_at`, the interval doubling from
    `first_probe_seconds` up to `max_probe_seconds` (with jitter)."""

    first_probe_seconds: float = 0.5
    max_probe_seconds: float = 2.0
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    probes: int = 0
    last_error: str | None = None

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def trip(self, error: BitrixError, *, now: datetime, rng: random.Random) -> None:
        """The portal is down (again): probe later."""
        if self.opened_at is None:
            self.opened_at = now
            self.probes = 0
        ceiling = min(self.max_probe_seconds, self.first_probe_seconds * 2**self.probes)
        self.next_probe_at = now + timedelta(seconds=rng.uniform(ceiling / 2, ceiling))
        self.probes += 1
        self.last_error = error.label

    def probe_due(self, now: datetime) -> bool:
        return self.next_probe_at is not None and now >= self.next_probe_at

    def close(self) -> None:
        self.opened_at = self.next_probe_at = self.last_error = None
        self.probes = 0

    def snapshot(self) -> dict[str, object]:
        """For /readyz and the dashboard."""
        if self.opened_at is None:
            return {"state": "closed"}
        return {
            "state": "open",
            "since": self.opened_at.isoformat(),
            "next_probe_at": self.next_probe_at.isoformat() if self.next_probe_at else None,
            "probes": self.probes,
            "last_error": self.last_error,
        }
