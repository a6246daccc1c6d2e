"""Reading requests back one by one: a page of a filtered, sorted listing, or one by id.

Pages are keyset-paginated: the cursor holds the last row's sort value and row id,
and the next page is the rows that sort after that pair. Unlike an offset, this
neither repeats nor skips rows when new requests are written between two pages, and
a deep page costs no more than the first. Rows sort by the chosen column, then by
row id in the same direction, so the order is total even among equal values; a
column's NULLs (no cost known, no first byte) come last in either direction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs

from arbstr_trio.store.query import Cursor, ListQuery, Sort
from arbstr_trio.store.records import AttemptRow, RequestRecord
from arbstr_trio.store.where import where

__all__ = ["LoggedRequest", "Page", "find_request", "list_requests"]

_RECORD_FIELDS = (
    "request_id",
    "started_at",
    "finished_at",
    "model",
    "upstream_model",
    "provider",
    "tier",
    "policy",
    "streaming",
    "status",
    "success",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "cost_msat",
    "max_cost_msat",
    "latency_ms",
    "ttfb_ms",
    "stream_ms",
    "client_key",
)
"""The columns read back into a :class:`RequestRecord`, named as its fields."""
_COLUMNS = ", ".join(("id", "attempts", *_RECORD_FIELDS))
_ATTEMPTS = """
    SELECT provider, started_at, duration_ms, outcome, status, error, hedge
    FROM attempts WHERE request = ? ORDER BY seq
"""
_NULLABLE = frozenset({"cost_msat", "ttfb_ms"})


@attrs.frozen
class LoggedRequest:
    row_id: int
    record: RequestRecord
    """As written; its ``attempts`` are filled in only by :func:`find_request`."""
    attempt_count: int


@attrs.frozen
class Page:
    rows: tuple[LoggedRequest, ...]
    next: Cursor | None
    """Where the next page starts; None when this page is the last."""


def list_requests(connection: sqlite3.Connection, query: ListQuery) -> Page:
    clause, parameters = where(query.window, query.filters)
    if query.after is not None:
        after, after_parameters = _after(query.after)
        clause = f"{clause} AND {after}"
        parameters = [*parameters, *after_parameters]
    sql = f"SELECT {_COLUMNS} FROM requests WHERE {clause} ORDER BY {_order(query.sort)} LIMIT ?"
    rows = connection.execute(sql, [*parameters, query.limit + 1]).fetchall()
    logged = tuple(_logged(row) for row in rows[: query.limit])
    next_cursor = None
    if len(rows) > query.limit:
        last = logged[-1]
        value = getattr(last.record, query.sort.column)
        next_cursor = Cursor(query.sort, value, last.row_id)
    return Page(logged, next_cursor)


def find_request(connection: sqlite3.Connection, request_id: str) -> LoggedRequest | None:
    """The latest request with this id (a client may reuse its own ids), with attempts."""
    row = connection.execute(
        f"SELECT {_COLUMNS} FROM requests WHERE request_id = ? ORDER BY id DESC LIMIT 1",
        (request_id,),
    ).fetchone()
    if row is None:
        return None
    logged = _logged(row)
    attempts = tuple(
        AttemptRow(
            provider=provider,
            started_at=started_at,
            duration_ms=duration_ms,
            outcome=outcome,
            status=status,
            error=error,
            hedge=bool(hedge),
        )
        for provider, started_at, duration_ms, outcome, status, error, hedge in connection.execute(
            _ATTEMPTS, (logged.row_id,)
        )
    )
    return attrs.evolve(logged, record=attrs.evolve(logged.record, attempts=attempts))


def _order(sort: Sort) -> str:
    direction = "DESC" if sort.descending else "ASC"
    nulls = " NULLS LAST" if sort.column in _NULLABLE else ""
    return f"{sort.column} {direction}{nulls}, id {direction}"


def _after(cursor: Cursor) -> tuple[str, list[object]]:
    """The rows that come after the cursor's row in its sort order."""
    column, beyond = cursor.sort.column, "<" if cursor.sort.descending else ">"
    if cursor.value is None:  # among the trailing NULLs already
        return f"({column} IS NULL AND id {beyond} ?)", [cursor.row_id]
    # A row value comparison lets SQLite seek an index on (column, id) straight there.
    clause = f"(({column}, id) {beyond} (?, ?)"
    if column in _NULLABLE:
        clause += f" OR {column} IS NULL"
    return clause + ")", [cursor.value, cursor.row_id]


def _logged(row: Any) -> LoggedRequest:
    row_id, attempt_count, *values = row
    fields = dict(zip(_RECORD_FIELDS, values, strict=True))
    fields["streaming"] = bool(fields["streaming"])
    fields["success"] = bool(fields["success"])
    return LoggedRequest(row_id, RequestRecord(**fields), attempt_count)
