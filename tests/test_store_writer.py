"""The request log on disk: its schema and migrations, and the one writer task.

Each test has its own database file in ``tmp_path``. Nothing sleeps: where the writer
must be caught waiting (backpressure) the test waits until every task is blocked, and
where it pauses before retrying a failed batch the test jumps a
:class:`~trio.testing.MockClock` past the pause instead of waiting it out.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from arbstr_trio.store import schema
from arbstr_trio.store import writer as writer_module
from arbstr_trio.store.records import AttemptRow, RequestRecord
from arbstr_trio.store.schema import SCHEMA_VERSION, connect, migrate
from arbstr_trio.store.writer import RecordWriter

DEADLINE_S = 10.0
DAY_S = 86_400.0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Real pace, so ``fail_after`` still guards; :meth:`~trio.testing.MockClock.jump`
    skips the writer's retry pauses.

    Not ``autojump_clock``: the writer writes on a worker thread, and a task waiting
    for a thread counts as blocked, so autojump would leap to the nearest deadline
    (the test's ``fail_after``) while a batch is being written.
    """
    return trio.testing.MockClock(rate=1.0)


def a_record(
    n: int, *, started_at: float | None = None, attempts: int = 2, model: str = "gpt-4o-mini"
) -> RequestRecord:
    """A streamed request answered by its last attempt, every field set (no defaults)."""
    started = time.time() - 60 if started_at is None else started_at
    rows = tuple(
        AttemptRow(
            provider=("alpha", "beta", "gamma")[seq % 3],
            started_at=started + 0.001 + seq * 0.25,
            duration_ms=100 + seq,
            outcome="ok" if seq == attempts - 1 else "http_503",
            status=200 if seq == attempts - 1 else 503,
            error=None if seq == attempts - 1 else "upstream said: overloaded",
            hedge=seq == 1,
        )
        for seq in range(attempts)
    )
    return RequestRecord(
        request_id=f"req-{n:06d}",
        started_at=started,
        finished_at=started + 1.234567,
        model=model,
        upstream_model="gpt-4o-mini-2024-07-18",
        provider="beta",
        tier="standard",
        policy="cheapest",
        streaming=True,
        status=200,
        success=True,
        error_type=None,
        prompt_tokens=120 + n,
        completion_tokens=48,
        cost_msat=65_400 + n,
        max_cost_msat=130_800,
        latency_ms=1235,
        ttfb_ms=310,
        stream_ms=925,
        client_key="team-a",
        attempts=rows,
    )


