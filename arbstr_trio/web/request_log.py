"""``GET /v1/stats``, ``GET /v1/requests`` and ``GET /v1/requests/{id}``: the log, read.

The handlers only translate: query parameters into a query (which refuses anything
it does not understand, naming the parameter), the answer into JSON. Times go out as
ISO 8601 in UTC with milliseconds; money as sats with three decimals next to the
exact integer millisatoshis, so a client can add up without rounding drift. Each
answer echoes the window and filters it was computed for: a client that sent no
window learns which one it got.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from arbstr_trio.errors import NotFound
from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import msat_to_sats
from arbstr_trio.runtime import Runtime
from arbstr_trio.store.listing import LoggedRequest
from arbstr_trio.store.query import StatsQuery, Window, parse_list_query, parse_stats_query
from arbstr_trio.store.records import AttemptRow
from arbstr_trio.store.stats import Aggregates, Group, Percentiles, Stats
from arbstr_trio.web.asgi import Receive, ResponseSend, Scope, send_json

__all__ = ["REQUEST_PREFIX", "get_request", "list_requests", "stats"]

REQUEST_PREFIX = "/v1/requests/"


async def stats(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    query = parse_stats_query(_params(scope), time.time())
    result = await runtime.request_log.stats(query)
    await send_json(send, 200, (), _stats_document(query, result))


async def list_requests(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    query = parse_list_query(_params(scope), time.time())
    page = await runtime.request_log.requests(query)
    document = {
        "object": "list",
        **_window(query.window),
        "filters": query.filters.given(),
        "sort": query.sort.spec,
        "data": [_request(logged) for logged in page.rows],
        "has_more": page.next is not None,
        "next_cursor": None if page.next is None else page.next.encode(),
    }
    await send_json(send, 200, (), document)


async def get_request(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    """``/v1/requests/{id}``: the app routes here by prefix; the rest of the path is the id."""
    request_id = scope["path"].removeprefix(REQUEST_PREFIX)
    logged = await runtime.request_log.request(request_id)
    if logged is None:
        raise NotFound(f"no request with id {request_id!r} in the request log")
    document = _request(logged)
    document["attempts"] = [_attempt(attempt) for attempt in logged.record.attempts]
    await send_json(send, 200, (), document)


def _params(scope: Scope) -> list[tuple[str, str]]:
    # Blank values are kept so that ``?model=`` is refused by name, not ignored.
    return parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)


def _stats_document(query: StatsQuery, stats: Stats) -> dict[str, Any]:
    document: dict[str, Any] = {
        "object": "stats",
        **_window(query.window),
        "filters": query.filters.given(),
        "group_by": query.group_by,
        "bucket": query.bucket,
        "totals": _aggregates(stats.totals),
    }
    if query.group_by is not None and query.bucket is None:
        document["groups"] = [_group(group) for group in stats.groups]
    if query.bucket is not None:
        document["buckets"] = [
            {
                "start": _iso(bucket.start),
                **_aggregates(bucket.aggregates),
                **(
                    {"groups": [_group(group) for group in bucket.groups]}
                    if query.group_by is not None
                    else {}
                ),
            }
            for bucket in stats.buckets
        ]
    return document


def _window(window: Window) -> dict[str, Any]:
    return {
        "range": window.preset,
        "since": None if window.since is None else _iso(window.since),
        "until": None if window.until is None else _iso(window.until),
    }


def _group(group: Group) -> dict[str, Any]:
    return {"key": group.key, **_aggregates(group.aggregates)}


def _aggregates(aggregates: Aggregates) -> dict[str, Any]:
    return {
        "requests": aggregates.requests,
        "successes": aggregates.successes,
        "errors": aggregates.errors,
        "prompt_tokens": aggregates.prompt_tokens,
        "completion_tokens": aggregates.completion_tokens,
        "cost_sats": msat_to_sats(aggregates.cost_msat),
        "cost_msat": aggregates.cost_msat,
        "savings_sats": msat_to_sats(aggregates.savings_msat),
        "savings_msat": aggregates.savings_msat,
        "usage_missing": aggregates.usage_missing,
        "latency_ms": _percentiles(aggregates.latency_ms),
        "ttfb_ms": _percentiles(aggregates.ttfb_ms),
    }


def _percentiles(percentiles: Percentiles) -> dict[str, int | None]:
    return {"p50": percentiles.p50, "p95": percentiles.p95, "p99": percentiles.p99}


def _request(logged: LoggedRequest) -> dict[str, Any]:
    record = logged.record
    return {
        "request_id": record.request_id,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "model": record.model,
        "upstream_model": record.upstream_model,
        "provider": record.provider,
        "tier": record.tier,
        "policy": record.policy,
        "streaming": record.streaming,
        "status": record.status,
        "success": record.success,
        "error_type": record.error_type,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_sats": None if record.cost_msat is None else msat_to_sats(record.cost_msat),
        "cost_msat": record.cost_msat,
        "max_cost_msat": record.max_cost_msat,
        "usage_missing": record.usage_missing,
        "latency_ms": record.latency_ms,
        "ttfb_ms": record.ttfb_ms,
        "stream_ms": record.stream_ms,
        "attempt_count": logged.attempt_count,
        "client_key": record.client_key,
    }


def _attempt(attempt: AttemptRow) -> dict[str, Any]:
    return {
        "provider": attempt.provider,
        "started_at": _iso(attempt.started_at),
        "duration_ms": attempt.duration_ms,
        "outcome": attempt.outcome,
        "status": attempt.status,
        "error": attempt.error,
        "hedge": attempt.hedge,
    }


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
