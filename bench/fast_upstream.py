"""A mock OpenAI-compatible upstream fast enough never to be what a benchmark measures.

    python bench/fast_upstream.py [--port 0] [--seed 1]

The project's own mock (``arbstr-trio mock-upstream``) runs on h11 and Hypercorn, as
heavy per request as the proxy it would be measuring; this one is a bare asyncio
``Protocol`` speaking just enough HTTP/1.1 (keep-alive, ``Content-Length`` request
bodies, pipelining) to answer ``POST .../chat/completions`` with canned bytes, so a
request costs it tens of microseconds. The suite checks that calling it directly is
many times faster than through any proxy, and says so in its results.

What to answer is read from the request itself, so that the same upstream serves the
three clients (direct, arbstr-trio, LiteLLM) without reconfiguration, whatever the
proxy in between forwards. The first of these wins:

- ``bench:chunks=100,delay=10,fail=20`` anywhere in the JSON body, in practice the
  user message's content: messages reach the upstream through any proxy unchanged,
  where LiteLLM drops the ``user`` field and neither forwards arbitrary headers;
- an ``x-bench`` header with the same ``chunks=...,delay=...`` text;
- the query string, ``?chunks=100&delay=10``.

``chunks``: completion chunks of a stream (default 16; a non-streaming answer reports
as many completion tokens); ``delay``: milliseconds between two stream chunks (0: the
whole stream in one write); ``fail``: the percentage of answers that are errors,
alternately 503 and 429 (with ``retry-after: 0``), decided by a random generator seeded
with ``--seed`` so that every run fails the same way. ``"stream": true`` in the body
asks for SSE: a role chunk, ``chunks`` content chunks, a finish chunk, a usage chunk
(``choices: []``, as OpenAI sends with ``stream_options.include_usage``), ``[DONE]``.
Any path works, so two "providers" of a proxy can be the same server under two
prefixes (``/a/v1``, ``/b/v1``). ``GET`` answers ``/v1/models`` style JSON, except
``GET /_counters``: the 200 answers begun, failures sent and content chunks written so
far, which is how the suite counts throughput over a steady-state window (see
bench/phases.py).

Prints ``listening on http://127.0.0.1:PORT/v1`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import re
import signal

__all__ = ["Behaviour", "parse_behaviour", "render_json", "render_stream", "serve"]

_MODEL = "bench-model"
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_SPEC_RE = re.compile(rb"bench:([a-z0-9=,.;&]+)")
_BENCH_HEADER = b"\r\nx-bench:"


class Behaviour:
    """What one request asked for; a plain class with slots because it is made per request."""

    __slots__ = ("chunks", "delay_ms", "fail_percent")

    def __init__(self, chunks: int = 16, delay_ms: float = 0.0, fail_percent: float = 0.0):
        self.chunks = chunks
        self.delay_ms = delay_ms
        self.fail_percent = fail_percent


def parse_behaviour(spec: bytes) -> Behaviour:
    """``chunks=100,delay=10,fail=20`` (``&`` separators work too) into a Behaviour."""
    behaviour = Behaviour()
    for item in re.split(rb"[,&;]", spec):
        name, _, value = item.strip().partition(b"=")
        try:
            if name == b"chunks":
                behaviour.chunks = max(1, int(value))
            elif name == b"delay":
                behaviour.delay_ms = max(0.0, float(value))
            elif name == b"fail":
                behaviour.fail_percent = max(0.0, float(value))
        except ValueError:
            continue
    return behaviour


@functools.lru_cache(maxsize=256)
def render_json(chunks: int) -> bytes:
    """A non-streaming chat completion with ``chunks`` completion tokens, as bytes."""
    content = " tok" * chunks
    return (
        b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
        b'"model":"' + _MODEL.encode() + b'","choices":[{"index":0,"message":{"role":'
        b'"assistant","content":"' + content.encode() + b'"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":12,"completion_tokens":' + str(chunks).encode() + b","
        b'"total_tokens":' + str(12 + chunks).encode() + b"}}"
    )


def _event(payload: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk: the framing a real provider writes."""
    data = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


_CHUNK_PREFIX = b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
_CHUNK_PREFIX += b'"model":"' + _MODEL.encode() + b'","choices":'


@functools.lru_cache(maxsize=64)
def render_stream(chunks: int) -> tuple[bytes, ...]:
    """The HTTP chunks of a stream, each one SSE event; the last is the terminating chunk."""
    events = [_event(_CHUNK_PREFIX + b'[{"index":0,"delta":{"role":"assistant","content":""}}]}')]
    # every chunk different: LiteLLM aborts a stream that repeats the same chunk
    events.extend(
        _event(_CHUNK_PREFIX + b'[{"index":0,"delta":{"content":" t%d"}}]}' % n)
        for n in range(chunks)
    )
    events.append(_event(_CHUNK_PREFIX + b'[{"index":0,"delta":{},"finish_reason":"stop"}]}'))
    usage = b'{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}' % (
        chunks,
        12 + chunks,
    )
    events.append(_event(_CHUNK_PREFIX + b'[],"usage":' + usage + b"}"))
    events.append(_event(b"[DONE]"))
    events.append(b"0\r\n\r\n")
    return tuple(events)


