"""The one task that writes the request log: records in on a channel, batches out to disk.

Request handlers hand their record to :meth:`RecordWriter.record` and go on; a single
writer task takes whatever has queued up, up to a batch, and writes it in one
transaction on a worker thread, so a slow disk never slows a response and a busy
proxy writes thousands of rows a second. The channel is bounded: when the disk falls
behind, handlers wait to hand over their record (backpressure) instead of records
being dropped. A batch that fails to write is kept and tried again, with a growing
pause, until it is written.

Shutdown closes the channel; the writer drains what is queued, writes it, and only
then ends: every record accepted is a record written. The writer also prunes records
older than ``max_age_days`` once an hour, when that is set.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Sequence

import trio

from arbstr_trio.store.records import RequestRecord
from arbstr_trio.store.schema import connect, migrate

__all__ = ["RecordWriter"]

log = logging.getLogger(__name__)

_INSERT_REQUEST = """
    INSERT INTO requests (
        request_id, started_at, finished_at, model, upstream_model, provider, tier, policy,
        streaming, status, success, error_type, prompt_tokens, completion_tokens, cost_msat,
        usage_missing, max_cost_msat, latency_ms, ttfb_ms, stream_ms, attempts, client_key,
        budget_msat
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_ATTEMPT = """
    INSERT INTO attempts (request, seq, provider, started_at, duration_ms, outcome, status,
                          error, hedge)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_PRUNE_EVERY_S = 3600.0
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0
_RETRIES_WHEN_CLOSING = 3


class RecordWriter:
    def __init__(
        self,
        path: str,
        *,
        capacity: int = 10_000,
        batch_size: int = 1_000,
        linger_s: float = 0.05,
        max_age_days: float | None = None,
    ) -> None:
        self.path = path
        self._send, self._receive = trio.open_memory_channel[RequestRecord](capacity)
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._linger = trio.CancelScope()
        """The current batch's wait for more records; cancelled by :meth:`flushed`."""
        self._readers_waiting = 0
        self._max_age_s = None if max_age_days is None else max_age_days * 86_400
        self.rows_written = 0
        """Request rows written since start (attempt rows are not counted)."""
        self.rows_pruned = 0
        self._progress = trio.Event()
        self._closing = False
        self._done = trio.Event()

    @property
    def queue_depth(self) -> int:
        """Records accepted and not yet written."""
        return self._send.statistics().current_buffer_used

    async def record(self, record: RequestRecord) -> None:
        """Hand over a finished request's record; waits only if the writer is far behind."""
        try:
            await self._send.send(record)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # Only a request still running when shutdown's grace period ended gets here.
            log.error(
                "request %s ended after the request log closed: not recorded", record.request_id
            )

    async def flushed(self, rows: int) -> None:
        """Return once ``rows`` request rows in all have been written: records are written
        after their response, so whoever reads the log right after (a test, a bench)
        waits here for it to catch up, and no batch lingers meanwhile. The caller
        bounds the wait."""
        self._readers_waiting += 1
        try:
            while self.rows_written < rows:
                self._linger.cancel()  # a batch lingering since before we came
                await self._progress.wait()
        finally:
            self._readers_waiting -= 1

    async def drained(self) -> None:
        """Return once :meth:`run` has written everything and closed the database."""
        await self._done.wait()

    def close(self) -> None:
        """No more records: the writer drains what is queued, then ends."""
        self._closing = True
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open (and migrate) the database, then write until closed and drained."""
        connection = await trio.to_thread.run_sync(self._open)
        task_status.started()
        try:
            next_prune = trio.current_time()
            async with self._receive:
                async for first in self._receive:
                    await self._write(connection, await self._gather(first))
                    if self._max_age_s is not None and trio.current_time() >= next_prune:
                        next_prune = trio.current_time() + _PRUNE_EVERY_S
                        await self._prune(connection)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(connection.close)
            self._done.set()

    async def _gather(self, first: RequestRecord) -> list[RequestRecord]:
        """A batch: ``first`` and what arrives within the linger, up to the batch size.

        Each batch is one transaction and one hop to a worker thread, which cost more
        than its rows at a modest rate: lingering a little turns a record per
        transaction into many. Shutdown does not linger.
        """
        batch = [first]
        self._take_queued(batch)
        if self._closing or self._readers_waiting or len(batch) >= self._batch_size:
            return batch
        with trio.move_on_after(self._linger_s) as self._linger:
            while len(batch) < self._batch_size:
                try:
                    batch.append(await self._receive.receive())
                except trio.EndOfChannel:
                    break
                self._take_queued(batch)
        return batch

    def _take_queued(self, batch: list[RequestRecord]) -> None:
        while len(batch) < self._batch_size:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def _open(self) -> sqlite3.Connection:
        connection = connect(self.path)
        try:
            migrate(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _write(self, connection: sqlite3.Connection, batch: Sequence[RequestRecord]) -> None:
        """Write ``batch``; a database that refuses (locked, full) is tried again and again.

        While serving, the retries go on: the channel fills and requests wait, which is
        better than losing their records. Once shutting down they stop after a few,
        so a broken disk cannot hold the process forever; what is lost is logged.
        """
        pause = _RETRY_FIRST_S
        failures = 0
        while True:
            try:
                await trio.to_thread.run_sync(_write_batch, connection, batch)
            except sqlite3.OperationalError as exc:
                failures += 1
                if self._closing and failures >= _RETRIES_WHEN_CLOSING:
                    log.error(
                        "shutting down: %d request records could not be written to %s (%s): %s",
                        len(batch),
                        self.path,
                        exc,
                        ", ".join(record.request_id for record in batch),
                    )
                    return
                log.error(
                    "writing %d request records to %s failed (%s); retrying in %.1f s",
                    len(batch),
                    self.path,
                    exc,
                    pause,
                )
                await trio.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX_S)
            except Exception:
                # Not the database refusing but a record it cannot hold: write the rest.
                await self._write_one_by_one(connection, batch)
                return
            else:
                self._written(len(batch))
                return

    async def _write_one_by_one(
        self, connection: sqlite3.Connection, batch: Sequence[RequestRecord]
    ) -> None:
        for record in batch:
            try:
                await trio.to_thread.run_sync(_write_batch, connection, [record])
            except Exception:
                log.exception(
                    "request %s: its record cannot be written; skipped", record.request_id
                )
            else:
                self._written(1)

    def _written(self, rows: int) -> None:
        self.rows_written += rows
        self._progress.set()
        self._progress = trio.Event()

    async def _prune(self, connection: sqlite3.Connection) -> None:
        assert self._max_age_s is not None
        cutoff = time.time() - self._max_age_s
        try:
            pruned = await trio.to_thread.run_sync(_prune_before, connection, cutoff)
        except sqlite3.Error as exc:
            log.error("pruning the request log failed: %s", exc)
            return
        self.rows_pruned += pruned
        if pruned:
            log.info("pruned %d request records older than %s days", pruned, _days(self._max_age_s))


def _write_batch(connection: sqlite3.Connection, batch: Sequence[RequestRecord]) -> None:
    connection.execute("BEGIN")
    try:
        for record in batch:
            cursor = connection.execute(
                _INSERT_REQUEST,
                (
                    record.request_id,
                    record.started_at,
                    record.finished_at,
                    record.model,
                    record.upstream_model,
                    record.provider,
                    record.tier,
                    record.policy,
                    record.streaming,
                    record.status,
                    record.success,
                    record.error_type,
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.cost_msat,
                    record.usage_missing,
                    record.max_cost_msat,
                    record.latency_ms,
                    record.ttfb_ms,
                    record.stream_ms,
                    len(record.attempts),
                    record.client_key,
                    record.budget_msat,
                ),
            )
            if record.attempts:
                row_id = cursor.lastrowid
                connection.executemany(
                    _INSERT_ATTEMPT,
                    [
                        (
                            row_id,
                            seq,
                            a.provider,
                            a.started_at,
                            a.duration_ms,
                            a.outcome,
                            a.status,
                            a.error,
                            a.hedge,
                        )
                        for seq, a in enumerate(record.attempts)
                    ],
                )
        connection.execute("COMMIT")  # inside: a COMMIT refused (busy) leaves it open
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _prune_before(connection: sqlite3.Connection, cutoff: float) -> int:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "DELETE FROM attempts WHERE request IN (SELECT id FROM requests WHERE started_at < ?)",
            (cutoff,),
        )
        pruned = connection.execute("DELETE FROM requests WHERE started_at < ?", (cutoff,)).rowcount
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return int(pruned)


def _days(seconds: float) -> str:
    days = seconds / 86_400
    return str(int(days)) if math.isclose(days, round(days)) else f"{days:g}"
