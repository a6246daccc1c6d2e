"""Strategies: the order a request's candidates are tried in, first try and fallback alike.

The engine walks candidates in the order it is given, so a strategy is only a sort:

* ``cheapest``: by the request's estimated cost, then name (the default).
* ``ordered``: as configured (providers in file order; a chain's entries in its order),
  429chain's waterfall.
* ``round_robin``: the configured order, rotated by one on every request to the same
  route, so load spreads evenly and fallback still reaches everyone.
* ``lowest_latency``: by an exponentially weighted moving average of time to first
  byte per provider and model. Providers never observed go first (cheapest first among
  them): without that, one slow first sample would leave a provider unmeasured forever.

The state here (latencies seen, rotation counters) is plain memory on the runtime: it
is a routing hint, rebuilt within a few requests after a restart, not worth a disk.
No I/O and no clock: observations carry their own durations.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import attrs

from arbstr_trio.config.models import Strategy
from arbstr_trio.routing import Candidate, by_cost

__all__ = ["LatencyTracker", "Rotation", "RouteState", "order_candidates"]

DEFAULT_ALPHA = 0.3
"""Weight of the newest sample: a provider that slows down is noticed in a few requests,
one slow answer does not overturn the ranking."""


class LatencyTracker:
    """Exponentially weighted moving average of time to first byte, per provider and model."""

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._average: dict[tuple[str, str], float] = {}

    def observe(self, provider: str, model: str, seconds: float) -> None:
        key = (provider, model)
        previous = self._average.get(key)
        if previous is None:
            self._average[key] = seconds
        else:
            self._average[key] = previous + self.alpha * (seconds - previous)

    def estimate(self, provider: str, model: str) -> float | None:
        """The average so far, in seconds; None if this pair has never answered."""
        return self._average.get((provider, model))


class Rotation:
    """A counter per route, advanced once per request, for round robin."""

    def __init__(self) -> None:
        self._next: dict[Hashable, int] = {}

    def offset(self, key: Hashable, size: int, *, advance: bool = True) -> int:
        """Where this request's rotation starts among ``size`` candidates."""
        if size <= 0:
            return 0
        turn = self._next.get(key, 0)
        if advance:
            self._next[key] = turn + 1
        return turn % size


@attrs.define
class RouteState:
    """What strategies remember between requests; one per running proxy."""

    latency: LatencyTracker = attrs.field(factory=LatencyTracker)
    rotation: Rotation = attrs.field(factory=Rotation)


def order_candidates(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    state: RouteState,
    *,
    route_key: Hashable,
    advance: bool = True,
) -> list[Candidate]:
    """``candidates`` (given in config order) in the order ``strategy`` tries them.

    ``route_key`` names the rotation round robin advances (the policy or chain, and
    the model); ``advance=False`` looks without moving it, for estimates.
    """
    if strategy is Strategy.ORDERED:
        return list(candidates)
    if strategy is Strategy.ROUND_ROBIN:
        start = state.rotation.offset(route_key, len(candidates), advance=advance)
        return [*candidates[start:], *candidates[:start]]
    if strategy is Strategy.LOWEST_LATENCY:
        return _by_latency(candidates, state.latency)
    return by_cost(candidates)


def _by_latency(candidates: Sequence[Candidate], latency: LatencyTracker) -> list[Candidate]:
    def key(candidate: Candidate) -> tuple[bool, float, int, str]:
        seen = latency.estimate(candidate.name, candidate.upstream_model)
        return (
            seen is not None,
            0.0 if seen is None else seen,
            candidate.estimated_cost_msat,
            candidate.name,
        )

    return sorted(candidates, key=key)
