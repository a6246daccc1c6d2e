"""The proxy's view of every provider's health, and the permits attempts run under.

An attempt may only start with a :class:`Permit`: it holds the breaker's ticket, a
slot against the provider's manual limits, and the tokens it was counted for. The
permit is settled exactly once, with what happened (success, failure, rate limited,
the client's mistake, or abandoned), and that one call updates the breaker, the
cooldowns and the limits together, so no outcome can leave a probe or a concurrency
slot held. Settling also wakes anyone waiting for capacity.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from arbstr_trio.config.models import Config, ProviderConfig
from arbstr_trio.health.breaker import BreakerState, CircuitBreaker, Ticket
from arbstr_trio.health.ratelimits import ManualLimits, ModelLimits

__all__ = ["BlockReason", "Blocked", "HealthBoard", "HealthListener", "Permit", "Verdict"]


class Verdict(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    """The provider is unwell: counts toward opening its breaker."""
    RATE_LIMITED = "rate_limited"
    """A 429: a cooldown, not ill health."""
    CLIENT_ERROR = "client_error"
    """The provider answered properly that the request was wrong: it is healthy."""
    ABANDONED = "abandoned"
    """Cancelled before any verdict (hedge lost, client gone, deadline)."""


class BlockReason(enum.Enum):
    BREAKER_OPEN = "breaker_open"
    COOLDOWN = "cooldown"
    RATE_LIMIT = "rate_limit"
    BUSY = "busy"


@attrs.frozen
class Blocked:
    provider: str
    reason: BlockReason
    until: float
    """Monotonic time it may be tried again; ``inf`` when only a release will free it."""


class HealthListener(Protocol):
    """Told, synchronously and at once, of the changes a settled permit makes (the live
    feed). Changes that only the clock makes (an open breaker turning half-open, a
    cooldown running out) are not reported here: the listener times those itself."""

    def breaker_changed(self, provider: str, before: BreakerState, after: BreakerState) -> None:
        """``provider``'s breaker went from ``before`` to ``after`` (never equal)."""

    def cooldown_started(self, provider: str, model: str, until: float, reason: str) -> None:
        """A 429 (re)started a cooldown lasting to ``until`` (the board's clock);
        ``reason``: ``retry_after``, ``ratelimit_reset`` or ``default``."""


@attrs.define
class Permit:
    provider: str
    model: str
    tokens: int
    ticket: Ticket
    _board: HealthBoard
    settled: bool = False
    acquired_at: float = attrs.field(kw_only=True)
    """When the tokens were counted: a correction at settle goes to the same window bucket."""

    def observe(self, headers: Mapping[str, str]) -> None:
        """Any response's ``x-ratelimit-*`` headers, success or not."""
        self._board.model_limits(self.provider, self.model).observe(
            headers, self._board.now(), self._board.wall_now()
        )

    def settle(
        self,
        verdict: Verdict,
        *,
        headers: Mapping[str, str] | None = None,
        actual_tokens: int | None = None,
    ) -> None:
        """Record how the attempt ended. Later calls are ignored, so ``finally`` can settle
        as abandoned whatever happened before."""
        if self.settled:
            return
        self.settled = True
        self._board.settle(self, verdict, headers or {}, actual_tokens)


