"""The read side of the request log: its own read-only connection, on a worker thread.

Stats and listings never touch the writer's connection. In WAL mode a reader works
from a snapshot while the writer appends, so neither waits for the other; and
SQLite releases the GIL while it runs a statement, so even a second-long aggregate
leaves the event loop free to serve requests on the other core.

Reads go one at a time (a connection is for one thread at a time) and each runs in
one read transaction, so every figure of one answer comes from the same snapshot. A
read is not cancelled halfway (a worker thread cannot be); closing the log
interrupts whatever read is running instead, so shutdown never waits on a long one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import trio

from arbstr_trio.store.listing import LoggedRequest, Page, find_request, list_requests
from arbstr_trio.store.query import ListQuery, StatsQuery
from arbstr_trio.store.schema import connect
from arbstr_trio.store.spend import spent_since
from arbstr_trio.store.stats import Stats, compute_stats

__all__ = ["RequestLog"]

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0
_INTERRUPT_EVERY_S = 0.05

A = TypeVar("A")
T = TypeVar("T")


class RequestLog:
    """Questions to the request log, answered off the event loop."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._one_at_a_time = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: str) -> RequestLog:
        """The log at ``path``, read-only; the writer must have created and migrated it."""
        return cls(await trio.to_thread.run_sync(lambda: connect(path, read_only=True)))

    async def stats(self, query: StatsQuery) -> Stats:
        return await self._read(compute_stats, query)

    async def requests(self, query: ListQuery) -> Page:
        return await self._read(list_requests, query)

    async def request(self, request_id: str) -> LoggedRequest | None:
        """The latest request logged with this id, with its attempts; None if none."""
        return await self._read(find_request, request_id)

    async def spent_since(self, since: float) -> dict[str, int]:
        """Each client key's logged spend (msat) since the Unix time ``since``."""
        return await self._read(spent_since, since)

    async def aclose(self) -> None:
        """Interrupt a running read, then close; bounded, and shielded from cancellation.

        The interrupt is repeated until the read gives way: one sent just before its
        statement began would be lost (SQLite interrupts only what is running).
        """
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S) as waited:
            while True:
                self._connection.interrupt()
                with trio.move_on_after(_INTERRUPT_EVERY_S):
                    await self._one_at_a_time.acquire()
                    break
            try:
                await trio.to_thread.run_sync(self._connection.close)
            finally:
                self._one_at_a_time.release()
        if waited.cancelled_caught:
            log.warning("the request log's reader did not close within %.0f s", _CLOSE_TIMEOUT_S)

    async def _read(self, read: Callable[[sqlite3.Connection, A], T], argument: A) -> T:
        return await trio.to_thread.run_sync(
            _in_snapshot, self._connection, read, argument, limiter=self._one_at_a_time
        )


def _in_snapshot(
    connection: sqlite3.Connection, read: Callable[[sqlite3.Connection, A], T], argument: A
) -> T:
    connection.execute("BEGIN")
    try:
        return read(connection, argument)
    finally:
        if connection.in_transaction:  # an interrupted statement may have ended it already
            connection.execute("COMMIT")