_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"x-ratelimit-remaining-requests: 100000\r\ncontent-length: "
)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_ERRORS = {
    503: (b"503 Service Unavailable", b"overloaded", b""),
    429: (b"429 Too Many Requests", b"rate limited", b"retry-after: 0\r\n"),
}


def _error(status: int) -> bytes:
    reason, message, extra = _ERRORS[status]
    body = b'{"error":{"message":"%s","type":"server_error","param":null,"code":null}}' % message
    return (
        b"HTTP/1.1 " + reason + b"\r\ncontent-type: application/json\r\n" + extra
        + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


_MODELS = b'{"object":"list","data":[{"id":"' + _MODEL.encode() + b'","object":"model"}]}'
_MODELS_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_MODELS)).encode()
    + b"\r\n\r\n"
    + _MODELS
)


class _State:
    """What every connection shares: the seeded generator and the failure alternation."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.failures = 0
        self.ok = 0
        """200 answers begun: in a steady state, what the client receives per second."""
        self.chunks = 0
        """content chunks written"""

    def counters(self) -> bytes:
        body = b'{"ok":%d,"failures":%d,"chunks":%d}' % (self.ok, self.failures, self.chunks)
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + _HEAD_END
            + body
        )

    def failure(self, percent: float) -> int | None:
        if percent <= 0 or self.random.random() * 100 >= percent:
            return None
        self.failures += 1
        return 503 if self.failures % 2 else 429


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests from the buffer, answer each in order."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a paced stream is being written; later requests wait
        self._handles: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        while self._transport is not None and not self._busy:
            end = self._buffer.find(_HEAD_END)
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    self._transport.close()
                return
            head = bytes(self._buffer[:end]).lower()
            length = 0
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker + 2)
                length = int(head[marker + 17 : line_end if line_end > 0 else None])
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        request_line = head.split(b"\r\n", 1)[0]
        if request_line.startswith(b"get"):
            counters = b"/_counters" in request_line
            transport.write(self._state.counters() if counters else _MODELS_RESPONSE)
            return
        behaviour = self._behaviour(head, request_line, body)
        status = self._state.failure(behaviour.fail_percent)
        if status is not None:
            transport.write(_error(status))
            return
        self._state.ok += 1
        if not _STREAM_RE.search(body):
            payload = render_json(behaviour.chunks)
            transport.write(_JSON_HEAD + str(len(payload)).encode() + _HEAD_END + payload)
            return
        events = render_stream(behaviour.chunks)
        if behaviour.delay_ms <= 0:
            transport.write(_STREAM_HEAD + b"".join(events))
            self._state.chunks += behaviour.chunks
            return
        transport.write(_STREAM_HEAD + events[0])
        self._busy = True
        self._pace(events, 1, behaviour.delay_ms / 1000)

    def _pace(self, events: tuple[bytes, ...], index: int, delay: float) -> None:
        """Write ``events[index]`` after ``delay``, then schedule the next; the content
        chunks are paced, the trailing finish/usage/[DONE] frames follow at once."""
        self._handles.clear()
        transport = self._transport
        if transport is None:
            return
        if index >= len(events) - 4:
            transport.write(b"".join(events[index:]))
            self._busy = False
            self._process()
            return
        transport.write(events[index])
        self._state.chunks += 1
        loop = asyncio.get_running_loop()
        self._handles.append(loop.call_later(delay, self._pace, events, index + 1, delay))

    @staticmethod
    def _behaviour(head: bytes, request_line: bytes, body: bytes) -> Behaviour:
        found = _SPEC_RE.search(body)
        if found:
            return parse_behaviour(found.group(1))
        marker = head.find(_BENCH_HEADER)
        if marker >= 0:
            line_end = head.find(b"\r\n", marker + 2)
            return parse_behaviour(head[marker + 9 : line_end if line_end > 0 else None])
        target = request_line.split(b" ")[1] if b" " in request_line else b""
        if b"?" in target:
            return parse_behaviour(target.split(b"?", 1)[1])
        return Behaviour()


async def serve(host: str, port: int, seed: int) -> None:
    """Serve until SIGTERM/SIGINT; print the bound base URL first."""
    loop = asyncio.get_running_loop()
    state = _State(seed)
    server = await loop.create_server(
        lambda: UpstreamProtocol(state), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()
    print(f"listening on http://{bound[0]}:{bound[1]}/v1", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1, help="seeds the failure decisions")
    arguments = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(arguments.host, arguments.port, arguments.seed))


if __name__ == "__main__":
    main()
