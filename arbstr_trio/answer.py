"""One attempt on one provider: what it brings back, a usable answer or a judged failure.

The engine decides which attempts run and when; this module sends one and says what
came of it. An attempt succeeds only once its answer is known to be usable: a
non-streaming body read whole and parsed, or a stream whose first bytes have arrived.
A failure is judged here, once: what it means next (retry, move on, stop), what the
breaker hears, and the outcome recorded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import trio

from arbstr_trio.attempts import AttemptRecord, attempts_header, retries_header
from arbstr_trio.chat_request import ChatRequest
from arbstr_trio.errors import ArbstrError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from arbstr_trio.exchange import Exchange
from arbstr_trio.health.board import Permit, Verdict
from arbstr_trio.pricing import Usage, usage_from_json
from arbstr_trio.retry import Failure, classify_status
from arbstr_trio.routing import Candidate
from arbstr_trio.upstream import ProviderClient, ProviderResponse, error_for_status, forward_headers

__all__ = ["Answer", "AttemptFailed", "close_quietly", "try_candidate"]

_CLEANUP_TIMEOUT_S = 2.0


@attrs.define
class Answer:
    """A usable answer. A stream's ``response`` is still open: the relay finishes it."""

    candidate: Candidate
    response: ProviderResponse
    headers_at: float
    """``trio.current_time()`` when the provider's response headers arrived."""
    attempts: list[AttemptRecord]
    permit: Permit | None = None
    """Held until a stream ends, so the breaker hears how the stream went."""
    body: bytes = b""
    """The whole body of a non-streaming answer."""
    usage: Usage | None = None
    first_chunk: bytes = b""
    """The first bytes of a stream, read to prove it is alive."""

    def metadata_headers(self) -> list[tuple[bytes, bytes]]:
        headers = []
        retries = retries_header(self.attempts)
        if retries:
            headers.append((b"x-arbstr-retries", retries.encode()))
        attempts = attempts_header(self.attempts)
        if attempts:
            headers.append((b"x-arbstr-attempts", attempts.encode()))
        return headers

    def finish(self, *, ok: bool, usage: Usage | None) -> None:
        """A stream ended: whole (``ok``) or broken by the provider."""
        if self.permit is not None:
            verdict = Verdict.SUCCESS if ok else Verdict.FAILURE
            self.permit.settle(verdict, actual_tokens=None if usage is None else usage.total_tokens)

    async def aclose(self) -> None:
        if self.permit is not None:
            self.permit.settle(Verdict.ABANDONED)  # a no-op once finished
        await close_quietly(self.response)


async def close_quietly(response: ProviderResponse) -> None:
    """Release a response's connection even while being cancelled, within a bound."""
    # A failed close must not hide the outcome the caller is handling.
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(_CLEANUP_TIMEOUT_S),
        contextlib.suppress(Exception),
    ):
        await response.aclose()


class AttemptFailed(Exception):
    """An attempt's failure, already judged: what it means next, and for the breaker."""

    def __init__(
        self,
        kind: Failure,
        error: ArbstrError,
        verdict: Verdict,
        outcome: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error.message)
        self.kind = kind
        self.error = error
        self.verdict = verdict
        self.outcome = outcome
        self.status = status
        self.headers = headers or {}


async def try_candidate(
    upstream: ProviderClient,
    request: ChatRequest,
    exchange: Exchange,
    candidate: Candidate,
    permit: Permit,
    *,
    attempt_timeout_ms: int | None,
) -> Answer:
    """Send ``request`` to ``candidate`` under ``permit``: a usable :class:`Answer`, or
    :class:`AttemptFailed` saying what the failure means. The response is closed on every
    path but a stream's success, where the answer holds it (and the permit) open."""
    provider = candidate.provider
    headers = forward_headers(
        exchange.client_headers,
        api_key=provider.api_key.reveal() if provider.api_key is not None else None,
        request_id=exchange.request_id,
        idempotency_key=exchange.idempotency_key,
    )
    body = request.upstream_body(candidate.upstream_model, provider.completion_limit_field)
    timeout_ms = attempt_timeout_ms
    with trio.move_on_after(math.inf if timeout_ms is None else timeout_ms / 1000):
        return await _send(upstream, request.stream, candidate, permit, body, headers)
    raise AttemptFailed(
        Failure.RETRY,
        UpstreamTimeout(
            f"provider {provider.name!r} did not answer within the {timeout_ms} ms attempt timeout",
            provider=provider.name,
        ),
        Verdict.FAILURE,
        "timeout",
    )


async def _send(
    upstream: ProviderClient,
    stream: bool,
    candidate: Candidate,
    permit: Permit,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
) -> Answer:
    provider = candidate.provider
    try:
        response = await upstream.post(provider, "/chat/completions", body, headers)
    except UpstreamError as error:
        raise _transport_failure(error) from None
    headers_at = trio.current_time()
    try:
        permit.observe(response.headers)
        if not 200 <= response.status < 300:
            raise await _status_failure(provider.name, response)
        if stream:
            first = await _first_chunk(candidate.name, response)
            return Answer(candidate, response, headers_at, [], permit=permit, first_chunk=first)
        body = await response.read()
        usage = _usage_of_completion(body, provider.name)
        await close_quietly(response)  # read whole: a failed close spoils nothing
        permit.settle(Verdict.SUCCESS, actual_tokens=None if usage is None else usage.total_tokens)
        return Answer(candidate, response, headers_at, [], body=body, usage=usage)
    except UpstreamError as error:
        await close_quietly(response)
        raise _transport_failure(error) from None
    except BaseException:
        await close_quietly(response)
        raise


def _transport_failure(error: UpstreamError) -> AttemptFailed:
    outcome = {
        "upstream_unreachable": "connect_error",
        "upstream_timeout": "timeout",
    }.get(error.code or "", "protocol_error")
    return AttemptFailed(Failure.RETRY, error, Verdict.FAILURE, outcome)


async def _status_failure(provider: str, response: ProviderResponse) -> AttemptFailed:
    body = await response.read_error_body()
    status = response.status
    error = error_for_status(provider, status, response.headers, body)
    kind = classify_status(status)
    if status == 429:
        verdict = Verdict.RATE_LIMITED
    elif kind is Failure.CLIENT:
        verdict = Verdict.CLIENT_ERROR
    else:
        verdict = Verdict.FAILURE
    return AttemptFailed(
        kind, error, verdict, f"http_{status}", status=status, headers=response.headers
    )


async def _first_chunk(provider: str, response: ProviderResponse) -> bytes:
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        raise _transport_failure(
            UpstreamProtocolError(
                f"provider {provider!r} answered a streaming request with "
                f"{content_type or 'no content type'}, not an event stream",
                provider=provider,
            )
        )
    first = await response.next_chunk()
    if not first:
        raise _transport_failure(
            UpstreamProtocolError(
                f"provider {provider!r} closed the stream before sending anything",
                provider=provider,
            )
        )
    return first


def _usage_of_completion(body: bytes, provider: str) -> Usage | None:
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _transport_failure(
            UpstreamProtocolError(
                f"provider {provider!r} answered with a body that is not JSON", provider=provider
            )
        ) from None
    if not isinstance(document, dict):
        raise _transport_failure(
            UpstreamProtocolError(
                f"provider {provider!r} answered with JSON that is not an object",
                provider=provider,
            )
        )
    return usage_from_json(document.get("usage"))
