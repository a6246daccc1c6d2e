"""Fanning events out to the live feed's subscribers without ever making the proxy wait.

Events are published from the request path (a finished request, a failed attempt, a
breaker or cooldown change), so :meth:`LiveHub.publish` is synchronous: it serialises
the event once and appends the bytes to each subscriber's bounded queue, and never
awaits. A subscriber that reads slower than events arrive loses the *oldest* events
in its queue, not the newest and not the proxy's time: each loss is counted, and the
subscriber is told how many it missed (a ``dropped`` event) just before the next event
it does get. Memory per subscriber is therefore bounded by ``queue_limit`` events,
whatever the client does.

Dropping rather than disconnecting: a dashboard behind a slow link keeps working and
says it missed some events, instead of reconnecting in a loop under load.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import trio

from arbstr_trio.config.models import Config

__all__ = ["DEFAULT_MAX_SUBSCRIBERS", "DEFAULT_QUEUE_LIMIT", "LiveHub", "Subscription"]

DEFAULT_QUEUE_LIMIT = 256
"""Events held for one subscriber: a few seconds of a busy proxy, about 100 KB."""
DEFAULT_MAX_SUBSCRIBERS = 100
"""Feeds open at once: with the queue limit, what the feed may hold in memory (~10 MB)."""


class Subscription:
    """One subscriber's queue: filled by :meth:`LiveHub.publish`, emptied by its feed."""

    def __init__(
        self,
        limit: int,
        clock: Callable[[], float],
        admitted: Callable[[Config], bool] | None = None,
    ) -> None:
        self.limit = limit
        self.clock = clock
        self.admitted = admitted
        """Whether a configuration still admits this subscriber's key (None: any does)."""
        self.revoked = False
        """Closed because its key is no longer configured."""
        self._queue: deque[bytes] = deque()
        self._missed = 0
        """Events dropped since the subscriber was last told."""
        self._ready = trio.Event()
        self.closed = False

    def push(self, event: bytes) -> bool:
        """Queue ``event``; True when the oldest queued event had to go to make room."""
        dropped = len(self._queue) >= self.limit
        if dropped:
            self._queue.popleft()
            self._missed += 1
        self._queue.append(event)
        self._ready.set()
        return dropped

    def revoke(self) -> None:
        """Its key was removed or changed: the feed ends, saying why."""
        self.revoked = True
        self.close()

    def close(self) -> None:
        """No more events: :meth:`next_batch` returns what is queued, then None."""
        self.closed = True
        self._ready.set()

    async def next_batch(self) -> list[bytes] | None:
        """Every event queued now (waiting for one if there are none), led by a
        ``dropped`` event when some were lost; None once closed and empty.

        The wait has no deadline of its own: the feed's nursery cancels it when the
        client leaves or the proxy shuts down (which also closes the subscription).
        """
        while not self._queue and not self.closed:
            await self._ready.wait()
            self._ready = trio.Event()
        if not self._queue:
            return None
        batch: list[bytes] = []
        if self._missed:
            batch.append(event_bytes("dropped", self.clock(), {"count": self._missed}))
            self._missed = 0
        batch.extend(self._queue)
        self._queue.clear()
        return batch


class LiveHub:
    """Every open feed's subscription, and the one way events reach them."""

    def __init__(
        self,
        *,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        clock: Callable[[], float] = time.time,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        self.queue_limit = queue_limit
        self.max_subscribers = max_subscribers
        self.clock = clock
        """Wall-clock Unix seconds, the ``ts`` of events built here."""
        self._on_drop = on_drop
        self._subscribers: set[Subscription] = set()
        self.closed = False

    @property
    def full(self) -> bool:
        """Whether ``max_subscribers`` feeds are open: the next is turned away."""
        return len(self._subscribers) >= self.max_subscribers

    @property
    def listening(self) -> bool:
        """Whether anyone subscribes: publishers skip building events nobody would get."""
        return bool(self._subscribers)

    def publish(self, kind: str, fields: dict[str, Any], *, ts: float | None = None) -> None:
        """Send ``{"type": kind, "ts": ts, **fields}`` to every subscriber, now.

        Never blocks and never raises for a slow subscriber: see the module docstring.
        ``ts`` defaults to now.
        """
        if not self._subscribers:
            return
        event = event_bytes(kind, self.clock() if ts is None else ts, fields)
        dropped = 0
        for subscription in self._subscribers:
            dropped += subscription.push(event)
        if dropped and self._on_drop is not None:
            self._on_drop(dropped)

    @contextmanager
    def subscribe(self, admitted: Callable[[Config], bool] | None = None) -> Iterator[Subscription]:
        """A subscription for the block's duration (closed at once if the hub is);
        ``admitted`` says whether a new configuration still admits its key."""
        subscription = Subscription(self.queue_limit, self.clock, admitted)
        if self.closed:
            subscription.close()
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def reconfigure(self, config: Config) -> None:
        """The configuration changed: feeds whose key it no longer admits end now."""
        for subscription in list(self._subscribers):
            if subscription.admitted is not None and not subscription.admitted(config):
                subscription.revoke()

    def close(self) -> None:
        """The proxy is stopping: every feed ends once it has sent what it holds."""
        self.closed = True
        for subscription in self._subscribers:
            subscription.close()


def event_bytes(kind: str, ts: float, fields: dict[str, Any]) -> bytes:
    """One event as the JSON text the feed sends: ``type`` and ``ts`` first."""
    return orjson.dumps({"type": kind, "ts": round(ts, 3), **fields})
