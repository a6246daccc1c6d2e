"""The circuit breaker as a pure state machine: every transition at an exact time."""

from __future__ import annotations

from arbstr_trio.health.breaker import BreakerState, CircuitBreaker, Ticket


def tripped(at: float = 10.0) -> CircuitBreaker:
    """A breaker (threshold 3, open 30 s) opened by three failures at ``at``."""
    breaker = CircuitBreaker(failure_threshold=3, open_s=30.0)
    for _ in range(3):
        ticket = breaker.acquire(at)
        assert ticket is not None
        breaker.failed(ticket, at)
    return breaker


def probe(breaker: CircuitBreaker, now: float) -> Ticket:
    ticket = breaker.acquire(now)
    assert ticket == Ticket(probe=True, generation=breaker.generation)
    return ticket


def test_closed_breaker_hands_out_plain_tickets() -> None:
    breaker = CircuitBreaker(failure_threshold=3, open_s=30.0)
    assert breaker.state(0.0) is BreakerState.CLOSED
    assert breaker.acquire(0.0) == Ticket(probe=False, generation=0)
    assert breaker.acquire(0.0) == Ticket(probe=False, generation=0)
    assert breaker.probe_at() is None


def test_opens_on_the_nth_consecutive_failure_not_before() -> None:
    breaker = CircuitBreaker(failure_threshold=3, open_s=30.0)
    ticket = Ticket(probe=False, generation=0)
    breaker.failed(ticket, 1.0)
    breaker.failed(ticket, 2.0)
    assert breaker.state(2.0) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2
    breaker.failed(ticket, 3.0)
    assert breaker.state(3.0) is BreakerState.OPEN
    assert breaker.opened_at == 3.0
    assert breaker.probe_at() == 33.0
    assert breaker.acquire(3.0) is None


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, open_s=30.0)
    ticket = Ticket(probe=False, generation=0)
    breaker.failed(ticket, 1.0)
    breaker.failed(ticket, 2.0)
    breaker.succeeded(ticket, 3.0)
    assert breaker.consecutive_failures == 0
    breaker.failed(ticket, 4.0)
    breaker.failed(ticket, 5.0)
    assert breaker.state(5.0) is BreakerState.CLOSED


def test_half_open_exactly_at_open_s() -> None:
    breaker = tripped(at=10.0)
    assert breaker.state(39.999) is BreakerState.OPEN
    assert breaker.acquire(39.999) is None
    assert breaker.state(40.0) is BreakerState.HALF_OPEN


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker = tripped(at=10.0)
    probe(breaker, 40.0)
    assert breaker.probe_in_flight
    assert breaker.acquire(40.0) is None
    assert breaker.acquire(1000.0) is None  # however long the probe takes


def test_probe_success_closes() -> None:
    breaker = tripped(at=10.0)
    generation = breaker.generation
    breaker.succeeded(probe(breaker, 40.0), 41.0)
    assert breaker.state(41.0) is BreakerState.CLOSED
    assert breaker.opened_at is None
    assert breaker.probe_at() is None
    assert breaker.consecutive_failures == 0
    assert breaker.acquire(41.0) == Ticket(probe=False, generation=generation + 1)


def test_probe_failure_reopens_from_the_failure_time() -> None:
    breaker = tripped(at=10.0)
    breaker.failed(probe(breaker, 40.0), 45.0)
    assert breaker.opened_at == 45.0
    assert breaker.probe_at() == 75.0
    assert breaker.state(74.0) is BreakerState.OPEN
    assert not breaker.probe_in_flight
    assert breaker.state(75.0) is BreakerState.HALF_OPEN
    probe(breaker, 75.0)


def test_abandoned_probe_frees_the_slot_for_another() -> None:
    breaker = tripped(at=10.0)
    breaker.abandoned(probe(breaker, 40.0))
    assert not breaker.probe_in_flight
    assert breaker.state(40.0) is BreakerState.HALF_OPEN
    probe(breaker, 40.0)


def test_abandoned_plain_ticket_changes_nothing() -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_s=30.0)
    breaker.abandoned(Ticket(probe=False, generation=0))
    assert breaker.consecutive_failures == 0
    assert breaker.state(0.0) is BreakerState.CLOSED


def test_stale_failure_cannot_reopen_a_closed_breaker() -> None:
    """A slow request that began before the breaker opened must not count after it closed."""
    breaker = CircuitBreaker(failure_threshold=1, open_s=30.0)
    slow = breaker.acquire(0.0)
    trip = breaker.acquire(0.0)
    assert slow is not None
    assert trip is not None
    breaker.failed(trip, 1.0)
    breaker.succeeded(probe(breaker, 31.0), 32.0)
    breaker.failed(slow, 33.0)
    assert breaker.state(33.0) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


def test_stale_success_cannot_close_an_open_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_s=30.0)
    slow = breaker.acquire(0.0)
    trip = breaker.acquire(0.0)
    assert slow is not None
    assert trip is not None
    breaker.failed(trip, 1.0)
    breaker.succeeded(slow, 2.0)
    assert breaker.state(2.0) is BreakerState.OPEN
    assert breaker.opened_at == 1.0


def test_stale_probe_cannot_free_a_newer_probe_slot() -> None:
    breaker = tripped(at=10.0)
    old_probe = probe(breaker, 40.0)
    breaker.failed(old_probe, 41.0)  # reopened: generation moved on
    new_probe = probe(breaker, 71.0)
    breaker.abandoned(old_probe)
    breaker.succeeded(old_probe, 72.0)
    assert breaker.probe_in_flight
    assert breaker.acquire(72.0) is None
    breaker.succeeded(new_probe, 73.0)
    assert breaker.state(73.0) is BreakerState.CLOSED
