"""What each client key has spent since a moment: budgets' memory across restarts."""

from __future__ import annotations

import sqlite3

__all__ = ["spent_since"]

# Served from requests_started_at_client_key (migration 4) without touching the table.
# Rows logged before migration 4 have no budget_msat; their cost is what they counted.
_SPENT_SINCE = """
    SELECT client_key, SUM(COALESCE(budget_msat, cost_msat)) FROM requests
    WHERE client_key IS NOT NULL AND started_at >= ?
        AND COALESCE(budget_msat, cost_msat) IS NOT NULL
    GROUP BY client_key
"""


def spent_since(connection: sqlite3.Connection, since: float) -> dict[str, int]:
    """Key name -> msat its logged requests that started at or after ``since`` counted
    against its budget: their cost, or, where that is unknown (no usage reported, a
    client gone mid-stream), the whole reservation the running proxy kept as spent.
    """
    rows = connection.execute(_SPENT_SINCE, (since,)).fetchall()
    return {str(key): int(total) for key, total in rows}
