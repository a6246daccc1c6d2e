"""Overload protection: at most ``max_in_flight`` chat requests at once.

Past the limit a request waits up to ``admission_wait_ms`` for a slot, then is told to
come back later (503 ``overloaded`` with ``Retry-After`` and ``X-Backoff-Ms``) rather
than joining an unbounded queue whose every member would miss its deadline anyway.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from arbstr_trio.errors import Overloaded

__all__ = ["Admission"]


class Admission:
    def __init__(self, max_in_flight: int, wait_s: float) -> None:
        self._slots = trio.CapacityLimiter(max_in_flight)
        self._wait_s = wait_s

    @property
    def in_flight(self) -> int:
        return self._slots.borrowed_tokens

    @asynccontextmanager
    async def slot(self, deadline: float = math.inf) -> AsyncIterator[None]:
        """Hold a slot for the block; :class:`Overloaded` if none frees up in time.

        The wait ends at ``admission_wait_ms`` or at the request's ``deadline``, whichever
        comes first: a request must not reach its providers with no time left to use.
        """
        borrower = object()
        try:
            # A free slot is taken at once, even with wait_s == 0 (a deadline of now
            # would cancel the acquire before it tried).
            self._slots.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            with trio.move_on_at(min(trio.current_time() + self._wait_s, deadline)) as waiting:
                await self._slots.acquire_on_behalf_of(borrower)
            if waiting.cancelled_caught:
                backoff_ms = max(1, round(self._wait_s * 1000))
                raise Overloaded(
                    f"the proxy is serving {self._slots.total_tokens:.0f} requests, its limit "
                    "([server] max_in_flight); try again shortly",
                    headers=[
                        (b"retry-after", str(max(1, math.ceil(self._wait_s))).encode()),
                        (b"x-backoff-ms", str(backoff_ms).encode()),
                    ],
                ) from None
        try:
            yield
        finally:
            self._slots.release_on_behalf_of(borrower)