class HealthBoard:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.now = clock
        self.wall_now = wall_clock
        self._default_cooldown_s = config.ratelimit.default_cooldown_ms / 1000
        self._breakers = {
            p.name: CircuitBreaker(config.breaker.failure_threshold, config.breaker.open_ms / 1000)
            for p in config.providers
        }
        self._manual = {p.name: _manual_limits(p) for p in config.providers}
        self._limit_settings = {p.name: _limit_settings(p) for p in config.providers}
        self._models: dict[tuple[str, str], ModelLimits] = {}
        self._capacity_freed = trio.Event()
        self.listener: HealthListener | None = None
        """Told of breaker changes and cooldowns as settling makes them (the live feed)."""

    def reconfigure(self, config: Config) -> None:
        """Take on a new configuration: a provider that stays keeps its breaker, its
        learned limits and (unless its own limits changed) its counters; a new one starts
        fresh. A removed provider's state is kept, so its in-flight permits still settle.
        """
        self._default_cooldown_s = config.ratelimit.default_cooldown_ms / 1000
        for provider in config.providers:
            if provider.name not in self._breakers:
                self._breakers[provider.name] = CircuitBreaker(
                    config.breaker.failure_threshold, config.breaker.open_ms / 1000
                )
            settings = _limit_settings(provider)
            if self._limit_settings.get(provider.name) != settings:
                self._manual[provider.name] = _manual_limits(provider)
                self._limit_settings[provider.name] = settings

    def model_limits(self, provider: str, model: str) -> ModelLimits:
        key = (provider, model)
        limits = self._models.get(key)
        if limits is None:
            limits = self._models[key] = ModelLimits()
        return limits

    def acquire(self, provider: str, model: str, tokens: int) -> Permit | Blocked:
        """A permit to try ``provider`` now, or why not and until when."""
        blocked = self.blocked(provider, model, tokens)
        if blocked is not None:
            return blocked
        now = self.now()
        ticket = self._breakers[provider].acquire(now)
        assert ticket is not None  # checked by blocked(): closed, or half-open with no probe out
        self._manual[provider].acquire(now, tokens)
        self.model_limits(provider, model).sent(now, tokens)
        return Permit(provider, model, tokens, ticket, self, acquired_at=now)

    def blocked(self, provider: str, model: str, tokens: int) -> Blocked | None:
        """Why ``provider`` cannot be tried now and until when, or ``None``; changes nothing."""
        now = self.now()
        breaker = self._breakers[provider]
        state = breaker.state(now)
        if state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and breaker.probe_in_flight
        ):
            until = breaker.probe_at() or now
            return Blocked(provider, BlockReason.BREAKER_OPEN, until if until > now else math.inf)
        limits = self.model_limits(provider, model)
        cooldown = limits.blocked_until(now, tokens)
        if cooldown is not None:
            reason = BlockReason.COOLDOWN if limits.cooling_down(now) else BlockReason.RATE_LIMIT
            return Blocked(provider, reason, cooldown)
        manual = self._manual[provider]
        blocked = manual.blocked_until(now, tokens)
        if blocked is not None:
            reason = BlockReason.BUSY if math.isinf(blocked) else BlockReason.RATE_LIMIT
            return Blocked(provider, reason, blocked)
        return None

    def settle(
        self,
        permit: Permit,
        verdict: Verdict,
        headers: Mapping[str, str],
        actual_tokens: int | None,
    ) -> None:
        now = self.now()
        breaker = self._breakers[permit.provider]
        before = breaker.state(now)
        if verdict in (Verdict.SUCCESS, Verdict.CLIENT_ERROR):
            breaker.succeeded(permit.ticket, now)
        elif verdict is Verdict.FAILURE:
            breaker.failed(permit.ticket, now)
        else:
            breaker.abandoned(permit.ticket)
        listener = self.listener
        if listener is not None:
            after = breaker.state(now)
            if after is not before:
                listener.breaker_changed(permit.provider, before, after)
        if verdict is Verdict.RATE_LIMITED:
            limits = self.model_limits(permit.provider, permit.model)
            limits.rate_limited(headers, now, self.wall_now(), self._default_cooldown_s)
            if listener is not None:
                listener.cooldown_started(
                    permit.provider, permit.model, limits.cooldown_until, limits.cooldown_reason
                )
        elif headers:
            self.model_limits(permit.provider, permit.model).observe(headers, now, self.wall_now())
        self._manual[permit.provider].release(
            now, permit.tokens, actual_tokens, acquired_at=permit.acquired_at
        )
        if self._capacity_freed.statistics().tasks_waiting:  # else nobody to wake
            self._capacity_freed.set()
            self._capacity_freed = trio.Event()

    async def wait_for_capacity(self) -> None:
        """Return at the next settled permit (the caller bounds the wait)."""
        await self._capacity_freed.wait()

    def breaker_state(self, provider: str) -> BreakerState:
        return self._breakers[provider].state(self.now())

    def probe_at(self, provider: str) -> float | None:
        """When ``provider``'s open breaker lets a probe through; None when closed."""
        return self._breakers[provider].probe_at()

    def snapshot(self, providers: Sequence[ProviderConfig]) -> list[dict[str, Any]]:
        """Each provider's state as of now, for ``/health``: wall-clock times, seconds left."""
        now, wall = self.now(), self.wall_now()

        def wall_time(at: float) -> float:
            return round(wall + (at - now), 3)

        report = []
        for provider in providers:
            breaker = self._breakers[provider.name]
            manual = self._manual[provider.name]
            cooldowns = [
                {"model": model, "seconds_left": round(limits.cooldown_until - now, 3)}
                for (name, model), limits in sorted(self._models.items())
                if name == provider.name and limits.cooling_down(now)
            ]
            remaining = []
            for (name, model), limits in sorted(self._models.items()):
                left = limits.remaining(now) if name == provider.name else None
                if left is not None:
                    remaining.append({"model": model, **left})
            probe_at = breaker.probe_at()
            report.append(
                {
                    "name": provider.name,
                    "breaker": breaker.state(now).value,
                    "consecutive_failures": breaker.consecutive_failures,
                    "opened_at": None
                    if breaker.opened_at is None
                    else wall_time(breaker.opened_at),
                    "probe_at": None if probe_at is None else wall_time(probe_at),
                    "cooldowns": cooldowns,
                    "in_flight": manual.in_flight,
                    "remaining": remaining,
                    "limits": manual.usage(now),
                }
            )
        return report


def _limit_settings(provider: ProviderConfig) -> tuple[int | None, ...]:
    return (
        provider.requests_per_minute,
        provider.requests_per_day,
        provider.tokens_per_minute,
        provider.max_concurrent,
    )


def _manual_limits(provider: ProviderConfig) -> ManualLimits:
    return ManualLimits(
        requests_per_minute=provider.requests_per_minute,
        requests_per_day=provider.requests_per_day,
        tokens_per_minute=provider.tokens_per_minute,
        max_concurrent=provider.max_concurrent,
    )
