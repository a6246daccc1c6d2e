"""The ASGI application: a route table, the error envelope, and the lifespan.

Every HTTP request gets an :class:`Exchange` (its id and clock) before anything else,
so every answer, errors included, carries ``x-arbstr-request-id``; then the client-key
gate (:mod:`arbstr_trio.web.auth`), before any route is looked up. Every failure ends
here: an :class:`ArbstrError` becomes its envelope and status; anything else is a bug
of ours, logged with its traceback on the server and answered as a 500 that says only
the request id. A client never sees a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from arbstr_trio.errors import ArbstrError, InternalError, MethodNotAllowed, RouteNotFound
from arbstr_trio.exchange import Exchange, request_id_from_headers
from arbstr_trio.runtime import Runtime
from arbstr_trio.web.admin import admin, is_admin_path
from arbstr_trio.web.asgi import Header, Receive, ResponseSend, Scope, Send, send_bytes
from arbstr_trio.web.auth import Gate
from arbstr_trio.web.chat import chat_completions
from arbstr_trio.web.cost import estimate_cost
from arbstr_trio.web.info import health, list_models, list_providers
from arbstr_trio.web.live import LIVE_PATH, live_feed
from arbstr_trio.web.metrics import prometheus_metrics
from arbstr_trio.web.request_log import REQUEST_PREFIX, get_request, list_requests, stats
from arbstr_trio.web.ui import UI_PREFIX, ui_file, ui_redirect

__all__ = ["App"]

log = logging.getLogger(__name__)
request_log = logging.getLogger("arbstr_trio.requests")

Handler = Callable[[Runtime, Scope, Receive, ResponseSend, Exchange], Awaitable[None]]
RuntimeFactory = Callable[[], AbstractAsyncContextManager[Runtime]]

ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/chat/completions": {"POST": chat_completions},
    "/v1/cost": {"POST": estimate_cost},
    "/v1/models": {"GET": list_models},
    "/health": {"GET": health},
    "/providers": {"GET": list_providers},
    "/metrics": {"GET": prometheus_metrics},
    "/v1/stats": {"GET": stats},
    "/v1/requests": {"GET": list_requests},
    "/ui": {"GET": ui_redirect},  # the dashboard: arbstr_trio/web/ui.py
    "/ui/": {"GET": ui_file},
}
PREFIX_ROUTES: dict[str, dict[str, Handler]] = {
    # The path's one segment after the prefix is the handler's parameter.
    REQUEST_PREFIX: {"GET": get_request},  # /v1/requests/{id}
    UI_PREFIX: {"GET": ui_file},  # /ui/{file}
}


class App:
    """The proxy as an ASGI 3 application.

    Given a ``runtime``, it serves with it (``arbstr-trio serve`` owns the runtime's
    lifetime). Given a ``runtime_factory`` instead, it opens the runtime itself in the
    ASGI lifespan, which is how an external ``hypercorn`` runs it.
    """

    def __init__(
        self, runtime: Runtime | None = None, *, runtime_factory: RuntimeFactory | None = None
    ) -> None:
        self._runtime = runtime
        self._runtime_factory = runtime_factory
        self._gate: Gate | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(request_id_from_headers(scope["headers"]), scope["headers"])
        tracked = ResponseSend(send, exchange.request_id)
        try:
            if self._runtime is None:
                raise InternalError("the proxy is not started yet")
            if is_admin_path(scope["path"]):
                # Its own token, checked by the handler; client keys do not open it.
                handler: Handler = admin
            else:
                # Before routing: a client without a key learns nothing, not even which
                # paths exist.
                gate = self._gate_for(self._runtime)
                exchange.client_key = gate.admit(scope["path"], scope["headers"])
                handler = _route(scope["path"], scope["method"])
            await handler(self._runtime, scope, receive, tracked, exchange)
        except ArbstrError as exc:
            request_log.info(
                "%s %s %s -> %d %s: %s",
                exchange.request_id,
                scope["method"],
                scope["path"],
                exc.status_code(),
                exc.code,
                exc.message,
            )
            await _send_error(tracked, exc, exchange)
        except Exception:
            log.exception("request %s failed with an internal error", exchange.request_id)
            error = InternalError(
                f"internal error; report request id {exchange.request_id} with the proxy's log"
            )
            await _send_error(tracked, error, exchange)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/v1/live``, the one websocket; any other is closed unaccepted (HTTP 403)."""
        runtime = self._runtime
        if runtime is None or scope["path"] != LIVE_PATH:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            await live_feed(runtime.live, self._gate_for(runtime), scope, receive, send)
        except Exception:
            # Hypercorn closes the websocket (1011) once we return.
            log.exception("the live feed failed")

    def _gate_for(self, runtime: Runtime) -> Gate:
        """The gate for the runtime's configuration, rebuilt only when that changes."""
        if self._gate is None or self._gate.config is not runtime.config:
            self._gate = Gate.from_config(runtime.config)
        return self._gate

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        if self._runtime is not None or self._runtime_factory is None:
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        try:
            async with self._runtime_factory() as runtime:
                self._runtime = runtime
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except Exception as exc:
            if self._runtime is None:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            raise
        finally:
            self._runtime = None
        await send({"type": "lifespan.shutdown.complete"})


def _route(path: str, method: str) -> Handler:
    methods = ROUTES.get(path) or _prefix_route(path)
    if methods is None:
        raise RouteNotFound(f"no such endpoint: {method} {path}")
    handler = methods.get(method)
    if handler is None:
        allowed = ", ".join(sorted(methods))
        raise MethodNotAllowed(
            f"{path} does not accept {method}; use {allowed}",
            headers=[(b"allow", allowed.encode())],
        )
    return handler


def _prefix_route(path: str) -> dict[str, Handler] | None:
    for prefix, methods in PREFIX_ROUTES.items():
        segment = path.removeprefix(prefix)
        if segment != path and segment and "/" not in segment:
            return methods
    return None


async def _send_error(send: ResponseSend, error: ArbstrError, exchange: Exchange) -> None:
    if send.started:
        # Too late for a status line; the relay ends streams with an error event itself.
        log.warning(
            "request %s failed after its response began: %s", exchange.request_id, error.message
        )
        return
    headers: list[Header] = [(b"content-type", b"application/json"), *error.headers]
    await send_bytes(send, error.status_code(), headers, error.envelope())
