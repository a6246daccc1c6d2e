"""Fill a request log with synthetic requests, fast, for benchmarks of the read side.

    python bench/fill_log.py PATH [--rows 1000000] [--hours 24] [--no-attempts]

Rows go in through plain ``executemany`` in large transactions, not through the
writer task (which a separate bench measures): the point is a realistic log to query,
built quickly (a million rows in about 25 s). The file is created and migrated by the
proxy's own schema module, so it has exactly the tables and indexes a running proxy
would have.

The mix looks like a busy proxy's: five models, four providers in three tiers, three
policies, half the requests streamed, about 5% failing (some with no provider, some
cut off midway), about 1% without usage, latencies spread log-normally. Start times
are evenly spread over the ``hours`` before now (or before ``end``), in id order.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arbstr_trio.store.schema import connect, migrate

__all__ = ["fill_log"]

_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large")
_MODEL_WEIGHTS = (40, 20, 15, 15, 10)
# name, tier, input rate, output rate (sats per 1M tokens)
_PROVIDERS = (
    ("alpha", "standard", 150, 600),
    ("beta", "standard", 300, 1200),
    ("gamma", "frontier", 500, 2000),
    ("local", "local", 0, 0),
)
_PROVIDER_WEIGHTS = (45, 25, 20, 10)
_POLICIES = ("default", "cheap", "quality")
_BATCH = 50_000

_INSERT_REQUEST = """
    INSERT INTO requests (
        id, request_id, started_at, finished_at, model, upstream_model, provider, tier, policy,
        streaming, status, success, error_type, prompt_tokens, completion_tokens, cost_msat,
        usage_missing, max_cost_msat, latency_ms, ttfb_ms, stream_ms, attempts, client_key
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_ATTEMPT = """
    INSERT INTO attempts (request, seq, provider, started_at, duration_ms, outcome, status,
                          error, hedge)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

Row = tuple[object, ...]


def fill_log(
    path: str,
    rows: int,
    *,
    hours: float = 24.0,
    end: float | None = None,
    seed: int = 0,
    attempts: bool = True,
) -> None:
    """Append ``rows`` synthetic requests (and one attempt each) to the log at ``path``."""
    end = time.time() if end is None else end
    connection = connect(path)
    try:
        migrate(connection)
        # Index pages stay in memory between batches (256 MiB), and no fsync: a bench
        # file that a crash loses is simply made again.
        connection.execute("PRAGMA cache_size = -262144")
        connection.execute("PRAGMA synchronous = OFF")
        (last_id,) = connection.execute("SELECT coalesce(max(id), 0) FROM requests").fetchone()
        generated = _generate(random.Random(seed), rows, end - hours * 3600.0, end, last_id + 1)
        while True:
            batch = [row for _, row in zip(range(_BATCH), generated, strict=False)]
            if not batch:
                break
            connection.execute("BEGIN")
            connection.executemany(_INSERT_REQUEST, batch)
            if attempts:
                connection.executemany(_INSERT_ATTEMPT, [_attempt(row) for row in batch])
            connection.execute("COMMIT")
    finally:
        connection.close()


def _generate(
    rng: random.Random, rows: int, start: float, end: float, first_id: int
) -> Iterator[Row]:
    step = (end - start) / max(rows, 1)
    # Categorical columns drawn in bulk: choices() per row would cost more than the rest.
    models = rng.choices(_MODELS, _MODEL_WEIGHTS, k=rows)
    providers = rng.choices(_PROVIDERS, _PROVIDER_WEIGHTS, k=rows)
    policies = rng.choices(_POLICIES, k=rows)
    random_ = rng.random
    latency_mu, ttfb_mu = math.log(600), math.log(120)
    for index in range(rows):
        started = start + (index + random_()) * step
        model = models[index]
        name, tier_name, input_rate, output_rate = providers[index]
        tier: str | None = tier_name
        streaming = random_() < 0.5
        latency = max(1, round(rng.lognormvariate(latency_mu, 0.8)))
        ttfb: int | None = max(1, min(latency, round(rng.lognormvariate(ttfb_mu, 0.6))))
        prompt: int | None = 5 + int(random_() * 3996)
        completion: int | None = 1 + int(random_() * 1500)
        fate = random_()
        provider: str | None = name
        status, success, error_type = 200, True, None
        if fate < 0.02:  # every candidate failed: nobody answered
            provider, tier, ttfb, prompt, completion = None, None, None, None, None
            status, success, error_type = 502, False, "upstream_http_503"
        elif fate < 0.04 and streaming:  # the stream broke midway
            status, success, error_type = 200, False, "stream_truncated"
        elif fate < 0.05:
            status, success, error_type = 499, False, "client_disconnected"
        usage_missing = provider is not None and random_() < 0.01
        if usage_missing:
            prompt, completion = None, None
        cost = max_cost = None
        if prompt is not None and completion is not None:
            cost = (prompt * input_rate + completion * output_rate) // 1000
            max_cost = (prompt * 500 + completion * 2000) // 1000
        yield (
            first_id + index,
            f"{first_id + index:032x}",
            started,
            started + latency / 1000,
            model,
            model if provider is not None else None,
            provider,
            tier,
            policies[index],
            streaming,
            status,
            success,
            error_type,
            prompt,
            completion,
            cost,
            usage_missing,
            max_cost,
            latency,
            ttfb,
            latency - ttfb if streaming and ttfb is not None else None,
            1,
            None,
        )


def _attempt(row: Row) -> Row:
    request, provider, started, latency, status = row[0], row[6], row[2], row[18], row[10]
    outcome = "ok" if provider is not None else "http_503"
    return (request, 0, provider or "alpha", started, latency, outcome, status, None, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--no-attempts", action="store_true")
    args = parser.parse_args()
    began = time.perf_counter()
    fill_log(args.path, args.rows, hours=args.hours, attempts=not args.no_attempts)
    elapsed = time.perf_counter() - began
    print(f"{args.rows} rows in {elapsed:.1f} s -> {args.path}")


if __name__ == "__main__":
    main()
