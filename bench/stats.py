"""How long ``/v1/stats`` and ``/v1/requests`` take over a large request log.

    python bench/stats.py [--rows 1000000] [--db PATH] [--repeat 3] [--json PATH]

Fills a fresh log with ``rows`` synthetic requests spread over 24 hours
(``bench/fill_log.py``), or reuses the file given with ``--db``, then asks the
proxy's own :class:`~arbstr_trio.store.reader.RequestLog` (its read-only connection
on a worker thread, as the endpoints do) a series of questions, each ``repeat``
times, and prints the best and the median time of each. Every question's window is
the whole file, so every row counts: the worst case for a day's worth of traffic.
The JSON rendering and HTTP around an answer add about a millisecond and are not
included.

The reader runs one query at a time on one core, and SQLite releases the GIL while it
works, so what is measured here is also what the proxy's other core keeps free.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fill_log import fill_log
from report import machine

from arbstr_trio.store.query import parse_list_query, parse_stats_query
from arbstr_trio.store.reader import RequestLog

Params = list[tuple[str, str]]
STATS_QUESTIONS: list[tuple[str, Params]] = [
    ("stats: no parameters", []),
    ("stats: provider=alpha", [("provider", "alpha")]),
    ("stats: success=false", [("success", "false")]),
    ("stats: streaming=true", [("streaming", "true")]),
    ("stats: group_by=provider", [("group_by", "provider")]),
    ("stats: group_by=model", [("group_by", "model")]),
    ("stats: bucket=hour", [("bucket", "hour")]),
    ("stats: bucket=hour&group_by=tier", [("bucket", "hour"), ("group_by", "tier")]),
]
LIST_QUESTIONS: list[tuple[str, Params]] = [
    ("requests: newest 50", []),
    ("requests: slowest 50", [("sort", "-latency_ms")]),
    ("requests: costliest 50 of alpha", [("sort", "-cost_msat"), ("provider", "alpha")]),
]


async def measure(repeat: int, ask: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await ask()
        times.append(time.perf_counter() - began)
    return times


async def run(path: str, repeat: int) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as connection:
        first, last, count = connection.execute(
            "SELECT min(started_at), max(started_at), count(*) FROM requests"
        ).fetchone()
    until = _iso(last + 0.001)  # a millisecond either side: the ISO text rounds
    whole: Params = [("since", _iso(first - 0.001)), ("until", until)]
    hour: Params = [("since", _iso(last - 3600)), ("until", until)]
    now = time.time()
    results = []
    log = await RequestLog.open(path)
    try:
        questions = [(name, [*whole, *params]) for name, params in STATS_QUESTIONS]
        questions.append(("stats: the last hour only", hour))
        for name, params in questions:
            query = parse_stats_query(params, now)
            answer = await log.stats(query)
            times = await measure(repeat, functools.partial(log.stats, query))
            results.append(_result(name, times, answer.totals.requests))
        for name, params in LIST_QUESTIONS:
            listing = parse_list_query(params, now)
            page = await log.requests(listing)
            times = await measure(repeat, functools.partial(log.requests, listing))
            results.append(_result(name, times, len(page.rows)))
    finally:
        await log.aclose()
    print(f"{count} rows in {path}")
    return results


def _result(name: str, times: list[float], rows: int) -> dict[str, Any]:
    return {
        "question": name,
        "rows": rows,
        "best_ms": round(min(times) * 1000, 1),
        "median_ms": round(statistics.median(times) * 1000, 1),
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", help="reuse this log instead of filling a fresh one")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arbstr-bench-") as scratch:
        path = args.db
        if path is None or not os.path.exists(path):
            path = path or f"{scratch}/arbstr.db"
            began = time.perf_counter()
            fill_log(path, args.rows)
            print(f"filled {args.rows} rows in {time.perf_counter() - began:.1f} s")
        results = trio.run(run, path, args.repeat)
    print(f"{'question':<36} {'rows':>9} {'best ms':>9} {'median ms':>10}")
    for result in results:
        print(
            f"{result['question']:<36} {result['rows']:>9} "
            f"{result['best_ms']:>9.1f} {result['median_ms']:>10.1f}"
        )
    if args.json:
        document = {"machine": machine(), "results": results}
        Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
