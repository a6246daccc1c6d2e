"""The load the suite drives: wrk for requests, a counting client for streams, and a
raw socket for time to first byte.

wrk is C, one thread here, and costs a few microseconds of CPU a request: on a 2-core
machine every cycle the client spends is one the proxy does not get, and a Python
client (even bench/loadgen.py) costs more than the upstream it drives. wrk takes POST
bodies from a generated Lua script and reports through the script's ``done()`` hook,
as one JSON line: completed requests, non-2xx answers, socket errors and latency
percentiles in microseconds. It runs in the background (:class:`WrkRun`) so that the
caller can read the upstream's counters and /proc at the edges of a steady window.

wrk counts bytes, not SSE events, and only over a whole run, so streams are driven by
:func:`stream_load`, which counts content chunks as they arrive; and wrk does not see a
response's first byte, so time to first byte is measured at concurrency 1 by
:func:`first_byte_times`: a blocking socket, the request written at once, the clock
stopped at the first body byte."""

from __future__ import annotations

import http.client
import json
import math
import selectors
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import orjson

__all__ = [
    "Counters",
    "WrkResult",
    "WrkRun",
    "chat_body",
    "first_byte_times",
    "run_wrk",
    "stream_load",
    "upstream_counters",
]

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"status":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read,
    e.write, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def chat_body(*, stream: bool, chunks: int, delay_ms: float = 0, fail: float = 0) -> bytes:
    """An OpenAI chat request whose message tells the fast upstream what to answer."""
    spec = f"bench:chunks={chunks},delay={delay_ms:g},fail={fail:g}"
    body: dict[str, object] = {
        "model": "bench-model",
        "messages": [{"role": "user", "content": spec}],
        "max_tokens": chunks,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


@attrs.frozen
class WrkResult:
    """One wrk run; latencies in milliseconds."""

    requests: int
    seconds: float
    bytes: int
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def throughput(self) -> float:
        """Successful (2xx) answers a second."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    @property
    def error_rate(self) -> float:
        """Share of answers the client saw fail (non-2xx, plus socket errors)."""
        attempts = self.requests + self.socket_errors
        return (self.non_2xx + self.socket_errors) / attempts if attempts else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["throughput"] = round(self.throughput, 1)
        data["error_rate"] = round(self.error_rate, 4)
        return data


def _wrk_command(
    base_url: str, body: bytes, connections: int, seconds: float, timeout_s: float
) -> tuple[list[str], Path]:
    lua = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n" + _DONE
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, math.ceil(seconds))}s",
        f"--timeout={timeout_s:.0f}s",
        "-s",
        script.name,
        base_url + "/chat/completions",
    ]
    return command, Path(script.name)


class WrkRun:
    """wrk running in the background while the caller samples /proc and the upstream."""

    def __init__(
        self,
        base_url: str,
        body: bytes,
        *,
        connections: int,
        seconds: float,
        timeout_s: float = 30,
    ) -> None:
        command, self._script = _wrk_command(base_url, body, connections, seconds, timeout_s)
        self.seconds = max(1, math.ceil(seconds))
        self.started = time.perf_counter()
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def result(self) -> WrkResult:
        try:
            stdout, stderr = self._process.communicate(timeout=self.seconds + 90)
        finally:
            self._script.unlink(missing_ok=True)
        line = next((x for x in stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({self._process.returncode}): {stderr or stdout}")
        raw = json.loads(line.removeprefix("WRKJSON "))
        return WrkResult(
            requests=raw["requests"],
            seconds=raw["duration_us"] / 1e6,
            bytes=raw["bytes"],
            non_2xx=raw["status"],
            socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
            p50_ms=raw["p50"] / 1000,
            p90_ms=raw["p90"] / 1000,
            p99_ms=raw["p99"] / 1000,
            mean_ms=raw["mean"] / 1000,
            max_ms=raw["max"] / 1000,
        )


def run_wrk(
    base_url: str, body: bytes, *, connections: int, seconds: float, timeout_s: float = 30
) -> WrkResult:
    """``wrk -t1 -c<connections> -d<seconds>`` POSTing ``body`` to ``<base>/chat/completions``."""
    return WrkRun(
        base_url, body, connections=connections, seconds=seconds, timeout_s=timeout_s
    ).result()


@attrs.frozen
class Counters:
    """The fast upstream's ``GET /_counters``."""

    ok: int
    failures: int
    chunks: int


def upstream_counters(base_url: str) -> Counters:
    parsed = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=5)
    try:
        connection.request("GET", "/_counters")
        data = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return Counters(ok=data["ok"], failures=data["failures"], chunks=data["chunks"])


