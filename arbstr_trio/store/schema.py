"""The request log's tables, and the migrations that bring any older file up to date.

The schema version lives in SQLite's own ``PRAGMA user_version``. Each migration is
a script applied once, in order, in one transaction with the version bump, so a file
is always at a whole version, and a new column never needs a manual step.
"""

from __future__ import annotations

import logging
import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "connect", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: requests and their attempts.
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        model TEXT,
        upstream_model TEXT,
        provider TEXT,
        tier TEXT,
        policy TEXT,
        streaming INTEGER NOT NULL,
        status INTEGER NOT NULL,
        success INTEGER NOT NULL,
        error_type TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost_msat INTEGER,
        usage_missing INTEGER NOT NULL,
        max_cost_msat INTEGER,
        latency_ms INTEGER NOT NULL,
        ttfb_ms INTEGER,
        stream_ms INTEGER,
        attempts INTEGER NOT NULL,
        client_key TEXT
    );
    CREATE INDEX requests_started_at ON requests (started_at);
    CREATE INDEX requests_request_id ON requests (request_id);
    CREATE INDEX requests_provider_started_at ON requests (provider, started_at);
    CREATE INDEX requests_model_started_at ON requests (model, started_at);
    CREATE TABLE attempts (
        request INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        provider TEXT NOT NULL,
        started_at REAL NOT NULL,
        duration_ms INTEGER,
        outcome TEXT NOT NULL,
        status INTEGER,
        error TEXT,
        hedge INTEGER NOT NULL,
        PRIMARY KEY (request, seq)
    ) WITHOUT ROWID;
    """,
    # 2: covering indexes that hand /v1/stats each timing already sorted, with the
    # columns it filters and groups by, so its percentiles need no sort (store/stats.py).
    """
    CREATE INDEX requests_latency_ms ON requests (
        latency_ms, started_at, provider, model, policy, tier, streaming, success
    );
    CREATE INDEX requests_ttfb_ms ON requests (
        ttfb_ms, started_at, provider, model, policy, tier, streaming, success
    ) WHERE ttfb_ms IS NOT NULL;
    """,
    # 3: each client key's spend since a moment (budgets, on start): the period's rows
    # only, read from the index alone (store/spend.py).
    """
    CREATE INDEX requests_started_at_client_key ON requests (
        started_at, client_key, cost_msat
    ) WHERE client_key IS NOT NULL;
    """,
    # 4: what each request counted against its key's budget, which is more than its
    # cost_msat when that is unknown (the whole reservation stays spent): budgets
    # restart from this. The index of migration 3 is replaced to cover it.
    """
    ALTER TABLE requests ADD COLUMN budget_msat INTEGER;
    DROP INDEX requests_started_at_client_key;
    CREATE INDEX requests_started_at_client_key ON requests (
        started_at, client_key, budget_msat, cost_msat
    ) WHERE client_key IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection for one thread at a time (trio hands it from worker to worker)."""
    if read_only:
        connection = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        connection.execute("PRAGMA query_only = ON")
    else:
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL: readers never block the writer nor it them; NORMAL is durable across a
        # process crash (only a power loss can lose the last transactions).
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            log.warning(
                "%s: this file system does not support SQLite's WAL journal (%s instead): "
                "reading the request log will block writing it",
                path,
                mode,
            )
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


def migrate(connection: sqlite3.Connection) -> int:
    """Apply what this file lacks; return the version it had. Refuses a newer file."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database is at schema version {version}, newer than this arbstr-trio "
            f"knows ({SCHEMA_VERSION}); upgrade arbstr-trio or point [database] path elsewhere"
        )
    for number in range(version, SCHEMA_VERSION):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[number]):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number + 1}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    return int(version)


def _statements(script: str) -> list[str]:
    # executescript() would commit our transaction; split instead (no ';' inside strings).
    return [statement.strip() for statement in script.split(";") if statement.strip()]
