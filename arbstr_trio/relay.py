"""Handing a provider's answer to the client: whole, or as a stream, event by event.

A stream is relayed as its events complete, not buffered: each network chunk is
decoded, rewritten where :mod:`arbstr_trio.stream_rewriter` says so, and sent on at
once, usually as the provider's own bytes. Once the first byte has gone to the client
a failure can no longer be hidden, so it ends the stream with an OpenAI-shaped error
event and no ``[DONE]``, which every SDK reports as an error rather than a short answer.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import trio

from arbstr_trio.answer import Answer
from arbstr_trio.errors import UpstreamError
from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import Usage, cost_msat, format_sats, msat_to_sats
from arbstr_trio.sse import SSEDecoder
from arbstr_trio.stream_rewriter import StreamRewriter
from arbstr_trio.web.asgi import Header, Send

__all__ = ["Outcome", "relay_completion", "relay_stream"]

_DRAIN_S = 0.5


@attrs.define
class Outcome:
    """How a relayed answer ended, for the log line and (later) the request record."""

    usage: Usage | None
    cost_msat: int | None
    completed: bool
    error: str | None = None


def answer_cost(answer: Answer, usage: Usage | None) -> int | None:
    if usage is None:
        return None
    return cost_msat(answer.candidate.rates, usage)


def arbstr_headers(exchange: Exchange, answer: Answer, *, latency_ms: int) -> list[Header]:
    return [
        (b"x-arbstr-provider", answer.candidate.name.encode()),
        (b"x-arbstr-latency-ms", str(latency_ms).encode()),
        *answer.metadata_headers(),
    ]


async def relay_completion(send: Send, answer: Answer, exchange: Exchange) -> Outcome:
    """Send a non-streaming answer: the provider's body, unchanged, with our headers."""
    cost = answer_cost(answer, answer.usage)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(answer.body)).encode()),
        *arbstr_headers(exchange, answer, latency_ms=exchange.elapsed_ms()),
    ]
    if cost is None:
        headers.append((b"x-arbstr-usage-missing", b"true"))
    else:
        headers.append((b"x-arbstr-cost-sats", format_sats(cost).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})
    return Outcome(answer.usage, cost, completed=True)


async def relay_stream(
    send: Send, answer: Answer, exchange: Exchange, *, client_wants_usage: bool
) -> Outcome:
    """Relay an open stream to the client; never raises for a provider's failure."""
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-arbstr-streaming", b"true"),
        # A stream's latency is its time to first byte: the rest is the provider's pace.
        *arbstr_headers(exchange, answer, latency_ms=_ms(answer.headers_at - exchange.started_at)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    decoder = SSEDecoder()
    rewriter = StreamRewriter(client_wants_usage=client_wants_usage)
    chunk: bytes | None = answer.first_chunk
    error: dict[str, Any] | None = None
    try:
        while chunk is not None:
            await _send_parts(send, rewriter.feed(decoder.feed(chunk)))
            if rewriter.done:
                break
            chunk = await answer.response.next_chunk()
        else:
            await _send_parts(send, rewriter.feed(decoder.flush()))
    except UpstreamError as exc:
        error = exc.error_object()
    if error is None and rewriter.upstream_error is not None:
        error = {"code": "upstream_error", **rewriter.upstream_error}  # already relayed
    if error is None and not rewriter.finished:
        error = {
            "message": f"provider {answer.candidate.name!r} ended the stream before it finished",
            "type": "upstream_error",
            "param": None,
            "code": "stream_truncated",
        }
    cost = answer_cost(answer, rewriter.usage)
    answer.finish(ok=error is None, usage=rewriter.usage)
    if error is not None:
        await send({"type": "http.response.body", "body": rewriter.fail(error), "more_body": False})
        return Outcome(rewriter.usage, cost, completed=False, error=str(error.get("code")))
    metadata = _stream_metadata(exchange, answer, cost)
    await send(
        {"type": "http.response.body", "body": rewriter.finish(metadata), "more_body": False}
    )
    await _drain(answer)
    return Outcome(rewriter.usage, cost, completed=True)


async def _drain(answer: Answer) -> None:
    """Read what follows ``[DONE]`` (usually just the end of the body), briefly, so the
    connection goes back to the pool instead of being closed half-read."""
    with trio.move_on_after(_DRAIN_S), contextlib.suppress(UpstreamError):
        while await answer.response.next_chunk() is not None:
            pass


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


async def _send_parts(send: Send, parts: list[bytes]) -> None:
    if parts:
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        await send({"type": "http.response.body", "body": body, "more_body": True})


def _stream_metadata(exchange: Exchange, answer: Answer, cost: int | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "request_id": exchange.request_id,
        "provider": answer.candidate.name,
        "cost_sats": None if cost is None else msat_to_sats(cost),
        "latency_ms": exchange.elapsed_ms(),
        "ttfb_ms": _ms(answer.headers_at - exchange.started_at),
    }
    if len(answer.attempts) > 1:
        metadata["attempts"] = [record.describe() for record in answer.attempts]
    if cost is None:
        metadata["usage_missing"] = True
    return metadata
