"""What each client key has spent since a moment: budgets' memory across restarts."""

from __future__ import annotations

import sqlite3

__all__ = ["spent_since"]

# Served from requests_started_at_client_key (migration 3) without touching the table.
_SPENT_SINCE = """
    SELECT client_key, SUM(cost_msat) FROM requests
    WHERE client_key IS NOT NULL AND started_at >= ? AND cost_msat IS NOT NULL
    GROUP BY client_key
"""


def spent_since(connection: sqlite3.Connection, since: float) -> dict[str, int]:
    """Key name -> msat its logged requests that started at or after ``since`` cost.

    A request whose cost is unknown (no usage reported) adds nothing here, though the
    running proxy counted its whole reservation as spent: the log keeps no guesses.
    """
    rows = connection.execute(_SPENT_SINCE, (since,)).fetchall()
    return {str(key): int(total) for key, total in rows}
