"""The one WHERE clause every read of the log uses: a time window and equality filters."""

from __future__ import annotations

from arbstr_trio.store.query import Filters, Window

__all__ = ["where"]


def where(window: Window, filters: Filters) -> tuple[str, list[object]]:
    """SQL text and its parameters. Values are always bound, never spliced; the column
    names are :class:`Filters`' own field names, never anything the client wrote."""
    clauses: list[str] = []
    parameters: list[object] = []
    if window.since is not None:
        clauses.append("started_at >= ?")
        parameters.append(window.since)
    if window.until is not None:
        clauses.append("started_at < ?")
        parameters.append(window.until)
    for column, value in filters.given().items():
        clauses.append(f"{column} = ?")
        parameters.append(value)
    return " AND ".join(clauses) or "1", parameters
