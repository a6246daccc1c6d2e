"""Reading the request log back: stats, listings and lookups, against known records.

Every test writes its records through the real :class:`RecordWriter` into a file of
its own, then asks :class:`RequestLog` (the read-only connection the endpoints use).
Expected figures come from a plain-Python oracle over the same records, so each
aggregate, filter, grouping and bucket is checked value by value. Stats run both
ways they can: walking the timing indexes and sorting (the choice depends on the
window's share of the log, forced here), and both must agree with the oracle.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from arbstr_trio.store import stats as stats_module
from arbstr_trio.store.listing import LoggedRequest
from arbstr_trio.store.query import (
    Cursor,
    Filters,
    ListQuery,
    Sort,
    StatsQuery,
    Window,
    parse_list_query,
    parse_stats_query,
)
from arbstr_trio.store.reader import RequestLog
from arbstr_trio.store.records import AttemptRow, RequestRecord
from arbstr_trio.store.stats import Aggregates, Percentiles
from arbstr_trio.store.writer import RecordWriter

DEADLINE_S = 10.0
BASE = 1_700_006_400.0  # 2023-11-15T00:00:00Z: on an hour and a day boundary
HOUR = 3600.0


def make_records(count: int = 60, seed: int = 3) -> list[RequestRecord]:
    """A mix over three hours (the middle one empty), with every nullable field null
    somewhere: failures nobody answered, streams, missing usage, unknown TTFB."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        hour = (0, 2)[n % 2]
        started = BASE + hour * HOUR + rng.uniform(0, HOUR - 1)
        provider = rng.choice(["alpha", "alpha", "beta", None])
        answered = provider is not None
        usage = answered and rng.random() > 0.15
        prompt, completion = (rng.randint(1, 500), rng.randint(1, 300)) if usage else (None, None)
        cost = None if prompt is None else rng.randint(0, 5000)
        success = answered and rng.random() > 0.2
        latency = rng.choice([5, 17, 17, 40, 120, 120, 121, 900, 2500, rng.randint(1, 3000)])
        records.append(
            RequestRecord(
                request_id=f"req-{n:03d}",
                started_at=started,
                finished_at=started + latency / 1000,
                model=rng.choice(["small", "large"]),
                upstream_model="up" if answered else None,
                provider=provider,
                tier={"alpha": "standard", "beta": "frontier", None: None}[provider],
                policy=rng.choice(["cheap", "quality", None]),
                streaming=rng.random() < 0.5,
                status=200 if success else rng.choice([502, 499, 200]),
                success=success,
                error_type=None if success else rng.choice(["stream_truncated", "upstream_x"]),
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_msat=cost,
                max_cost_msat=None if cost is None or rng.random() < 0.1 else cost + n,
                latency_ms=latency,
                ttfb_ms=rng.randint(1, latency) if answered else None,
                stream_ms=None,
                attempts=tuple(
                    AttemptRow(
                        provider=f"p{seq}",
                        started_at=started + seq,
                        duration_ms=seq,
                        outcome="ok",
                    )
                    for seq in range(n % 3)
                ),
            )
        )
    return records


def nearest_rank(values: Sequence[int]) -> Percentiles:
    ordered = sorted(values)
    if not ordered:
        return Percentiles()
    pick = [ordered[math.ceil(p * len(ordered) / 100) - 1] for p in (50, 95, 99)]
    return Percentiles(*pick)


def oracle(records: Iterable[RequestRecord]) -> Aggregates:
    rows = list(records)
    return Aggregates(
        requests=len(rows),
        successes=sum(r.success for r in rows),
        prompt_tokens=sum(r.prompt_tokens or 0 for r in rows),
        completion_tokens=sum(r.completion_tokens or 0 for r in rows),
        cost_msat=sum(r.cost_msat or 0 for r in rows),
        savings_msat=sum(
            r.max_cost_msat - r.cost_msat
            for r in rows
            if r.max_cost_msat is not None and r.cost_msat is not None
        ),
        usage_missing=sum(r.usage_missing for r in rows),
        latency_ms=nearest_rank([r.latency_ms for r in rows]),
        ttfb_ms=nearest_rank([r.ttfb_ms for r in rows if r.ttfb_ms is not None]),
    )