def _request_bytes(base_url: str, body: bytes) -> tuple[str, int, bytes]:
    parsed = urllib.parse.urlsplit(base_url)
    head = (
        f"POST {parsed.path}/chat/completions HTTP/1.1\r\nhost: {parsed.netloc}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return parsed.hostname or "127.0.0.1", parsed.port or 80, head.encode() + body


class _Reader:
    """Just enough HTTP/1.1 response parsing to find the first body byte and the end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def head(self) -> bytes:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.fill()
        head = bytes(self.buffer[:end]).lower()
        del self.buffer[: end + 4]
        return head

    def first_body_byte(self) -> None:
        while not self.buffer:
            self.fill()

    def rest(self, head: bytes) -> None:
        if b"transfer-encoding: chunked" in head:
            while True:
                while (line_end := self.buffer.find(b"\r\n")) < 0:
                    self.fill()
                size = int(bytes(self.buffer[:line_end]).split(b";")[0], 16)
                while len(self.buffer) < line_end + 2 + size + 2:
                    self.fill()
                del self.buffer[: line_end + 2 + size + 2]
                if size == 0:
                    return
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(self.buffer) < length:
            self.fill()
        del self.buffer[:length]


def first_byte_times(
    base_url: str, body: bytes, *, seconds: float, max_samples: int, read_to_end: bool
) -> tuple[list[float], list[float], list[str]]:
    """Milliseconds from sending a request to its first body byte, one request at a time,
    for the answers that were 200; the whole answers' times (``read_to_end`` only); and
    the status lines of the answers that were not 200.

    With ``read_to_end`` the connection is kept alive and each answer read whole; without
    it (streams paced over seconds) each request gets a fresh connection, made before the
    clock starts, which is closed as soon as the first byte is in.
    """
    host, port, payload = _request_bytes(base_url, body)
    samples: list[float] = []
    errors: list[str] = []
    totals: list[float] = []
    deadline = time.perf_counter() + seconds
    sock: socket.socket | None = None
    try:
        while time.perf_counter() < deadline and len(samples) + len(errors) < max_samples:
            if sock is None:
                sock = socket.create_connection((host, port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = _Reader(sock)
            began = time.perf_counter()
            sock.sendall(payload)
            head = reader.head()
            reader.first_body_byte()
            elapsed = (time.perf_counter() - began) * 1000
            if head.startswith(b"http/1.1 200"):
                samples.append(elapsed)
            else:
                errors.append(head.split(b"\r\n", 1)[0].decode())
            if read_to_end:
                reader.rest(head)
                totals.append((time.perf_counter() - began) * 1000)
            else:
                sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()
    return samples, totals, errors


_TOKEN = b'"content":" t'


class _StreamConnection:
    """One keep-alive connection of :func:`stream_load`, always one stream in flight."""

    def __init__(self, address: tuple[str, int], payload: bytes) -> None:
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.payload = payload
        self.tail = b""
        self.done_seen = False
        self.ok = True

    def send(self) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(self.payload)
        self.sock.setblocking(False)
        self.tail, self.done_seen, self.ok = b"", False, True

    def receive(self) -> tuple[int, bool]:
        """Content chunks in what arrived, and whether the stream has ended."""
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("closed")
        combined = self.tail + data
        chunks = combined.count(_TOKEN) - self.tail.count(_TOKEN)
        if not self.done_seen and b"[DONE]" in combined:
            self.done_seen = True
        if combined.startswith(b"HTTP/1.1 ") and not combined.startswith(b"HTTP/1.1 200"):
            self.ok = False
        self.tail = combined[-16:]
        ended = (self.done_seen and combined.endswith(b"0\r\n\r\n")) or (
            not self.ok and b"\r\n\r\n" in combined
        )
        return chunks, ended


def stream_load(
    base_url: str,
    body: bytes,
    *,
    connections: int,
    fill: float,
    seconds: float,
    sample: Callable[[], float],
) -> dict[str, Any]:
    """Keep ``connections`` streams in flight for ``fill + seconds``; count the content
    chunks that reach the client during the last ``seconds``, calling ``sample`` (the
    proxy's CPU seconds) at both ends of that window.

    wrk counts bytes, not events, and only whole runs; this client sees each chunk arrive.
    It is Python, but a stream's chunks arrive many to a ``recv`` and are counted with
    ``bytes.count``, so it costs a few microseconds per read, against the proxy's tenths
    of a millisecond per chunk.
    """
    host, port, payload = _request_bytes(base_url, body)
    selector = selectors.DefaultSelector()
    pool = [_StreamConnection((host, port), payload) for _ in range(connections)]
    began = time.perf_counter()
    window_start, window_end = began + fill, began + fill + seconds
    counted = streams = errors = 0
    cpu0 = t0 = 0.0
    in_window = False
    try:
        for connection in pool:
            connection.send()
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        while True:
            now = time.perf_counter()
            if not in_window and now >= window_start:
                in_window, cpu0, t0 = True, sample(), now
            if now >= window_end:
                break
            for key, _ in selector.select(timeout=0.05):
                connection = key.data
                chunks, ended = connection.receive()
                if in_window:
                    counted += chunks
                if ended:
                    streams += 1
                    errors += not connection.ok
                    connection.send()
        cpu1, t1 = sample(), time.perf_counter()
    finally:
        for connection in pool:
            connection.sock.close()
        selector.close()
    elapsed = t1 - t0
    cpu = cpu1 - cpu0
    return {
        "window_s": round(elapsed, 2),
        "streams_ended": streams,
        "stream_errors": errors,
        "chunks_counted": counted,
        "chunks_per_s": round(counted / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_chunk": round(cpu * 1000 / counted, 5) if counted else None,
    }
