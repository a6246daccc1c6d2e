"""The suite's phases: each drives the same load at direct, arbstr-trio and LiteLLM in turn.

Targets are interleaved within each scenario (direct, arbstr-trio, LiteLLM, then the
next scenario) so that a slow minute on this shared machine hits all three alike.
Every run waits first for its target to be idle, then fills the pipeline, then counts
over a steady-state window only (see :func:`window`): throughput from the upstream's
counters or the chunks reaching the client, CPU from /proc for the process tree that
stands between client and upstream, or, for "direct", for the upstream itself, which
shows what answering costs compared with what relaying costs.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from clients import (
    WrkRun,
    chat_body,
    first_byte_times,
    run_wrk,
    stream_load,
    upstream_counters,
)
from procs import Server, cpu_seconds, rss_bytes

__all__ = [
    "Settings",
    "Target",
    "failover",
    "memory",
    "nonstreaming",
    "store",
    "streaming",
    "targets_of",
    "workers_scaling",
]

BENCH_DIR = Path(__file__).resolve().parent


@attrs.frozen
class Settings:
    """Durations and sizes of every phase; ``--quick`` shrinks them all."""

    seconds: float = 5.0
    warmup: float = 1.0
    max_fill: float = 20.0
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    stream_cases: tuple[tuple[int, float], ...] = ((100, 0), (1000, 0), (100, 10), (1000, 10))
    stream_concurrency: int = 16
    paced_concurrency: int = 64
    ttfb_samples: int = 500
    paced_ttfb_samples: int = 30
    failover_concurrency: int = 16
    failover_percent: float = 20.0
    memory_requests: int = 100_000
    litellm_memory_requests: int = 2_000
    memory_concurrency: int = 64
    writer_records: int = 100_000
    stats_rows: int = 1_000_000
    stats_repeat: int = 2


@attrs.frozen
class Target:
    """One of the three clients' destinations: its URL and whose CPU/RSS counts."""

    name: str
    base_url: str
    pid: int


def targets_of(upstream: Server, arbstr: Server, litellm: Server | None) -> list[Target]:
    found = [
        Target("direct", upstream.base_url, upstream.pid),
        Target("arbstr", arbstr.base_url, arbstr.pid),
    ]
    if litellm is not None:
        found.append(Target("litellm", litellm.base_url, litellm.pid))
    return found