def in_window(records: Iterable[RequestRecord], since: float, until: float) -> list[RequestRecord]:
    return [r for r in records if since <= r.started_at < until]


async def write(path: str, records: Iterable[RequestRecord]) -> None:
    writer = RecordWriter(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for record in records:
            await writer.record(record)
        writer.close()


RECORDS = make_records()
WHOLE = Window(since=BASE, until=BASE + 3 * HOUR)


@pytest.fixture(params=["walk", "sort"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force the histograms one way or the other, whatever the window's share."""
    monkeypatch.setattr(stats_module, "_WALK_SHARE", 10**12 if request.param == "walk" else 0)
    return str(request.param)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[RequestLog]:
    path = str(tmp_path / "arbstr.db")
    with trio.fail_after(DEADLINE_S):
        await write(path, RECORDS)
        reader = await RequestLog.open(path)
    try:
        yield reader
    finally:
        await reader.aclose()


def stats_query(**kwargs: object) -> StatsQuery:
    return StatsQuery(window=WHOLE, **kwargs)  # type: ignore[arg-type]


# --- stats ----------------------------------------------------------------------------


async def test_totals_match_the_oracle(log: RequestLog, way: str) -> None:
    stats = await log.stats(stats_query())
    assert stats.totals == oracle(RECORDS)
    assert stats.totals.errors == sum(not r.success for r in RECORDS)
    assert (stats.groups, stats.buckets) == ((), ())


async def test_the_window_is_since_inclusive_until_exclusive(log: RequestLog, way: str) -> None:
    edge = sorted(r.started_at for r in RECORDS)[10]
    stats = await log.stats(StatsQuery(window=Window(since=edge, until=BASE + 3 * HOUR)))
    assert stats.totals == oracle(in_window(RECORDS, edge, BASE + 3 * HOUR))
    stats = await log.stats(StatsQuery(window=Window(since=BASE, until=edge)))
    assert stats.totals == oracle(in_window(RECORDS, BASE, edge))


FILTERS: list[tuple[Filters, Callable[[RequestRecord], bool]]] = [
    (Filters(model="large"), lambda r: r.model == "large"),
    (Filters(provider="alpha"), lambda r: r.provider == "alpha"),
    (Filters(policy="cheap"), lambda r: r.policy == "cheap"),
    (Filters(streaming=True), lambda r: r.streaming),
    (Filters(streaming=False), lambda r: not r.streaming),
    (Filters(success=True), lambda r: r.success),
    (Filters(success=False), lambda r: not r.success),
    (Filters(provider="beta", streaming=False), lambda r: r.provider == "beta" and not r.streaming),
    (Filters(model="nobody"), lambda r: False),
]


@pytest.mark.parametrize(("filters", "keep"), FILTERS)
async def test_each_filter(
    log: RequestLog, way: str, filters: Filters, keep: Callable[[RequestRecord], bool]
) -> None:
    stats = await log.stats(stats_query(filters=filters))
    assert stats.totals == oracle(r for r in RECORDS if keep(r))


@pytest.mark.parametrize("key", ["model", "provider", "policy", "tier"])
async def test_each_group_by(log: RequestLog, way: str, key: str) -> None:
    stats = await log.stats(stats_query(group_by=key))
    assert stats.totals == oracle(RECORDS)
    expected = {}
    for value in {getattr(r, key) for r in RECORDS}:
        expected[value] = oracle(r for r in RECORDS if getattr(r, key) == value)
    assert {g.key: g.aggregates for g in stats.groups} == expected
    counts = [(g.aggregates.requests, g.key is None) for g in stats.groups]
    assert counts == sorted(counts, key=lambda c: (-c[0], c[1]))  # busiest first, None last


async def test_group_by_with_a_filter(log: RequestLog, way: str) -> None:
    stats = await log.stats(stats_query(group_by="provider", filters=Filters(success=True)))
    kept = [r for r in RECORDS if r.success]
    assert {g.key: g.aggregates for g in stats.groups} == {
        p: oracle(r for r in kept if r.provider == p) for p in {r.provider for r in kept}
    }


async def test_hour_buckets_cover_the_window_dense_and_clipped(log: RequestLog, way: str) -> None:
    since, until = BASE + 1800, BASE + 2 * HOUR + 1800  # half an hour in, half before the end
    stats = await log.stats(StatsQuery(window=Window(since=since, until=until), bucket="hour"))
    assert [b.start for b in stats.buckets] == [BASE, BASE + HOUR, BASE + 2 * HOUR]
    for bucket in stats.buckets:
        part = in_window(RECORDS, max(bucket.start, since), min(bucket.start + HOUR, until))
        assert bucket.aggregates == oracle(part)
        assert bucket.groups == ()
    assert stats.buckets[1].aggregates == Aggregates()  # the empty hour is there, all zero
    assert stats.totals == oracle(in_window(RECORDS, since, until))


async def test_day_buckets(log: RequestLog, way: str) -> None:
    window = Window(since=BASE - 3 * HOUR, until=BASE + 3 * HOUR)
    stats = await log.stats(StatsQuery(window=window, bucket="day"))
    assert [(b.start, b.aggregates) for b in stats.buckets] == [
        (BASE - 86_400, Aggregates()),
        (BASE, oracle(RECORDS)),
    ]


async def test_buckets_with_groups(log: RequestLog, way: str) -> None:
    stats = await log.stats(stats_query(bucket="hour", group_by="provider"))
    for bucket in stats.buckets:
        part = in_window(RECORDS, bucket.start, bucket.start + HOUR)
        assert bucket.aggregates == oracle(part)
        assert {g.key: g.aggregates for g in bucket.groups} == {
            p: oracle(r for r in part if r.provider == p) for p in {r.provider for r in part}
        }
    assert stats.groups == ()
    assert stats.totals == oracle(RECORDS)


async def test_an_empty_window_has_zeros_and_no_percentiles(log: RequestLog, way: str) -> None:
    stats = await log.stats(StatsQuery(window=Window(since=BASE - HOUR, until=BASE)))
    assert stats.totals == Aggregates()
    assert stats.totals.latency_ms == Percentiles(None, None, None)


@pytest.mark.parametrize("count", [1, 2, 3, 19, 20, 21, 100, 101, 199, 200])
async def test_percentiles_are_exact_nearest_rank(tmp_path: Path, way: str, count: int) -> None:
    """Distinct latencies 1..count, shuffled: pN is the value ranked ceil(N% of count)."""
    order = list(range(1, count + 1))
    random.Random(count).shuffle(order)
    records = [
        attrs.evolve(RECORDS[0], request_id=f"r{n}", latency_ms=latency, ttfb_ms=None)
        for n, latency in enumerate(order)
    ]
    path = str(tmp_path / "p.db")
    with trio.fail_after(DEADLINE_S):
        await write(path, records)
        log = await RequestLog.open(path)
        try:
            stats = await log.stats(StatsQuery(window=Window(since=0, until=BASE * 2)))
        finally:
            await log.aclose()
    expected = [math.ceil(p * count / 100) for p in (50, 95, 99)]
    assert stats.totals.latency_ms == Percentiles(*expected)
    assert stats.totals.ttfb_ms == Percentiles()


# --- the plan: no sort where the index can give the order --------------------------------


async def test_stats_over_most_of_the_log_sort_nothing(tmp_path: Path) -> None:
    """Over a window holding most of the log, no statement of /v1/stats uses a temporary
    B-tree (SQLite's sorter): the timings come from their covering indexes in order."""
    path = str(tmp_path / "arbstr.db")
    with trio.fail_after(DEADLINE_S):
        await write(path, RECORDS)
    statements: list[str] = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        connection.set_trace_callback(statements.append)
        query = stats_query(filters=Filters(provider="alpha", streaming=True))
        stats_module.compute_stats(connection, query)
        connection.set_trace_callback(None)
        plans = {
            sql: [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}")]
            for sql in statements
            if sql.lstrip().startswith("SELECT") and "max(id)" not in sql
        }
    assert len(plans) == 3, plans  # the sums and two histograms
    for sql, plan in plans.items():
        assert not any("TEMP B-TREE" in step for step in plan), (sql, plan)
    assert sum(any("COVERING INDEX requests_" in s for s in plan) for plan in plans.values()) == 2


# --- listing --------------------------------------------------------------------------


async def all_pages(log: RequestLog, query: ListQuery) -> list[LoggedRequest]:
    seen: list[LoggedRequest] = []
    while True:
        page = await log.requests(query)
        assert len(page.rows) <= query.limit
        seen.extend(page.rows)
        if page.next is None:
            return seen
        assert len(page.rows) == query.limit
        query = attrs.evolve(query, after=page.next)


def ordered(records: Iterable[RequestRecord], sort: Sort) -> list[str]:
    """The oracle's order: by the column, NULLs last, then by write order (row id)."""
    indexed = list(enumerate(records))
    present = [(i, r) for i, r in indexed if getattr(r, sort.column) is not None]
    missing = [(i, r) for i, r in indexed if getattr(r, sort.column) is None]
    present.sort(key=lambda ir: (getattr(ir[1], sort.column), ir[0]), reverse=sort.descending)
    missing.sort(key=lambda ir: ir[0], reverse=sort.descending)
    return [r.request_id for _, r in present + missing]


@pytest.mark.parametrize("column", ["started_at", "latency_ms", "cost_msat", "ttfb_ms"])
@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("limit", [1, 7, 500])
async def test_pages_visit_every_row_once_in_sort_order(
    log: RequestLog, column: str, descending: bool, limit: int
) -> None:
    sort = Sort(column, descending)
    rows = await all_pages(log, ListQuery(window=Window(), sort=sort, limit=limit))
    assert [row.record.request_id for row in rows] == ordered(RECORDS, sort)


async def test_rows_read_back_as_written(log: RequestLog) -> None:
    page = await log.requests(ListQuery(window=Window(), limit=500))
    by_id = {row.record.request_id: row for row in page.rows}
    for record in RECORDS:
        row = by_id[record.request_id]
        assert row.record == attrs.evolve(record, attempts=())
        assert row.attempt_count == len(record.attempts)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        *FILTERS,
        (Filters(status=502), lambda r: r.status == 502),
        (Filters(error_type="stream_truncated"), lambda r: r.error_type == "stream_truncated"),
        (Filters(status=200, success=False), lambda r: r.status == 200 and not r.success),
    ],
)
async def test_listing_filters(
    log: RequestLog, filters: Filters, keep: Callable[[RequestRecord], bool]
) -> None:
    query = ListQuery(window=Window(), filters=filters, limit=4)
    rows = await all_pages(log, query)
    assert [r.record.request_id for r in rows] == ordered(filter(keep, RECORDS), query.sort)


async def test_listing_window_and_parsed_parameters(log: RequestLog) -> None:
    query = parse_list_query(
        [("since", "2023-11-15T02:00:00Z"), ("sort", "latency_ms"), ("limit", "5")], BASE
    )
    rows = await all_pages(log, query)
    kept = in_window(RECORDS, BASE + 2 * HOUR, math.inf)
    assert [r.record.request_id for r in rows] == ordered(kept, Sort("latency_ms", False))


async def test_a_cursor_is_stable_while_new_requests_arrive(tmp_path: Path) -> None:
    path = str(tmp_path / "arbstr.db")
    with trio.fail_after(DEADLINE_S):
        await write(path, RECORDS[:30])
        log = await RequestLog.open(path)
        try:
            first = await log.requests(ListQuery(window=Window(), limit=10))
            newer = [
                attrs.evolve(r, request_id=f"new-{r.request_id}", started_at=BASE + 4 * HOUR)
                for r in RECORDS[30:]
            ]
            await write(path, newer)
            assert first.next is not None
            rest = await all_pages(log, ListQuery(window=Window(), limit=10, after=first.next))
        finally:
            await log.aclose()
    seen = [r.record.request_id for r in [*first.rows, *rest]]
    assert seen == ordered(RECORDS[:30], Sort("started_at", True))  # no repeats, no skips


async def test_the_last_page_has_no_cursor(log: RequestLog) -> None:
    page = await log.requests(ListQuery(window=Window(), limit=len(RECORDS)))
    assert len(page.rows) == len(RECORDS)
    assert page.next is None
    page = await log.requests(ListQuery(window=Window(), limit=len(RECORDS) - 1))
    last = page.rows[-1]
    assert page.next == Cursor(Sort("started_at", True), last.record.started_at, last.row_id)


# --- by id ----------------------------------------------------------------------------


async def test_a_request_by_id_comes_with_its_attempts_in_order(log: RequestLog) -> None:
    record = RECORDS[5]
    assert len(record.attempts) == 2
    found = await log.request(record.request_id)
    assert found is not None
    assert found.record == record
    assert found.attempt_count == 2


async def test_an_unknown_id_is_none(log: RequestLog) -> None:
    assert await log.request("req-999") is None


async def test_a_reused_id_finds_the_latest(tmp_path: Path) -> None:
    path = str(tmp_path / "arbstr.db")
    first = attrs.evolve(RECORDS[1], request_id="mine")
    second = attrs.evolve(RECORDS[0], request_id="mine", started_at=RECORDS[1].started_at - 1)
    with trio.fail_after(DEADLINE_S):
        await write(path, [first, second])
        log = await RequestLog.open(path)
        try:
            found = await log.request("mine")
        finally:
            await log.aclose()
    assert found is not None
    assert found.record == second  # the last written, though it started earlier


# --- the reader itself ----------------------------------------------------------------


async def test_reads_see_what_the_writer_wrote_since(tmp_path: Path) -> None:
    path = str(tmp_path / "arbstr.db")
    writer = RecordWriter(path)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            log = await RequestLog.open(path)
            query = parse_stats_query([("since", "2023-11-15"), ("until", "2023-11-16")], BASE)
            try:
                for count in (10, 25):
                    for record in RECORDS[writer.rows_written : count]:
                        await writer.record(record)
                    await writer.flushed(count)
                    assert (await log.stats(query)).totals.requests == count
            finally:
                writer.close()
                await log.aclose()


async def test_concurrent_reads_each_get_their_answer(log: RequestLog) -> None:
    answers: list[int] = []

    async def ask(group_by: str | None) -> None:
        stats = await log.stats(stats_query(group_by=group_by))
        answers.append(stats.totals.requests)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for key in (None, "model", "provider", "policy", "tier", None):
                nursery.start_soon(ask, key)
    assert answers == [len(RECORDS)] * 6


async def test_closing_interrupts_a_running_read(tmp_path: Path) -> None:
    path = str(tmp_path / "arbstr.db")
    with trio.fail_after(DEADLINE_S):
        await write(path, RECORDS[:1])
        log = await RequestLog.open(path)
        failures: list[BaseException] = []

        def endless(connection: sqlite3.Connection, _: None) -> object:
            forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)"
            return connection.execute(f"{forever} SELECT count(*) FROM n").fetchone()

        async def read_forever(task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            try:
                await log._read(endless, None)
            except sqlite3.OperationalError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(read_forever)
            await trio.testing.wait_all_tasks_blocked()
            await log.aclose()
    assert [str(f) for f in failures] == ["interrupted"]
