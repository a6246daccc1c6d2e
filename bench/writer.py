"""How many request records a second the writer task puts on disk, sustained.

    python bench/writer.py [--records 200000] [--producers 64] [--dir DIR ...] [--json PATH]

Runs the proxy's own :class:`~arbstr_trio.store.writer.RecordWriter`, with the
settings the proxy uses, into a fresh database in ``DIR`` (by default the system's
temporary directory), fed by ``producers`` tasks that stand for request handlers
each handing over its record as fast as the writer takes them. The clock runs from
the first record handed over to the writer's ``run()`` returning, after ``close()``:
every row is committed, so the figure is what the writer sustains, queue drained.
The rate over the last fifth of the rows is shown too: indexes deepen as the file
grows, so a longer run ends slower than it starts.

The records are built beforehand, so their making is not measured, and look like a
busy proxy's: five models, four providers, half of them streamed, 1 to 3 attempts
each (a failed attempt or two before the one that answered), about 5% failing.

Rows per second depend on the filesystem under the database as much as on the CPU,
so each run names its directory and the filesystem it is on (``ext4``, ``tmpfs``...).
Compare a disk with memory by giving both: ``--dir /tmp --dir /dev/shm``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import machine, markdown

from arbstr_trio.store.records import AttemptRow, RequestRecord
from arbstr_trio.store.writer import RecordWriter

_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large")
# name, tier, input rate, output rate (sats per 1M tokens)
_PROVIDERS = (
    ("alpha", "standard", 150, 600),
    ("beta", "standard", 300, 1200),
    ("gamma", "frontier", 500, 2000),
    ("local", "local", 0, 0),
)
_POLICIES = ("default", "cheap", "quality")
_CLIENT_KEYS = ("team-a", "team-b", "ci", None)
_FAILED_ATTEMPTS = (
    ("http_503", 503, "upstream returned 503: overloaded"),
    ("http_429", 429, "upstream returned 429: rate limited"),
    ("timeout", None, "no response headers within 10000 ms"),
    ("connect_error", None, "connection refused"),
)


class CountingWriter(RecordWriter):
    """The proxy's writer, noting when each batch (one transaction) was committed."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.progress: list[tuple[float, int]] = []
        """(``perf_counter()``, rows written so far) after each batch."""

    async def _write(self, connection: sqlite3.Connection, batch: Sequence[RequestRecord]) -> None:
        await super()._write(connection, batch)
        self.progress.append((time.perf_counter(), self.rows_written))

    def tail_rate(self, share: float = 0.2) -> float:
        """Rows per second over the last ``share`` of the rows: each index deepens as
        the file grows, so the end of a run is slower than its average."""
        end_time, end_rows = self.progress[-1]
        start_time, start_rows = next(
            (t, rows) for t, rows in self.progress if rows >= end_rows * (1 - share)
        )
        return (end_rows - start_rows) / max(end_time - start_time, 1e-9)


def make_records(count: int, seed: int = 7) -> list[RequestRecord]:
    """``count`` plausible records, the same ones for the same seed."""
    rng = random.Random(seed)
    now = time.time()
    records = []
    for n in range(count):
        started = now - (count - n) * 0.01
        streaming = rng.random() < 0.5
        provider, tier, input_rate, output_rate = rng.choice(_PROVIDERS)
        failed = rng.random() < 0.05
        prompt = rng.randint(20, 4000)
        completion = rng.randint(1, 1500)
        latency_ms = int(rng.lognormvariate(6.5, 0.6))
        ttfb_ms = max(1, int(latency_ms * rng.uniform(0.1, 0.5)))
        cost = (prompt * input_rate + completion * output_rate) // 1000
        attempts = []
        offset = 0.0
        for seq in range(rng.choice((1, 1, 1, 2, 2, 3)) - 1):
            outcome, status, error = rng.choice(_FAILED_ATTEMPTS)
            duration = rng.randint(5, 900)
            attempts.append(
                AttemptRow(
                    provider=_PROVIDERS[(seq + 1) % len(_PROVIDERS)][0],
                    started_at=started + offset,
                    duration_ms=duration,
                    outcome=outcome,
                    status=status,
                    error=error,
                )
            )
            offset += duration / 1000
        attempts.append(
            AttemptRow(
                provider=provider,
                started_at=started + offset,
                duration_ms=ttfb_ms,
                outcome="http_502" if failed else "ok",
                status=502 if failed else 200,
                error="upstream returned 502" if failed else None,
            )
        )
        records.append(
            RequestRecord(
                request_id=f"{n:08x}-{rng.getrandbits(64):016x}",
                started_at=started,
                finished_at=started + latency_ms / 1000,
                model=rng.choice(_MODELS),
                upstream_model=None if failed else "upstream-model-2024-07-18",
                provider=None if failed else provider,
                tier=None if failed else tier,
                policy=rng.choice(_POLICIES),
                streaming=streaming,
                status=502 if failed else 200,
                success=not failed,
                error_type="upstream_error" if failed else None,
                prompt_tokens=None if failed else prompt,
                completion_tokens=None if failed else completion,
                cost_msat=None if failed else cost,
                max_cost_msat=None if failed else cost * 3,
                latency_ms=latency_ms,
                ttfb_ms=None if failed else ttfb_ms,
                stream_ms=latency_ms - ttfb_ms if streaming and not failed else None,
                client_key=rng.choice(_CLIENT_KEYS),
                attempts=tuple(attempts),
            )
        )
    return records