def _progress(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


def settle(pid: int, timeout: float = 60.0) -> float:
    """Wait until ``pid``'s tree is idle (under 6% of a core over half a second): a slow
    proxy is still working through the requests of a run its client has left, and that
    work must not be counted in the next. Seconds waited."""
    began = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - began < timeout:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.03:
            break
        last = now
    return round(time.monotonic() - began, 1)


def window(
    target: Target, upstream_url: str, body: bytes, connections: int, fill: float, seconds: float
) -> dict[str, Any]:
    """One wrk run of ``fill + seconds``; throughput and CPU counted over the last
    ``seconds`` only, from the upstream's counters and /proc.

    The first ``fill`` seconds fill the pipeline: a proxy whose latency under this load
    is longer than a run would otherwise show few completions and look slower than it
    is. In the steady state that follows, every 200 the upstream begins is one the
    client receives, so the upstream's counters give the proxy's throughput exactly,
    without the ramp at either end. Latency percentiles are wrk's, over the whole run.
    """
    waited = settle(target.pid)
    run = WrkRun(target.base_url, body, connections=connections, seconds=fill + seconds)
    end = run.started + run.seconds - 0.2
    time.sleep(max(0.0, end - seconds - time.perf_counter()))
    first, cpu0, t0 = upstream_counters(upstream_url), cpu_seconds(target.pid), time.perf_counter()
    time.sleep(max(0.1, end - time.perf_counter()))
    last, cpu1, t1 = upstream_counters(upstream_url), cpu_seconds(target.pid), time.perf_counter()
    result = run.result()
    elapsed = t1 - t0
    ok, chunks, cpu = last.ok - first.ok, last.chunks - first.chunks, cpu1 - cpu0
    row = result.as_dict()
    row.update(
        wrk_throughput=round(result.throughput, 1),
        throughput=round(ok / elapsed, 1),
        window_s=round(elapsed, 2),
        fill_s=round(fill, 1),
        settled_s=waited,
        cpu_s=round(cpu, 3),
        cpu_ms_per_request=round(cpu * 1000 / ok, 4) if ok else None,
        chunks_per_s=round(chunks / elapsed, 1),
        cpu_ms_per_chunk=round(cpu * 1000 / chunks, 5) if chunks else None,
    )
    return row


def _fill(settings: Settings, expected_latency_s: float) -> float:
    return min(settings.max_fill, max(settings.warmup, 1.5 * expected_latency_s))


def nonstreaming(
    targets: list[Target], upstream_url: str, settings: Settings
) -> list[dict[str, Any]]:
    """Throughput, latency and CPU per request at each concurrency; 16-token answers.
    Each target's fill time comes from its throughput at the previous concurrency
    (Little's law: latency = concurrency / throughput)."""
    body = chat_body(stream=False, chunks=16)
    rows = []
    rate: dict[str, float] = {}
    for concurrency in settings.concurrencies:
        row: dict[str, Any] = {"concurrency": concurrency}
        for target in targets:
            _progress(f"non-streaming c={concurrency} {target.name}")
            expected = concurrency / rate[target.name] if rate.get(target.name) else 0.0
            row[target.name] = window(
                target, upstream_url, body, concurrency, _fill(settings, expected), settings.seconds
            )
            rate[target.name] = row[target.name]["throughput"]
        rows.append(row)
    return rows


def streaming(targets: list[Target], upstream_url: str, settings: Settings) -> list[dict[str, Any]]:
    """Per case (chunks, delay): TTFB at concurrency 1, then chunks/s and CPU per chunk
    under load, counted as the content chunks that reached the client during the window
    (the upstream writes paced chunks on time whether or not the proxy keeps up, and a
    whole unpaced stream at once, so its own counters would not do)."""
    rows = []
    for chunks, delay in settings.stream_cases:
        body = chat_body(stream=True, chunks=chunks, delay_ms=delay)
        paced = delay > 0
        connections = settings.paced_concurrency if paced else settings.stream_concurrency
        row: dict[str, Any] = {"chunks": chunks, "delay_ms": delay, "concurrency": connections}
        for target in targets:
            _progress(f"streaming {chunks} chunks, {delay:g} ms apart, {target.name}")
            settle(target.pid)
            ttfb, totals, errors = first_byte_times(
                target.base_url,
                body,
                seconds=min(settings.seconds, 3.0),
                max_samples=settings.paced_ttfb_samples if paced else settings.ttfb_samples,
                read_to_end=not paced,
            )
            # the flow is steady once every stream has begun: a CPU-bound relay answers
            # one stream's first byte after another's
            expected = connections * (statistics.median(ttfb) / 1000 if ttfb else 0.1)
            settle(target.pid)
            measured = stream_load(
                target.base_url,
                body,
                connections=connections,
                fill=_fill(settings, expected),
                seconds=settings.seconds,
                sample=functools.partial(cpu_seconds, target.pid),
            )
            measured.update(
                ttfb_p50_ms=round(statistics.median(ttfb), 3) if ttfb else math.nan,
                ttfb_p99_ms=round(_percentile(ttfb, 0.99), 3),
                ttfb_samples=len(ttfb),
                ttfb_errors=len(errors),
                stream_c1_p50_ms=round(statistics.median(totals), 3) if totals else None,
            )
            row[target.name] = measured
        rows.append(row)
    return rows


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else math.nan


def failover(targets: list[Target], upstream_url: str, settings: Settings) -> dict[str, Any]:
    """A share of upstream answers are 503 or 429 (alternately, seeded): what clients see.
    Throughput is the upstream's 200s a second in the window, each of which a client
    received; the error rate is wrk's, over the whole run."""
    body = chat_body(stream=False, chunks=16, fail=settings.failover_percent)
    row: dict[str, Any] = {
        "upstream_failure_percent": settings.failover_percent,
        "concurrency": settings.failover_concurrency,
    }
    for target in targets:
        _progress(f"failover {settings.failover_percent:g}% {target.name}")
        row[target.name] = window(
            target,
            upstream_url,
            body,
            settings.failover_concurrency,
            settings.warmup * 2,
            settings.seconds,
        )
    return row


def _drive(target: Target, body: bytes, requests: int, settings: Settings) -> int:
    """Send about ``requests`` requests in wrk runs sized by the rate seen so far."""
    done, rate = 0, 0.0
    while done < requests:
        left = requests - done
        seconds = 5.0 if rate <= 0 else max(1.0, min(60.0, left / rate))
        result = run_wrk(
            target.base_url, body, connections=settings.memory_concurrency, seconds=seconds
        )
        done += result.requests
        rate = result.requests / result.seconds if result.seconds else 0.0
        if result.requests == 0:
            raise RuntimeError(f"{target.name} answered nothing during the memory phase")
    return done


def memory(targets: list[Target], idle_rss: dict[str, int], settings: Settings) -> dict[str, Any]:
    """RSS before and after many requests. ``idle_rss`` was read right after start; the
    growth is measured from a process the earlier phases have warmed, so that what the
    first requests allocate once (imports, pools, caches) does not count as growth."""
    body = chat_body(stream=False, chunks=16)
    row: dict[str, Any] = {"concurrency": settings.memory_concurrency}
    for target in targets:
        if target.name == "direct":
            continue
        wanted = (
            settings.litellm_memory_requests
            if target.name == "litellm"
            else settings.memory_requests
        )
        _progress(f"memory: {wanted} requests to {target.name}")
        before = rss_bytes(target.pid)
        sent = _drive(target, body, wanted, settings)
        settle(target.pid)
        after = rss_bytes(target.pid)
        row[target.name] = {
            "idle_rss_mb": round(idle_rss[target.name] / 2**20, 1),
            "warm_rss_mb": round(before / 2**20, 1),
            "after_rss_mb": round(after / 2**20, 1),
            "requests": sent,
            "growth_percent": round((after - before) * 100 / before, 2),
            "growth_from_idle_percent": round(
                (after - idle_rss[target.name]) * 100 / idle_rss[target.name], 2
            ),
        }
    return row


def workers_scaling(
    start: Callable[[int], Iterator[Server]],
    upstream_url: str,
    settings: Settings,
    workers: tuple[int, ...],
) -> list[dict[str, Any]]:
    """Non-streaming at concurrency 64 and 100-chunk streams at 16, per worker count."""
    rows = []
    json_body = chat_body(stream=False, chunks=16)
    stream_body = chat_body(stream=True, chunks=100)
    for count in workers:
        for server in start(count):
            target = Target(f"arbstr x{count}", server.base_url, server.pid)
            _progress(f"workers={count}")
            fill = max(settings.warmup, 2.0)
            plain = window(target, upstream_url, json_body, 64, fill, settings.seconds)
            settle(target.pid)
            streams = stream_load(
                target.base_url,
                stream_body,
                connections=settings.stream_concurrency,
                fill=fill,
                seconds=settings.seconds,
                sample=functools.partial(cpu_seconds, target.pid),
            )
            rows.append(
                {
                    "workers": count,
                    "throughput": plain["throughput"],
                    "p99_ms": plain["p99_ms"],
                    "cpu_ms_per_request": plain["cpu_ms_per_request"],
                    "chunks_per_s": streams["chunks_per_s"],
                    "cpu_ms_per_chunk": streams["cpu_ms_per_chunk"],
                }
            )
    return rows


def _json_of(command: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    try:
        done = subprocess.run(
            [*command, "--json", str(path)], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
        document: dict[str, Any] = json.loads(path.read_text())
        return document
    finally:
        path.unlink(missing_ok=True)


def store(settings: Settings) -> dict[str, Any]:
    """bench/writer.py's sustained rows/s and bench/stats.py's read latencies, as they
    measure them (the proxy's own writer and reader, no HTTP)."""
    result: dict[str, Any] = {}
    _progress(f"writer: {settings.writer_records} records")
    try:
        writer = _json_of(
            [
                sys.executable,
                str(BENCH_DIR / "writer.py"),
                "--records",
                str(settings.writer_records),
            ],
            timeout=900,
        )
        result["writer"] = writer["results"][0]
    except (RuntimeError, subprocess.TimeoutExpired, KeyError) as exc:
        result["writer"] = {"unavailable": str(exc)}
    _progress(f"stats: {settings.stats_rows} rows")
    try:
        stats = _json_of(
            [
                sys.executable,
                str(BENCH_DIR / "stats.py"),
                "--rows",
                str(settings.stats_rows),
                "--repeat",
                str(settings.stats_repeat),
            ],
            timeout=1800,
        )
        result["stats"] = {"rows": settings.stats_rows, "questions": stats["results"]}
    except (RuntimeError, subprocess.TimeoutExpired, KeyError) as exc:
        result["stats"] = {"unavailable": str(exc)}
    return result
