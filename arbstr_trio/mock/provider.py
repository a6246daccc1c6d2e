"""What a mock provider answers: OpenAI-shaped completions, streams and injected faults.

The answer is decided here as a :class:`Reply` (status, headers, body or stream
events, and where to pause or break), and carried out on the wire by
:mod:`arbstr_trio.mock.server`. Splitting the two keeps the OpenAI format and the
fault rules readable without any socket code in the way.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson
import trio

from arbstr_trio.mock.behaviour import LineEnding, MockBehaviour, parse_overrides
from arbstr_trio.tokens import estimate_prompt_tokens

__all__ = ["MockProvider", "ReceivedRequest", "Reply"]

Header = tuple[bytes, bytes]

_SENTENCE = "the quick brown fox jumps over a lazy dog while the proxy counts every satoshi"
_WORDS = _SENTENCE.split()
_RECORD_LIMIT = 1000


@attrs.frozen
class Reply:
    """An answer and how to deliver it."""

    status: int
    headers: Sequence[Header]
    body: bytes | None = None
    """A whole body, sent with a Content-Length."""
    events: Sequence[bytes] = ()
    """Stream events, sent one by one with chunked transfer encoding."""
    delay_s: float = 0.0
    """Pause before the response headers."""
    event_delay_s: float = 0.0
    drop_after: int | None = None
    """Close the connection after this many events (or body halves); 0: before headers."""
    stall_after: int | None = None
    stall_s: float | None = None
    """With ``stall_after``: pause this long (``None``: until the client leaves)."""


@attrs.frozen
class ReceivedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class MockProvider:
    """One mock provider: a name, a behaviour, and a record of what it was sent."""

    def __init__(
        self,
        name: str,
        behaviour: MockBehaviour | None = None,
        *,
        models: Sequence[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.behaviour = behaviour or MockBehaviour()
        self.models = tuple(models)
        self.received: deque[ReceivedRequest] = deque(maxlen=_RECORD_LIMIT)
        self.disconnects = 0
        """Responses the client walked away from before they were complete."""
        self._disconnected = trio.Event()
        self.faults = 0
        """Requests a fault (status, drop, stall) was injected into, for ``fault_count``."""
        self._rng = rng or random.Random()
        self._scoped_header = "x-mock-" + "".join(c if c.isalnum() else "-" for c in name.lower())

    def client_disconnected(self) -> None:
        self.disconnects += 1
        self._disconnected.set()
        self._disconnected = trio.Event()

    async def wait_for_disconnects(self, count: int = 1) -> None:
        """Return once ``count`` responses in all were abandoned by their client."""
        while self.disconnects < count:
            await self._disconnected.wait()

    def reply(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        self.received.append(ReceivedRequest(method, path, headers, body))
        try:
            behaviour = self._behaviour_for(headers)
        except ValueError as exc:
            return _error_reply(400, str(exc), "invalid_request_error")
        if path.endswith("/models") and method == "GET":
            return _json_reply(
                200, {"object": "list", "data": [_model_entry(m) for m in self.models]}
            )
        if not path.endswith("/chat/completions"):
            return _error_reply(
                404, f"mock {self.name}: no such endpoint {method} {path}", "invalid_request_error"
            )
        if method != "POST":
            return _error_reply(405, f"mock {self.name}: use POST", "invalid_request_error")
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error_reply(400, f"mock {self.name}: body is not JSON", "invalid_request_error")
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            return _error_reply(
                400, f"mock {self.name}: 'messages' is required", "invalid_request_error"
            )
        faulty = behaviour.has_fault and self._rng.random() < behaviour.fault_rate
        if faulty and behaviour.fault_count is not None:
            faulty = self.faults < behaviour.fault_count
        if faulty:
            self.faults += 1
        if faulty and behaviour.status is not None:
            return self._fault_status(behaviour)
        reply = self._completion(request, behaviour)
        if faulty:
            reply = attrs.evolve(
                reply,
                drop_after=behaviour.drop_after,
                stall_after=behaviour.stall_after if behaviour.stall_ms is not None else None,
                stall_s=None if behaviour.stall_ms is None else behaviour.stall_ms / 1000,
            )
            if behaviour.stall_ms is not None and behaviour.stall_after is None:
                reply = attrs.evolve(reply, delay_s=reply.delay_s + behaviour.stall_ms / 1000)
        return reply

    def _behaviour_for(self, headers: Mapping[str, str]) -> MockBehaviour:
        behaviour = self.behaviour
        for header in ("x-mock", self._scoped_header):
            value = headers.get(header)
            if value:
                behaviour = parse_overrides(behaviour, value)
        return behaviour

    def _fault_status(self, behaviour: MockBehaviour) -> Reply:
        status = behaviour.status or 500
        kind = (
            "rate_limit_error"
            if status == 429
            else "server_error"
            if status >= 500
            else "invalid_request_error"
        )
        reply = _error_reply(status, f"mock {self.name}: injected HTTP {status}", kind)
        headers = list(reply.headers) + _ratelimit_headers(behaviour)
        if behaviour.retry_after is not None:
            headers.append((b"retry-after", behaviour.retry_after.encode()))
        return attrs.evolve(reply, headers=headers, delay_s=behaviour.latency_ms / 1000)

    def _completion(self, request: Mapping[str, Any], behaviour: MockBehaviour) -> Reply:
        model = request.get("model") if isinstance(request.get("model"), str) else "mock-model"
        prompt_tokens = estimate_prompt_tokens(request["messages"])
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        tokens = behaviour.chunks
        finish_reason = "stop"
        if isinstance(limit, int) and 0 < limit < tokens:
            tokens, finish_reason = limit, "length"
        words = [_WORDS[i % len(_WORDS)] for i in range(tokens)]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens,
            "total_tokens": prompt_tokens + tokens,
        }
        identity = {
            "id": "chatcmpl-" + secrets.token_urlsafe(18),
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_mock_" + self.name[:16],
        }
        headers = [
            (b"x-request-id", ("req_" + secrets.token_hex(12)).encode()),
            (b"openai-processing-ms", str(behaviour.latency_ms).encode()),
            *_ratelimit_headers(behaviour),
        ]
        delay_s = behaviour.latency_ms / 1000
        if request.get("stream") is True:
            options = request.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            events = _stream_events(
                identity,
                words,
                finish_reason,
                usage,
                include_usage and not behaviour.omit_usage,
                behaviour,
            )
            headers.insert(0, (b"content-type", b"text/event-stream; charset=utf-8"))
            headers.insert(1, (b"cache-control", b"no-cache"))
            return Reply(
                200,
                headers,
                events=events,
                delay_s=delay_s,
                event_delay_s=behaviour.chunk_delay_ms / 1000,
            )
        completion = {
            **identity,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": None if behaviour.omit_usage else usage,
        }
        return attrs.evolve(_json_reply(200, completion, headers), delay_s=delay_s)


def _stream_events(
    identity: Mapping[str, Any],
    words: Sequence[str],
    finish_reason: str,
    usage: Mapping[str, int],
    include_usage: bool,
    behaviour: MockBehaviour,
) -> list[bytes]:
    newline = b"\r\n" if behaviour.line_ending is LineEnding.CRLF else b"\n"
    prefix = b"data: " if behaviour.data_space else b"data:"
    base = {**identity, "object": "chat.completion.chunk"}
    extra = {"usage": None} if include_usage else {}

    def event(choices: list[dict[str, Any]], **fields: Any) -> bytes:
        return (
            prefix
            + orjson.dumps({**base, "choices": choices, **extra, **fields})
            + newline
            + newline
        )

    def choice(delta: dict[str, Any], reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]

    events = [event(choice({"role": "assistant", "content": "", "refusal": None}))]
    events.extend(
        event(choice({"content": (" " if i else "") + word})) for i, word in enumerate(words)
    )
    events.append(event(choice({}, finish_reason)))
    if include_usage:
        events.append(event([], usage=dict(usage)))
    events.append(prefix + b"[DONE]" + newline + newline)
    return events


def _ratelimit_headers(behaviour: MockBehaviour) -> list[Header]:
    return [
        (f"x-ratelimit-{name}".encode(), value.encode())
        for name, value in behaviour.ratelimit.items()
    ]


def _model_entry(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "mock"}


def _json_reply(status: int, document: Any, headers: Sequence[Header] = ()) -> Reply:
    return Reply(
        status, [(b"content-type", b"application/json"), *headers], body=orjson.dumps(document)
    )


def _error_reply(status: int, message: str, kind: str) -> Reply:
    error = {"message": message, "type": kind, "param": None, "code": f"mock_http_{status}"}
    return _json_reply(status, {"error": error})
