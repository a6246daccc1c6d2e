"""Breaker and cooldown changes for the live feed, including those only time makes.

The health board reports what settling a permit changes (a breaker opening or
closing, a 429 starting a cooldown) the moment it happens. Two changes happen by the
clock alone, with no request to notice them: an open breaker turning half-open when
its probe is due, and a cooldown running out. :meth:`HealthWatch.run`, one task in the
runtime's nursery, sleeps until the earliest of those and reports it then, so a
dashboard needs no polling to see a provider come back.

The watch remembers the last breaker state it reported per provider, so the feed
always tells a consistent story (``open`` -> ``half_open`` -> ``open`` -> ...), even
when the board moved by the clock before the watch woke up.
"""

from __future__ import annotations

import math

import trio

from arbstr_trio.health.board import HealthBoard
from arbstr_trio.health.breaker import BreakerState
from arbstr_trio.live.hub import LiveHub

__all__ = ["HealthWatch"]


class HealthWatch:
    """A :class:`~arbstr_trio.health.board.HealthListener` that publishes to a hub.

    The board's clock must be trio's (as in the running proxy): the watch sleeps on it.
    """

    def __init__(self, hub: LiveHub, board: HealthBoard) -> None:
        self._hub = hub
        self._board = board
        self._breakers: dict[str, BreakerState] = {}
        """The last state reported per provider; absent: closed."""
        self._cooldowns: dict[tuple[str, str], float] = {}
        """(provider, model) -> when its cooldown ends, on the board's clock."""
        self._changed = trio.Event()
        self._scope = trio.CancelScope()

    # --- told by the board, synchronously ----------------------------------------------

    def breaker_changed(self, provider: str, before: BreakerState, after: BreakerState) -> None:
        self._report(provider, before)  # a half-open the clock made, not yet reported
        self._report(provider, after)
        if after is BreakerState.OPEN:
            self._changed.set()  # its probe time is a new wake-up

    def cooldown_started(self, provider: str, model: str, until: float, reason: str) -> None:
        self._cooldowns[(provider, model)] = until
        self._hub.publish(
            "cooldown_started",
            {
                "provider": provider,
                "model": model,
                "until": round(self._wall(until), 3),
                "reason": reason,
            },
        )
        self._changed.set()

    # --- what the clock does ------------------------------------------------------------

    async def run(self) -> None:
        """Report clock-made changes as they fall due, until :meth:`stop` (or cancelled).

        Every wait ends at the next change due or when the board reports a new one.
        """
        with self._scope:
            while True:
                self._changed = trio.Event()
                wake_at = self.report_due()
                with trio.move_on_at(wake_at):
                    await self._changed.wait()

    def stop(self) -> None:
        """End :meth:`run`: its own scope, so the nursery it runs in (the request
        writer's, which must drain) is not cancelled with it."""
        self._scope.cancel()

    def report_due(self) -> float:
        """Report every change due by now; returns when the next falls due (or ``inf``)."""
        now = self._board.now()
        wake_at = math.inf
        for (provider, model), until in list(self._cooldowns.items()):
            if until > now:
                wake_at = min(wake_at, until)
                continue
            del self._cooldowns[(provider, model)]
            self._hub.publish("cooldown_ended", {"provider": provider, "model": model})
        for provider, state in list(self._breakers.items()):
            if state is not BreakerState.OPEN:
                continue
            current = self._board.breaker_state(provider)
            if current is BreakerState.OPEN:
                probe_at = self._board.probe_at(provider)
                if probe_at is not None:
                    wake_at = min(wake_at, probe_at)
            else:
                self._report(provider, current)
        return wake_at

    def _report(self, provider: str, state: BreakerState) -> None:
        last = self._breakers.get(provider, BreakerState.CLOSED)
        if state is last:
            return
        self._breakers[provider] = state
        self._hub.publish("breaker", {"provider": provider, "from": last.value, "to": state.value})

    def _wall(self, at: float) -> float:
        """``at`` on the board's clock as a Unix time."""
        return self._board.wall_now() + (at - self._board.now())
