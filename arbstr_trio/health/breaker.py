"""A circuit breaker per provider: a pure state machine, the clock passed in.

    closed --N consecutive failures--> open --open_s elapsed--> half-open
       ^                                 ^                          |
       |                                 +------probe fails---------+
       +----------------probe succeeds--------------------------+---+

In half-open exactly one request, the probe, goes through; every other request skips
the provider rather than waiting on the probe (arbstr made them wait, with no timeout,
on a probe whose permit could leak). A permit is a :class:`Ticket`; each ticket ends in
exactly one of :meth:`succeeded`, :meth:`failed` or :meth:`abandoned` (cancelled with no
verdict, which frees the probe slot), so no path can hold the provider shut.

Failures are what say the *provider* is unwell: connect errors, 5xx, timeouts, broken
streams. A client's 4xx is not one; the caller decides what it reports.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["BreakerState", "CircuitBreaker", "Ticket"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen
class Ticket:
    """Permission for one attempt. ``generation`` ties its verdict to the state it saw."""

    probe: bool
    generation: int


@attrs.define
class CircuitBreaker:
    failure_threshold: int
    open_s: float
    consecutive_failures: int = 0
    opened_at: float | None = None
    probe_in_flight: bool = False
    generation: int = 0
    """Bumped on every open and close, so verdicts of older attempts cannot flip it."""

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if now < self.opened_at + self.open_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def probe_at(self) -> float | None:
        """When an open breaker lets its probe through; ``None`` when closed."""
        return None if self.opened_at is None else self.opened_at + self.open_s

    def acquire(self, now: float) -> Ticket | None:
        """A ticket to try the provider now, or ``None`` to skip it."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return Ticket(probe=False, generation=self.generation)
        if state is BreakerState.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return Ticket(probe=True, generation=self.generation)
        return None

    def succeeded(self, ticket: Ticket, now: float) -> None:
        if ticket.generation != self.generation:
            return  # began before the last open or close: says nothing about now
        self.consecutive_failures = 0
        if ticket.probe:
            self._close()

    def failed(self, ticket: Ticket, now: float) -> None:
        if ticket.generation != self.generation:
            return
        self.consecutive_failures += 1
        if ticket.probe or (
            self.opened_at is None and self.consecutive_failures >= self.failure_threshold
        ):
            self._open(now)

    def abandoned(self, ticket: Ticket) -> None:
        """The attempt was cancelled before it could say anything (hedge lost, client gone)."""
        if ticket.probe and ticket.generation == self.generation:
            self.probe_in_flight = False

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.probe_in_flight = False
        self.generation += 1

    def _close(self) -> None:
        self.opened_at = None
        self.probe_in_flight = False
        self.consecutive_failures = 0
        self.generation += 1
