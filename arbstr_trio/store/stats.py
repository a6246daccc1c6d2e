"""What the log adds up to over a window: counts, tokens, cost, savings and exact percentiles.

For a window (the whole one, or each bucket of a time series in turn), three statements,
each one pass over the matching rows: the sums, ``GROUP BY`` the group key if any, and
a histogram per timing, one row per distinct millisecond value with its count, so it
stays small however many requests it counts. Percentiles are exact, by nearest rank
(the smallest value with at least p% of the values at or below it), read off a
histogram's cumulative counts. A bucket across its groups, and the totals across the
buckets, are finer histograms merged in Python, not more passes over the table.

Most of the time is SQLite's: about 0.4 s of one core per million rows for the sums,
and for each histogram either a sort (``GROUP BY`` uses SQLite's sorter, 0.5 to 1 s per
million rows) or a walk. Schema migration 2's covering indexes hold each timing in
order, then ``started_at`` and the columns stats filter and group by; when the window
holds a good share of the log, a histogram is read off its index in order, with no
sort, each group (known from the sums) a FILTERed count in the same pass. A small
window (an hourly bucket, the last hour) sorts just its own rows instead.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping

import attrs

from arbstr_trio.store.query import BUCKETS, StatsQuery, Window
from arbstr_trio.store.where import where

__all__ = ["PERCENTILES", "Aggregates", "Bucket", "Group", "Percentiles", "Stats", "compute_stats"]

PERCENTILES = (50, 95, 99)
_TIMINGS = ("latency_ms", "ttfb_ms")
_SUMS = """
    count(*), sum(success), sum(prompt_tokens), sum(completion_tokens), sum(cost_msat),
    sum(max_cost_msat - cost_msat), sum(usage_missing)
