"""Getting a usable answer from a provider for one client request.

An *attempt* sends the request to one candidate and succeeds only once the answer is
known to be usable: a non-streaming answer read whole and parsed, or a stream whose
first bytes have arrived. Everything before that point can still fail over without
the client noticing; everything after belongs to the relay. The engine owns the
request's deadline: no attempt outlives it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import trio

from arbstr_trio.chat_request import ChatRequest
from arbstr_trio.errors import UpstreamProtocolError, UpstreamTimeout
from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import Usage, usage_from_json
from arbstr_trio.routing import Candidate
from arbstr_trio.upstream import Upstream, UpstreamResponse, error_for_status, forward_headers

__all__ = ["Answer", "Engine"]

_CLEANUP_TIMEOUT_S = 2.0


@attrs.define
class Answer:
    """A usable answer. For a stream, ``response`` is still open: the caller closes it."""

    candidate: Candidate
    response: UpstreamResponse
    headers_at: float
    """``trio.current_time()`` when the provider's response headers arrived."""
    body: bytes = b""
    """The whole body of a non-streaming answer."""
    usage: Usage | None = None
    first_chunk: bytes = b""
    """The first bytes of a stream, read to prove it is alive."""

    async def aclose(self) -> None:
        await close_quietly(self.response)


async def close_quietly(response: UpstreamResponse) -> None:
    """Release a response's connection even while being cancelled, within a bound."""
    # A failed close must not hide the outcome the caller is handling.
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(_CLEANUP_TIMEOUT_S),
        contextlib.suppress(Exception),
    ):
        await response.aclose()


class Engine:
    def __init__(self, upstream: Upstream, *, request_timeout_s: float) -> None:
        self._upstream = upstream
        self._request_timeout_s = request_timeout_s

    async def answer(
        self, request: ChatRequest, candidates: Sequence[Candidate], exchange: Exchange
    ) -> Answer:
        """The cheapest candidate's answer, within the request's deadline."""
        candidate = candidates[0]
        deadline = exchange.started_at + self._request_timeout_s
        with trio.CancelScope(deadline=deadline) as scope:
            return await self._attempt(candidate, request, exchange)
        assert scope.cancelled_caught
        raise UpstreamTimeout(
            f"provider {candidate.name!r} gave no answer within "
            f"{self._request_timeout_s * 1000:.0f} ms ([server] request_timeout_ms)",
            provider=candidate.name,
        )

    async def _attempt(
        self, candidate: Candidate, request: ChatRequest, exchange: Exchange
    ) -> Answer:
        provider = candidate.provider
        headers = forward_headers(
            exchange.client_headers,
            api_key=provider.api_key.reveal() if provider.api_key is not None else None,
            request_id=exchange.request_id,
            idempotency_key=exchange.idempotency_key,
            accept_stream=request.stream,
        )
        response = await self._upstream.post(
            provider, "/chat/completions", request.upstream_body(candidate.upstream_model), headers
        )
        headers_at = trio.current_time()
        try:
            if not 200 <= response.status < 300:
                body = await response.read_error_body()
                raise error_for_status(provider.name, response.status, response.headers, body)
            if request.stream:
                return await self._start_stream(candidate, response, headers_at)
            body = await response.read()
            usage = _usage_of_completion(body, provider.name)
            await response.aclose()
            return Answer(candidate, response, headers_at, body=body, usage=usage)
        except BaseException:
            await close_quietly(response)
            raise

    async def _start_stream(
        self, candidate: Candidate, response: UpstreamResponse, headers_at: float
    ) -> Answer:
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise UpstreamProtocolError(
                f"provider {candidate.name!r} answered a streaming request with "
                f"{content_type or 'no content type'}, not an event stream",
                provider=candidate.name,
            )
        first = await response.next_chunk()
        if not first:
            raise UpstreamProtocolError(
                f"provider {candidate.name!r} closed the stream before sending anything",
                provider=candidate.name,
            )
        return Answer(candidate, response, headers_at, first_chunk=first)


def _usage_of_completion(body: bytes, provider: str) -> Usage | None:
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"provider {provider!r} answered with a body that is not JSON", provider=provider
        ) from None
    if not isinstance(document, dict):
        raise UpstreamProtocolError(
            f"provider {provider!r} answered with JSON that is not an object", provider=provider
        )
    return usage_from_json(document.get("usage"))