def read_records(path: Path) -> list[RequestRecord]:
    """Every request row with its attempts, rebuilt as records, in insertion order."""
    with closing(connect(str(path), read_only=True)) as db:
        db.row_factory = sqlite3.Row
        records = []
        for row in db.execute("SELECT * FROM requests ORDER BY id"):
            attempts = db.execute(
                "SELECT * FROM attempts WHERE request = ? ORDER BY seq", (row["id"],)
            ).fetchall()
            assert [a["seq"] for a in attempts] == list(range(len(attempts)))
            assert row["attempts"] == len(attempts)
            record = RequestRecord(
                request_id=row["request_id"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                model=row["model"],
                upstream_model=row["upstream_model"],
                provider=row["provider"],
                tier=row["tier"],
                policy=row["policy"],
                streaming=bool(row["streaming"]),
                status=row["status"],
                success=bool(row["success"]),
                error_type=row["error_type"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                cost_msat=row["cost_msat"],
                max_cost_msat=row["max_cost_msat"],
                latency_ms=row["latency_ms"],
                ttfb_ms=row["ttfb_ms"],
                stream_ms=row["stream_ms"],
                client_key=row["client_key"],
                attempts=tuple(
                    AttemptRow(
                        provider=a["provider"],
                        started_at=a["started_at"],
                        duration_ms=a["duration_ms"],
                        outcome=a["outcome"],
                        status=a["status"],
                        error=a["error"],
                        hedge=bool(a["hedge"]),
                    )
                    for a in attempts
                ),
            )
            assert bool(row["usage_missing"]) == record.usage_missing
            records.append(record)
        return records


def count(path: Path, table: str = "requests") -> int:
    with closing(connect(str(path), read_only=True)) as db:
        (rows,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(rows)


async def write_all(writer: RecordWriter, records: list[RequestRecord]) -> None:
    """Queue ``records`` before the writer starts, then run it until closed and drained."""
    for record in records:
        await writer.record(record)
    writer.close()
    await writer.run()


@contextmanager
def counted_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of every batch written, one transaction each, in order."""
    sizes: list[int] = []
    write_batch = writer_module._write_batch

    def counting(connection: sqlite3.Connection, batch: Sequence[RequestRecord]) -> None:
        write_batch(connection, batch)
        sizes.append(len(batch))

    monkeypatch.setattr(writer_module, "_write_batch", counting)
    yield sizes


# --- schema ---------------------------------------------------------------------------


def tables(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def insert_minimal_row(db: sqlite3.Connection, request_id: str) -> None:
    db.execute(
        "INSERT INTO requests (request_id, started_at, finished_at, streaming, status, success, "
        "usage_missing, latency_ms, attempts) VALUES (?, 1, 2, 0, 200, 1, 0, 1, 0)",
        (request_id,),
    )


def test_a_fresh_file_is_migrated_to_the_current_version(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    with closing(connect(path)) as db:
        assert migrate(db) == 0
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert {"requests", "attempts"} <= set(tables(db))


def test_reopening_a_current_file_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    with closing(connect(path)) as db:
        migrate(db)
        insert_minimal_row(db, "kept")
        before = tables(db)
    with closing(connect(path)) as db:
        assert migrate(db) == SCHEMA_VERSION
        assert tables(db) == before
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT request_id FROM requests").fetchall() == [("kept",)]


def test_a_new_migration_applies_to_an_existing_file_and_keeps_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column added in a later version arrives on its own when the file is opened."""
    path = str(tmp_path / "log.db")
    with closing(connect(path)) as db:
        migrate(db)
        insert_minimal_row(db, "old")
    later = (*schema.MIGRATIONS, "ALTER TABLE requests ADD COLUMN region TEXT")
    monkeypatch.setattr(schema, "MIGRATIONS", later)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(later))
    with closing(connect(path)) as db:
        assert migrate(db) == SCHEMA_VERSION
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert db.execute("SELECT request_id, region FROM requests").fetchall() == [("old", None)]


def test_a_file_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    with closing(connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with closing(connect(path)) as db, pytest.raises(RuntimeError) as refused:
        migrate(db)
    message = str(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this arbstr-trio knows" in message
    assert "upgrade arbstr-trio or point [database] path elsewhere" in message
    with closing(connect(path)) as db:
        assert tables(db) == {}
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)


async def test_the_writer_refuses_to_start_on_a_newer_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with closing(connect(str(path))) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            with pytest.raises(RuntimeError, match="newer than this arbstr-trio knows"):
                await nursery.start(RecordWriter(str(path)).run)


# --- writing --------------------------------------------------------------------------


async def test_records_round_trip_exactly_with_their_attempts_in_order(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    bare = RequestRecord(
        request_id="bare",
        started_at=1_700_000_000.5,
        finished_at=1_700_000_000.75,
        model=None,
        status=400,
        success=False,
        error_type="invalid_request",
        latency_ms=3,
    )
    no_usage = RequestRecord(
        request_id="no-usage",
        started_at=1_700_000_001.0,
        finished_at=1_700_000_002.0,
        model="gpt-4o",
        provider="alpha",
        status=499,
        success=False,
        error_type="client_disconnected",
        latency_ms=1000,
        attempts=(
            AttemptRow(
                provider="alpha", started_at=1_700_000_001.1, duration_ms=None, outcome="cancelled"
            ),
        ),
    )
    records = [a_record(1, attempts=3), bare, no_usage, a_record(2, attempts=1)]
    writer = RecordWriter(str(path))
    with trio.fail_after(DEADLINE_S):
        await write_all(writer, records)
    assert read_records(path) == records
    assert writer.rows_written == len(records)
    assert no_usage.usage_missing  # answered, but no cost: flagged in the row (read_records)


async def test_queued_records_are_written_in_batches_one_transaction_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.db"
    with counted_batches(monkeypatch) as sizes, trio.fail_after(DEADLINE_S):
        writer = RecordWriter(str(path), batch_size=1_000)
        await write_all(writer, [a_record(n) for n in range(2_500)])
    assert sizes == [1_000, 1_000, 500]
    assert writer.rows_written == 2_500
    assert count(path) == 2_500
    assert count(path, "attempts") == 5_000


async def test_records_arriving_while_a_batch_is_written_join_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many handlers recording at once: far fewer transactions than records."""
    path = tmp_path / "log.db"
    handlers, each = 50, 40
    with counted_batches(monkeypatch) as sizes, trio.fail_after(DEADLINE_S):
        writer = RecordWriter(str(path))

        async def handler(first: int) -> None:
            for n in range(first, first + each):
                await writer.record(a_record(n))

        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with trio.open_nursery() as recording:
                for h in range(handlers):
                    recording.start_soon(handler, h * each)
            writer.close()
    assert sum(sizes) == writer.rows_written == count(path) == handlers * each
    assert len(sizes) < handlers * each // 10, sizes


async def test_records_a_moment_apart_share_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: trio.testing.MockClock
) -> None:
    """At a modest rate, each record would be its own transaction and thread hop; the
    writer lingers for company. A reader that waits for the rows cuts it short.

    The linger here is a minute of the mock clock, which the test jumps through (61 s,
    added to its deadline); not cutting it short for the reader would run into that
    deadline."""
    path = tmp_path / "log.db"
    with counted_batches(monkeypatch) as sizes, trio.fail_after(DEADLINE_S + 61):
        writer = RecordWriter(str(path), linger_s=60)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for n in range(5):
                await writer.record(a_record(n))
                clock.jump(9)  # 5 records within 45 s of the first: one batch
                await trio.testing.wait_all_tasks_blocked()
            assert sizes == []
            clock.jump(16)
            await writer.flushed(5)
            assert sizes == [5]
            await writer.record(a_record(5))
            await writer.flushed(6)  # at once, not a minute later
            assert sizes == [5, 1]
            writer.close()


async def test_close_drains_everything_queued_before_run_returns(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    writer = RecordWriter(str(path), batch_size=100)
    for n in range(1_000):
        await writer.record(a_record(n))
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            queued_at_close = writer.queue_depth
            writer.close()
        # run() has returned: what was queued is on disk, in order.
    assert queued_at_close >= 900  # at most one batch was taken before close()
    assert writer.queue_depth == 0
    assert writer.rows_written == 1_000
    assert [r.request_id for r in read_records(path)] == [f"req-{n:06d}" for n in range(1_000)]


async def test_a_record_after_close_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = RecordWriter(str(tmp_path / "log.db"))
    writer.close()
    with trio.fail_after(DEADLINE_S):
        await writer.record(a_record(7))
    assert "request req-000007 ended after the request log closed" in caplog.text


async def test_a_full_channel_makes_the_next_record_wait_for_the_writer(tmp_path: Path) -> None:
    """Backpressure, not loss: with the channel full, record() waits until the writer
    takes one, then its record is accepted and, like the others, written."""
    path = tmp_path / "log.db"
    writer = RecordWriter(str(path), capacity=2)
    handed_over = trio.Event()

    async def third() -> None:
        await writer.record(a_record(3))
        handed_over.set()

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await writer.record(a_record(1))
            await writer.record(a_record(2))  # the channel is full, the writer not started
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert not handed_over.is_set()
            assert writer.queue_depth == 2

            await nursery.start(writer.run)  # it takes the first record...
            await handed_over.wait()  # ...which lets the third in
            writer.close()
    assert [r.request_id for r in read_records(path)] == ["req-000001", "req-000002", "req-000003"]


class BatchFailures(logging.Handler):
    """Counts the writer's "failed; retrying" reports, waking whoever waits for one.

    The writer reports a failure just before its pause, in its own task: once a
    report has arrived and every task is blocked, the writer is in that pause.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.count += 1
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, failures: int) -> None:
        while self.count < failures:
            await self._changed.wait()


@pytest.fixture
def batch_failures() -> Iterator[BatchFailures]:
    handler = BatchFailures()
    logger = logging.getLogger(writer_module.__name__)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def impatient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's 5 s busy timeout would make each failed attempt take 5 real
    seconds; with none, a locked database fails the batch at once."""

    def impatient_connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
        connection = connect(path, read_only=read_only)
        connection.execute("PRAGMA busy_timeout = 0")
        return connection

    monkeypatch.setattr(writer_module, "connect", impatient_connect)


@pytest.mark.usefixtures("impatient")
async def test_a_failed_batch_is_retried_until_written_and_nothing_is_lost(
    tmp_path: Path,
    clock: trio.testing.MockClock,
    batch_failures: BatchFailures,
) -> None:
    """Another connection holds the database locked: every write fails until it lets go."""

    path = tmp_path / "log.db"
    writer = RecordWriter(str(path))
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)  # migrated before the lock is taken
            with closing(sqlite3.connect(path, isolation_level=None)) as locker:
                locker.execute("BEGIN EXCLUSIVE")
                for n in range(5):
                    await writer.record(a_record(n))
                pause = writer_module._RETRY_FIRST_S
                late = 0
                while batch_failures.count < 3:
                    await batch_failures.wait_for(batch_failures.count + 1)
                    await trio.testing.wait_all_tasks_blocked()  # the writer is pausing
                    # More records arrive while it pauses: they wait their turn.
                    late += 1
                    await writer.record(a_record(100 + late))
                    clock.jump(pause)
                    pause *= 2
                locker.execute("COMMIT")
            writer.close()
    written = [r.request_id for r in read_records(path)]
    assert sorted(written) == sorted({*written})  # no batch written twice
    assert len(written) == writer.rows_written == 5 + late
    assert count(path, "attempts") == 2 * len(written)


async def test_records_older_than_max_age_are_pruned_with_their_attempts(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    now = time.time()
    old = [a_record(n, started_at=now - 2 * DAY_S - n, attempts=3) for n in range(3)]
    recent = [a_record(10, started_at=now - 0.5 * DAY_S, attempts=2)]
    with trio.fail_after(DEADLINE_S):
        await write_all(RecordWriter(str(path)), [*old, *recent])
        assert count(path) == 4
        # A later run with a retention limit prunes once it is writing.
        pruning = RecordWriter(str(path), max_age_days=1)
        await write_all(pruning, [a_record(11, started_at=now)])
    assert pruning.rows_pruned == len(old)
    assert [r.request_id for r in read_records(path)] == ["req-000010", "req-000011"]
    with closing(connect(str(path), read_only=True)) as db:
        orphans = db.execute(
            "SELECT count(*) FROM attempts WHERE request NOT IN (SELECT id FROM requests)"
        ).fetchone()
    assert orphans == (0,)
    assert count(path, "attempts") == 2 + 2


async def test_a_record_the_database_cannot_hold_is_skipped_and_the_rest_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.db"
    writer = RecordWriter(str(path))
    records = [a_record(0), attrs.evolve(a_record(1), prompt_tokens=2**63), a_record(2)]
    with trio.fail_after(DEADLINE_S):
        await write_all(writer, records)
    assert sorted(r.request_id for r in read_records(path)) == ["req-000000", "req-000002"]
    assert writer.rows_written == 2
    assert "request req-000001: its record cannot be written" in caplog.text


@pytest.mark.usefixtures("impatient")
async def test_shutdown_stops_retrying_a_database_that_stays_locked(
    tmp_path: Path,
    clock: trio.testing.MockClock,
    batch_failures: BatchFailures,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While serving, a locked database is waited for; once closing, a broken one must
    not hold the process forever: a few tries, then the lost ids are logged."""

    path = tmp_path / "log.db"
    writer = RecordWriter(str(path))
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            locker = sqlite3.connect(path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")  # held until run() has given up
            await writer.record(a_record(0))
            writer.close()
            pause = writer_module._RETRY_FIRST_S
            for failures in (1, 2):
                await batch_failures.wait_for(failures)
                await trio.testing.wait_all_tasks_blocked()
                clock.jump(pause)
                pause *= 2
            # run() returns on its own after the third failure: the nursery exits.
    locker.close()
    assert writer.rows_written == 0
    assert "shutting down: 1 request records could not be written" in caplog.text
    assert "req-000000" in caplog.text


def test_a_commit_refused_leaves_no_transaction_open(tmp_path: Path) -> None:
    """Without WAL (some file systems), a reader's lock makes COMMIT itself fail: the batch
    must end rolled back, or every retry after it fails inside the stale transaction."""
    path = tmp_path / "log.db"
    writer_connection = connect(str(path))
    migrate(writer_connection)
    writer_connection.execute("PRAGMA journal_mode = DELETE")
    writer_connection.execute("PRAGMA busy_timeout = 0")
    with closing(sqlite3.connect(path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM requests").fetchone()  # holds a shared lock
        with pytest.raises(sqlite3.OperationalError):
            writer_module._write_batch(writer_connection, [a_record(0)])
        assert not writer_connection.in_transaction
        reader.execute("COMMIT")
    writer_module._write_batch(writer_connection, [a_record(0)])  # the retry succeeds
    writer_connection.close()
    assert count(path) == 1
