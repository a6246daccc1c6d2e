"""Each key's logged spend since a moment: what budgets restart from."""

from __future__ import annotations

import contextlib
from pathlib import Path

from arbstr_trio.store.schema import connect, migrate
from arbstr_trio.store.spend import _SPENT_SINCE, spent_since


def test_spend_is_summed_per_key_from_the_moment_on(tmp_path: Path) -> None:
    rows = [
        # (started_at, client_key, cost_msat, budget_msat)
        (99.9, "a", 1_000, 1_000),  # before the period
        (100.0, "a", 250, 250),  # at its very start
        (150.0, "a", 1, 1),
        (160.0, "a", None, 40),  # usage missing: its whole reservation was kept as spent
        (165.0, "a", None, None),  # no answer: nothing was spent
        (170.0, "b", 7, None),  # logged before migration 4: its cost is what it counted
        (180.0, None, 5_000, None),  # no key configured then
    ]
    with contextlib.closing(connect(str(tmp_path / "log.db"))) as db:
        migrate(db)
        db.executemany(
            "INSERT INTO requests (request_id, started_at, finished_at, streaming, status,"
            " success, usage_missing, latency_ms, attempts, client_key, cost_msat, budget_msat)"
            " VALUES ('r', ?, ?, 0, 200, 1, 0, 1, 1, ?, ?, ?)",
            [(at, at, key, cost, budget) for at, key, cost, budget in rows],
        )
        assert spent_since(db, 100.0) == {"a": 291, "b": 7}
        assert spent_since(db, 200.0) == {}
        plan = " ".join(
            str(row[-1])
            for row in db.execute("EXPLAIN QUERY PLAN " + _SPENT_SINCE, (100.0,)).fetchall()
        )
        assert "COVERING INDEX requests_started_at_client_key" in plan
