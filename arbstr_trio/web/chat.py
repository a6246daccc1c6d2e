"""``POST /v1/chat/completions``: parse, rank, get an answer, relay it."""

from __future__ import annotations

import logging

import trio

from arbstr_trio.chat_request import ChatRequest, parse_chat_request
from arbstr_trio.errors import ArbstrError, BodyTimeout, ClientError, PolicyRefusal
from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import format_sats
from arbstr_trio.recording import RequestTrail
from arbstr_trio.relay import Outcome, relay_completion, relay_stream
from arbstr_trio.route_plan import plan_route
from arbstr_trio.runtime import Runtime
from arbstr_trio.spending import bounded_for_budget, reserve_budget
from arbstr_trio.web.asgi import (
    Receive,
    ResponseSend,
    Scope,
    header_value,
    read_body,
    run_until_disconnect,
)

__all__ = ["chat_completions", "read_chat_request"]

log = logging.getLogger("arbstr_trio.requests")

_RECORD_WAIT_S = 30.0


async def chat_completions(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    """Serve one chat request and leave exactly one record of it, whatever its end."""
    trail = RequestTrail(exchange)
    try:
        # The body first: a client slow to send it must not hold one of max_in_flight slots.
        trail.request = await read_chat_request(runtime, scope, receive, exchange)
        async with runtime.admission.slot(exchange.deadline):
            policy_header = header_value(scope, b"x-arbstr-policy")
            await _serve(runtime, trail.request, receive, send, exchange, trail, policy_header)
    except ArbstrError as exc:
        trail.failed(exc.status_code(), exc.code)
        if isinstance(exc, PolicyRefusal):
            trail.policy = exc.policy
        raise
    except BaseException as exc:
        if _only_cancellation(exc):
            trail.failed(503, "shutdown")  # the grace period of a shutdown ran out
        else:
            trail.failed(500, "internal_error")
        raise
    finally:
        record = trail.record()
        runtime.metrics.observe(record)
        # Shielded: a request cut short by shutdown is recorded too; bounded, in case
        # the writer is far behind.
        with trio.CancelScope(shield=True), trio.move_on_after(_RECORD_WAIT_S) as waited:
            await runtime.writer.record(record)
        if waited.cancelled_caught:
            log.error(
                "%s: the request log is over %.0f s behind; this request is not recorded",
                exchange.request_id,
                _RECORD_WAIT_S,
            )


def _only_cancellation(exc: BaseException) -> bool:
    """A cancellation, perhaps wrapped by the nurseries it came up through."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


async def read_chat_request(
    runtime: Runtime, scope: Scope, receive: Receive, exchange: Exchange
) -> ChatRequest:
    """Start the request's deadline, then read and check its body within it.

    Shared by every endpoint that takes a chat-completion body (``/v1/cost`` too), so
    they agree on the size limit, the deadline and every 400.
    """
    timeout_ms = _timeout_ms(scope, runtime.config.server.request_timeout_ms)
    exchange.deadline = exchange.started_at + timeout_ms / 1000
    return await _read_request(runtime, scope, receive, exchange)


def _timeout_ms(scope: Scope, configured_ms: int) -> int:
    """The configured deadline, or the client's ``x-arbstr-deadline-ms`` if shorter."""
    value = header_value(scope, b"x-arbstr-deadline-ms")
    if value is None:
        return configured_ms
    if not value.isdigit() or int(value) < 1:
        raise ClientError(
            "x-arbstr-deadline-ms must be a whole number of milliseconds >= 1",
            param="x-arbstr-deadline-ms",
            code="invalid_header",
        )
    return min(configured_ms, int(value))


async def _read_request(
    runtime: Runtime, scope: Scope, receive: Receive, exchange: Exchange
) -> ChatRequest:
    body: bytes | None = None
    with trio.move_on_at(exchange.deadline):
        body = await read_body(scope, receive, runtime.config.server.max_body_bytes)
    if body is None:
        raise BodyTimeout(
            f"the request body did not arrive within the {exchange.timeout_ms()} ms deadline"
        )
    return parse_chat_request(body)


async def _serve(
    runtime: Runtime,
    request: ChatRequest,
    receive: Receive,
    send: ResponseSend,
    exchange: Exchange,
    trail: RequestTrail,
    policy_header: bytes | None,
) -> None:
    config = runtime.config
    route = plan_route(config, request, runtime.routes, policy_header=policy_header)
    candidates = route.candidates
    trail.candidates = candidates
    trail.policy = route.label
    request = bounded_for_budget(config, exchange.client_key, request)

    async def answer_and_relay() -> tuple[str, Outcome]:
        answer = await runtime.engine.answer(
            request, candidates, exchange, hedge_after_ms=route.hedge_after_ms
        )
        trail.answered(answer.candidate, answer.headers_at)
        try:
            if request.stream:
                outcome = await relay_stream(
                    send, answer, exchange, client_wants_usage=request.client_wants_usage
                )
            else:
                outcome = await relay_completion(send, answer, exchange)
        finally:
            await answer.aclose()
        trail.relayed(usage=outcome.usage, cost=outcome.cost_msat, error=outcome.error)
        return answer.candidate.name, outcome

    # Taken with no await since the check: concurrent requests cannot share the last of a
    # budget. Ended in the finally, so every end (answer, error, disconnect, cancellation)
    # settles or releases it exactly once.
    budget_hold = reserve_budget(runtime.budgets, config, exchange.client_key, request, candidates)
    try:
        result = await run_until_disconnect(receive, send, answer_and_relay)
    finally:
        budget_hold.end(trail)
    if result is None:
        exchange.client_gone = True
        trail.client_left()
        log.info(
            "%s %s client disconnected after %d ms",
            exchange.request_id,
            request.model,
            exchange.elapsed_ms(),
        )
        return
    provider, outcome = result
    _log_outcome(exchange, request, provider, outcome)


def _log_outcome(exchange: Exchange, request: ChatRequest, provider: str, outcome: Outcome) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    cost = "unknown" if outcome.cost_msat is None else format_sats(outcome.cost_msat)
    log.info(
        "%s %s -> %s %s cost_sats=%s latency_ms=%d%s",
        exchange.request_id,
        request.model,
        provider,
        "stream" if request.stream else "json",
        cost,
        exchange.elapsed_ms(),
        "" if outcome.completed else f" failed={outcome.error}",
    )