async def measure(directory: str, records: list[RequestRecord], producers: int) -> dict[str, Any]:
    """Write ``records`` into a fresh database in ``directory``; the figures of the run."""
    with tempfile.TemporaryDirectory(prefix="arbstr-bench-", dir=directory) as scratch:
        path = os.path.join(scratch, "requests.db")
        writer = CountingWriter(path)

        async def handler(share: Sequence[RequestRecord]) -> None:
            for record in share:
                await writer.record(record)

        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)  # created and migrated before the clock starts
            started = time.perf_counter()
            async with trio.open_nursery() as handlers:
                for i in range(producers):
                    handlers.start_soon(handler, records[i::producers])
            writer.close()
        seconds = time.perf_counter() - started
        size = database_bytes(scratch)
        attempts = sum(len(r.attempts) for r in records)
        assert writer.rows_written == len(records), "the writer lost records"
        return {
            "directory": directory,
            "filesystem": filesystem(directory),
            "rows": writer.rows_written,
            "attempt_rows": attempts,
            "seconds": round(seconds, 3),
            "rows_per_s": round(writer.rows_written / seconds),
            "rows_per_s_last_20pct": round(writer.tail_rate()),
            "batches": len(writer.progress),
            "rows_per_batch": round(writer.rows_written / max(len(writer.progress), 1), 1),
            "db_bytes": size,
        }


def database_bytes(directory: str) -> int:
    """The database's size on disk: its file, and its WAL if the writer left one."""
    return sum(path.stat().st_size for path in Path(directory).iterdir())


def filesystem(directory: str) -> str:
    """The type of the filesystem ``directory`` is on (Linux; "?" elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    target = os.path.realpath(directory)
    best, kind = "", "?"
    for line in mounts:
        fields = line.split()
        mount_point = fields[1]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best):
            best, kind = mount_point, fields[2]
    return kind


async def main(count: int, producers: int, directories: list[str], json_path: str | None) -> None:
    records = make_records(count)
    results = [await measure(directory, records, producers) for directory in directories]
    print(markdown_table(results))
    print(f"\n{producers} producers; machine: {machine(sqlite=sqlite3.sqlite_version)}")
    if json_path:
        document = {
            "machine": machine(sqlite=sqlite3.sqlite_version),
            "records": count,
            "producers": producers,
        }
        document["results"] = results
        await trio.Path(json_path).write_text(json.dumps(document, indent=2))


COLUMNS = (
    "directory (fs)",
    "rows",
    "attempt rows",
    "seconds",
    "rows/s",
    "rows/s, last 20%",
    "batches",
    "rows/batch",
    "DB MB",
)


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The table as Markdown, to paste into the README as it is."""
    rows = []
    for row in results:
        cells = [
            f"{row['directory']} ({row['filesystem']})",
            str(row["rows"]),
            str(row["attempt_rows"]),
            f"{row['seconds']:.2f}",
            f"{row['rows_per_s']:,}",
            f"{row['rows_per_s_last_20pct']:,}",
            str(row["batches"]),
            f"{row['rows_per_batch']:.0f}",
            f"{row['db_bytes'] / 1e6:.1f}",
        ]
        rows.append(cells)
    return markdown(COLUMNS, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--records", type=int, default=200_000, help="records to write (default: %(default)s)"
    )
    parser.add_argument(
        "--producers",
        type=int,
        default=64,
        help="tasks handing records over at once (default: %(default)s)",
    )
    parser.add_argument(
        "--dir",
        action="append",
        metavar="DIR",
        help="where to put the database; repeat to compare (default: the temporary directory, "
        f"here {tempfile.gettempdir()})",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    arguments = parser.parse_args()
    trio.run(
        main,
        arguments.records,
        arguments.producers,
        arguments.dir or [tempfile.gettempdir()],
        arguments.json,
    )
