"""``GET /metrics``: the Prometheus text exposition of :mod:`arbstr_trio.metrics`."""

from __future__ import annotations

from arbstr_trio.exchange import Exchange
from arbstr_trio.metrics import CONTENT_TYPE
from arbstr_trio.runtime import Runtime
from arbstr_trio.web.asgi import Receive, ResponseSend, Scope, send_bytes

__all__ = ["prometheus_metrics"]


async def prometheus_metrics(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    body = runtime.metrics.exposition()
    await send_bytes(send, 200, [(b"content-type", CONTENT_TYPE.encode())], body)
