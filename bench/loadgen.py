"""A small, fast HTTP/1.1 load generator on trio sockets, for the benchmarks.

A general client (httpx, the openai SDK) spends more CPU per request than the proxy
it would be measuring, so the benchmarks drive load with this instead: keep-alive
connections, one prebuilt request, responses read with just enough parsing to find
their end (Content-Length or chunked) and to time the first body byte.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Sequence

import attrs
import orjson
import trio

__all__ = ["Sample", "Summary", "build_request", "run_load", "summarise"]

_RECEIVE = 65536


@attrs.frozen
class Sample:
    status: int
    ttfb_s: float
    total_s: float
    events: int
    closing: bool
    """The server said ``connection: close``: the next request needs a new connection."""


@attrs.frozen
class Summary:
    requests: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    events_per_s: float

    def row(self) -> dict[str, float | int]:
        return attrs.asdict(self)


def build_request(
    url: str, body: dict[str, object], headers: dict[str, str]
) -> tuple[str, int, bytes]:
    parsed = urllib.parse.urlsplit(url)
    payload = orjson.dumps(body)
    lines = [
        f"POST {parsed.path}/chat/completions HTTP/1.1",
        f"host: {parsed.netloc}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    return parsed.hostname or "127.0.0.1", parsed.port or 80, request


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> None:
        data = await self._stream.receive_some(_RECEIVE)
        if not data:
            raise ConnectionError("server closed the connection")
        self._buffer += data

    async def request(self, payload: bytes) -> Sample:
        started = time.perf_counter()
        await self._stream.send_all(payload)
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(self._buffer[:end]).lower()
        del self._buffer[: end + 4]
        status = int(head[9:12])
        first_byte_at: float | None = time.perf_counter() if self._buffer else None
        if b"transfer-encoding: chunked" in head:
            body = bytearray()
            while True:
                while (line_end := self._buffer.find(b"\r\n")) < 0:
                    await self._fill()
                size = int(bytes(self._buffer[:line_end]).split(b";")[0], 16)
                while len(self._buffer) < line_end + 2 + size + 2:
                    await self._fill()
                    first_byte_at = first_byte_at or time.perf_counter()
                body += self._buffer[line_end + 2 : line_end + 2 + size]
                del self._buffer[: line_end + 2 + size + 2]
                first_byte_at = first_byte_at or time.perf_counter()
                if size == 0:
                    break
        else:
            length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            while len(self._buffer) < length:
                await self._fill()
                first_byte_at = first_byte_at or time.perf_counter()
            body = self._buffer[:length]
            del self._buffer[:length]
        finished = time.perf_counter()
        return Sample(
            status=status,
            ttfb_s=(first_byte_at or finished) - started,
            total_s=finished - started,
            events=bytes(body).count(b"data:"),
            closing=b"connection: close" in head,
        )


async def run_load(
    host: str, port: int, payload: bytes, *, concurrency: int, seconds: float
) -> tuple[list[Sample], float]:
    """Keep ``concurrency`` requests in flight for ``seconds``; the samples and the time taken."""
    samples: list[Sample] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            stream = await trio.open_tcp_stream(host, port)
            connection = _Connection(stream)
            try:
                while time.perf_counter() < deadline:
                    sample = await connection.request(payload)
                    samples.append(sample)
                    if sample.closing:
                        break
            finally:
                await stream.aclose()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return samples, time.perf_counter() - started


def _percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summarise(samples: list[Sample], seconds: float) -> Summary:
    ok = [s for s in samples if s.status == 200]
    totals = [s.total_s * 1000 for s in ok]
    ttfbs = [s.ttfb_s * 1000 for s in ok]
    return Summary(
        requests=len(samples),
        errors=len(samples) - len(ok),
        seconds=round(seconds, 3),
        throughput=round(len(ok) / seconds, 1),
        p50_ms=round(_percentile(totals, 0.50), 3),
        p99_ms=round(_percentile(totals, 0.99), 3),
        ttfb_p50_ms=round(_percentile(ttfbs, 0.50), 3),
        ttfb_p99_ms=round(_percentile(ttfbs, 0.99), 3),
        events_per_s=round(sum(s.events for s in ok) / seconds, 1),
    )