"""
_SUM_FIELDS = (
    "requests",
    "successes",
    "prompt_tokens",
    "completion_tokens",
    "cost_msat",
    "savings_msat",
    "usage_missing",
)
_WALK_SHARE = 4
"""Walk a timing's index instead of sorting when the window holds at least 1/4 of the
log: a walk visits every entry, cheaply; a sort costs several times more per row."""
_MAX_WALK_GROUPS = 16
"""Past this many groups, a FILTERed count per group costs more than the sort it saves."""
_INDEXED = frozenset({"provider", "model", "policy", "tier", "streaming", "success"})
"""The columns the timing indexes carry after ``started_at`` (schema migration 2)."""

Histogram = dict[int, int]


@attrs.frozen
class Percentiles:
    """Nearest-rank percentiles in milliseconds; None when there were no values."""

    p50: int | None = None
    p95: int | None = None
    p99: int | None = None


@attrs.frozen(kw_only=True)
class Aggregates:
    requests: int = 0
    successes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_msat: int = 0
    savings_msat: int = 0
    """What the dearest eligible candidate would have cost, less what was paid, over
    the requests where both are known."""
    usage_missing: int = 0
    """Requests answered by a provider that reported no usage (their cost is unknown)."""
    latency_ms: Percentiles = Percentiles()
    ttfb_ms: Percentiles = Percentiles()

    @property
    def errors(self) -> int:
        """Requests that did not end in a complete answer, client disconnects included."""
        return self.requests - self.successes


@attrs.frozen
class Group:
    key: str | None
    aggregates: Aggregates


@attrs.frozen
class Bucket:
    start: float
    """Unix seconds, on a UTC hour or day boundary."""
    aggregates: Aggregates
    groups: tuple[Group, ...] = ()


@attrs.frozen
class Stats:
    totals: Aggregates
    groups: tuple[Group, ...] = ()
    """With ``group_by`` and no ``bucket``: busiest first."""
    buckets: tuple[Bucket, ...] = ()
    """With ``bucket``: every bucket of the window in time order, empty ones included;
    each has its ``groups`` when ``group_by`` is given too."""


@attrs.define
class _Cell:
    """The sums and timing histograms of one combination of keys, mergeable."""

    sums: list[int] = attrs.field(factory=lambda: [0] * len(_SUM_FIELDS))
    timings: tuple[Histogram, Histogram] = attrs.field(factory=lambda: ({}, {}))

    def merge(self, other: _Cell) -> None:
        self.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
        for mine, theirs in zip(self.timings, other.timings, strict=True):
            for value, count in theirs.items():
                mine[value] = mine.get(value, 0) + count

    def aggregates(self) -> Aggregates:
        latency, ttfb = (percentiles(histogram) for histogram in self.timings)
        return Aggregates(
            **dict(zip(_SUM_FIELDS, self.sums, strict=True)), latency_ms=latency, ttfb_ms=ttfb
        )


def compute_stats(connection: sqlite3.Connection, query: StatsQuery) -> Stats:
    """The stats ``query`` asks for (run inside one read transaction, for one snapshot)."""
    logged = _logged_rows(connection)
    if query.bucket is None:
        cells = _cells(connection, query.window, query, logged)
        groups = _groups(cells) if query.group_by is not None else ()
        return Stats(totals=_merged(cells.values()).aggregates(), groups=groups)
    totals = _Cell()
    buckets = []
    for start, since, until in _bucket_bounds(query.window, BUCKETS[query.bucket]):
        cells = _cells(connection, Window(since=since, until=until), query, logged)
        cell = _merged(cells.values())
        totals.merge(cell)
        groups = _groups(cells) if query.group_by is not None else ()
        buckets.append(Bucket(start, cell.aggregates(), groups))
    return Stats(totals=totals.aggregates(), buckets=tuple(buckets))


def percentiles(histogram: Mapping[int, int]) -> Percentiles:
    """Nearest-rank :data:`PERCENTILES` of the values ``histogram`` counts."""
    total = sum(histogram.values())
    if not total:
        return Percentiles()
    ranks = [(p * total + 99) // 100 for p in PERCENTILES]  # ceil(p/100 * total), exactly
    found: list[int] = []
    seen = 0
    for value, count in sorted(histogram.items()):
        seen += count
        while len(found) < len(ranks) and seen >= ranks[len(found)]:
            found.append(value)
        if len(found) == len(ranks):
            break
    return Percentiles(*found)


def _cells(
    connection: sqlite3.Connection, window: Window, query: StatsQuery, logged: int
) -> dict[str | None, _Cell]:
    """One cell per group (or one, keyed None, without ``group_by``) over ``window``."""
    key = query.group_by
    clause, parameters = where(window, query.filters)
    cells: dict[str | None, _Cell] = {}
    select, group = ("", "") if key is None else (f"{key}, ", " GROUP BY 1")
    sql = f"SELECT {select}{_SUMS} FROM requests WHERE {clause}{group}"
    for row in connection.execute(sql, parameters):
        name, sums = (None, row) if key is None else (row[0], row[1:])
        if sums[0]:
            cells[name] = _Cell(sums=[value or 0 for value in sums])
    in_window = sum(cell.sums[0] for cell in cells.values())
    walk = (
        in_window > 0
        and in_window * _WALK_SHARE >= logged
        and len(cells) <= _MAX_WALK_GROUPS
        and query.filters.given().keys() <= _INDEXED
    )
    for slot, timing in enumerate(_TIMINGS):
        if walk:
            _walk(connection, timing, key, clause, parameters, cells, slot)
        else:
            _sort(connection, timing, key, clause, parameters, cells, slot)
    return cells


def _walk(
    connection: sqlite3.Connection,
    timing: str,
    key: str | None,
    clause: str,
    parameters: list[object],
    cells: dict[str | None, _Cell],
    slot: int,
) -> None:
    """The timing's histograms read off its covering index, in order: no sort. Each
    group, known from the sums, is a FILTERed count of its own, in the same pass."""
    names = list(cells)
    counts = (
        "count(*)"
        if key is None
        else ", ".join(f"count(*) FILTER (WHERE {key} IS ?)" for _ in names)
    )
    sql = (
        f"SELECT {timing}, {counts} FROM requests INDEXED BY requests_{timing} "
        f"WHERE {clause} AND {timing} IS NOT NULL GROUP BY 1"
    )
    bound = parameters if key is None else [*names, *parameters]
    for value, *per_group in connection.execute(sql, bound):
        for name, count in zip(names, per_group, strict=True):
            if count:
                cells[name].timings[slot][value] = count


def _sort(
    connection: sqlite3.Connection,
    timing: str,
    key: str | None,
    clause: str,
    parameters: list[object],
    cells: dict[str | None, _Cell],
    slot: int,
) -> None:
    """The timing's histograms by ``GROUP BY``, which sorts the matching rows.

    A unary ``+`` keeps the planner off the timing's index (SQLite's documented way to
    make a term unusable for choosing one): left alone, it would rather walk the whole
    covering index than sort a small window.
    """
    select, group = ("", timing) if key is None else (f"{key}, ", f"{key}, {timing}")
    sql = (
        f"SELECT {select}{timing}, count(*) FROM requests "
        f"WHERE {clause} AND +{timing} IS NOT NULL GROUP BY {group}"
    )
    for row in connection.execute(sql, parameters):
        name, value, count = (None, *row) if key is None else row
        cells.setdefault(name, _Cell()).timings[slot][value] = count


def _logged_rows(connection: sqlite3.Connection) -> int:
    """About how many rows the log holds (exact unless rows were deleted midway)."""
    (logged,) = connection.execute("SELECT max(id) - min(id) + 1 FROM requests").fetchone()
    return int(logged or 0)


def _bucket_bounds(window: Window, width: int) -> list[tuple[float, float, float]]:
    """Every UTC-aligned bucket the window touches: its start, and its part of the window."""
    assert window.since is not None  # a stats window is always bounded
    assert window.until is not None
    first, last = math.floor(window.since / width), math.ceil(window.until / width)
    return [
        (
            float(n * width),
            max(float(n * width), window.since),
            min(float((n + 1) * width), window.until),
        )
        for n in range(first, last)
    ]


def _merged(cells: Iterable[_Cell]) -> _Cell:
    merged = _Cell()
    for cell in cells:
        merged.merge(cell)
    return merged


def _groups(cells: Mapping[str | None, _Cell]) -> tuple[Group, ...]:
    groups = [Group(key, cell.aggregates()) for key, cell in cells.items()]
    groups.sort(key=lambda g: (-g.aggregates.requests, g.key is None, g.key or ""))
    return tuple(groups)
