"""``/v1/live``: the live feed over a websocket, one task sending and one receiving.

**Auth** is the client-key gate's, as for ``/v1/*``. Credentials in the handshake
(``Authorization: Bearer`` or ``X-API-Key``) are checked before the websocket is
accepted: wrong ones close it unaccepted, which Hypercorn answers as HTTP 403.
Browsers cannot set headers on a websocket, so when keys are configured and the
handshake carries none, the feed is accepted and its first message must be
``{"type": "auth", "key": "..."}`` within :data:`AUTH_TIMEOUT_S`: none, another
message or a blank key closes it with 4401, a key that is not configured with 4403.
The key is never logged or echoed. ``hello`` comes only once the client is admitted,
so it doubles as "authenticated", and nothing is sent to a client that is not.

**Slow clients** never slow the proxy: events wait in the subscription's bounded
queue (:mod:`arbstr_trio.live.hub`), the oldest dropped first and reported with a
``dropped`` event. Each send has :data:`SEND_TIMEOUT_S`; a send that took longer ends
the feed with close code 1008. Hypercorn writes to the socket inside a shielded
scope, so a client that stops reading altogether holds that write until its kernel
buffers drain or the kernel fails the connection (``[server] client_send_timeout_ms``,
``TCP_USER_TIMEOUT``, under ``arbstr-trio serve``): the feed ends then. Meanwhile only
this feed's own task waits, and its queue stays bounded.

**Lifetime**: the sender and the receiver share one nursery. The client leaving (seen
by the receiver) cancels the sender; the proxy closing the hub ends the sender, which
says goodbye (1001) and cancels the receiver.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import orjson
import trio

from arbstr_trio import __version__
from arbstr_trio.config.models import Config
from arbstr_trio.errors import InvalidApiKey, MissingApiKey
from arbstr_trio.live.hub import LiveHub, Subscription, event_bytes
from arbstr_trio.web.asgi import Message, Receive, Scope, Send, header_value
from arbstr_trio.web.auth import Gate

__all__ = [
    "AUTH_TIMEOUT_S",
    "CLOSE_AUTH_INVALID",
    "CLOSE_AUTH_REQUIRED",
    "CLOSE_TRY_AGAIN_LATER",
    "LIVE_PATH",
    "SEND_TIMEOUT_S",
    "live_feed",
]

log = logging.getLogger(__name__)

LIVE_PATH = "/v1/live"
AUTH_TIMEOUT_S = 5.0
"""How long an accepted feed waits for its ``auth`` message."""
SEND_TIMEOUT_S = 10.0
"""A send that takes longer ends the feed (see the module docstring for the limits)."""
CLOSE_AUTH_REQUIRED = 4401
CLOSE_AUTH_INVALID = 4403
_GOING_AWAY = 1001
_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
_CLOSE_SEND_S = 1.0


async def live_feed(hub: LiveHub, gate: Gate, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``/v1/live`` websocket from its handshake to its close."""
    if (await receive())["type"] != "websocket.connect":
        return
    if not _same_origin(scope):
        log.info("live feed refused: opened by a page of another origin")
        await send({"type": "websocket.close", "code": _POLICY_VIOLATION})  # unaccepted: HTTP 403
        return
    credentials: list[tuple[bytes, bytes]] = list(scope["headers"])
    try:
        key_name = gate.admit(LIVE_PATH, credentials)
        needs_auth_message = False
    except MissingApiKey:
        key_name, needs_auth_message = None, True
    except InvalidApiKey:
        log.info("live feed refused: the API key in its handshake is not configured")
        await send({"type": "websocket.close", "code": _POLICY_VIOLATION})  # unaccepted: HTTP 403
        return
    await send({"type": "websocket.accept"})
    if needs_auth_message:
        admitted = await _authenticate(gate, receive)
        if isinstance(admitted, int):
            await _close(send, admitted, "authentication failed")
            return
        if admitted is None:
            return  # the client left
        key_name, credentials = admitted
    if hub.full:
        log.warning("live feed refused: %d feeds are open already", hub.max_subscribers)
        await _close(send, CLOSE_TRY_AGAIN_LATER, "too many live feeds open")
        return
    log.info("live feed opened (client key %s)", key_name or "-")
    with hub.subscribe(partial(_still_admitted, credentials)) as subscription:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_client, receive, nursery.cancel_scope)
            await _send_events(send, subscription, hub.queue_limit)
            nursery.cancel_scope.cancel()
    log.info("live feed closed (client key %s)", key_name or "-")


def _same_origin(scope: Scope) -> bool:
    """Whether a browser opened the feed from a page this proxy served (or no browser did).

    Browsers apply no CORS to websockets: without this, any page its user visits could
    read a keyless proxy's feed. A browser always sends ``Origin``; other clients
    (``arbstr-trio tail``) need not, and are not browsers' victims.
    """
    origin = header_value(scope, b"origin")
    host = header_value(scope, b"host")
    if origin is None:
        return True
    return host is not None and origin.partition(b"://")[2].rstrip(b"/") == host


def _still_admitted(credentials: list[tuple[bytes, bytes]], config: Config) -> bool:
    """Whether ``config`` admits the key a feed was opened with (it was removed or
    changed, through the admin API or a reload, if not)."""
    try:
        Gate.from_config(config).admit(LIVE_PATH, credentials)
    except (MissingApiKey, InvalidApiKey):
        return False
    return True


_Admitted = tuple[str, list[tuple[bytes, bytes]]] | int | None
"""The key's name and the credentials it came in; a close code to refuse with; None
when the client left."""


async def _authenticate(gate: Gate, receive: Receive) -> _Admitted:
    """Wait for the ``auth`` message, within :data:`AUTH_TIMEOUT_S`."""
    with trio.move_on_after(AUTH_TIMEOUT_S):
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return None
        key = _auth_key(message)
        if key is None:
            return CLOSE_AUTH_REQUIRED
        credentials = [(b"x-api-key", key.encode())]
        try:
            name = gate.admit(LIVE_PATH, credentials)
        except MissingApiKey:  # a blank key
            return CLOSE_AUTH_REQUIRED
        except InvalidApiKey:
            log.info("live feed refused: the API key in its auth message is not configured")
            return CLOSE_AUTH_INVALID
        return ("" if name is None else name), credentials
    return CLOSE_AUTH_REQUIRED


def _auth_key(message: Message) -> str | None:
    """The key of an ``{"type": "auth", "key": "..."}`` text message, else None."""
    text = message.get("text")
    if not isinstance(text, str):
        return None
    try:
        document: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("type") != "auth":
        return None
    key = document.get("key")
    return key if isinstance(key, str) else None


async def _send_events(send: Send, subscription: Subscription, queue_limit: int) -> None:
    """``hello``, then every event as it comes, until the hub closes or a send stalls."""
    hello = event_bytes(
        "hello", subscription.clock(), {"version": __version__, "queue_limit": queue_limit}
    )
    if not await _send_text(send, hello):
        return await _close(send, _POLICY_VIOLATION, "too slow to read the feed")
    while True:
        batch = await subscription.next_batch()
        if batch is None and subscription.revoked:
            return await _close(send, CLOSE_AUTH_INVALID, "the key is no longer configured")
        if batch is None:
            return await _close(send, _GOING_AWAY, "the proxy is shutting down")
        for event in batch:
            if not await _send_text(send, event):
                log.info("live feed closed: a send took over %.0f s", SEND_TIMEOUT_S)
                return await _close(send, _POLICY_VIOLATION, "too slow to read the feed")


async def _send_text(send: Send, event: bytes) -> bool:
    """Send one event; False when it took longer than :data:`SEND_TIMEOUT_S`.

    Timed as well as bounded: Hypercorn's shielded socket write can outlast the bound
    and return normally, with no checkpoint left for the cancellation to land on.
    """
    began = trio.current_time()
    with trio.move_on_after(SEND_TIMEOUT_S):
        await send({"type": "websocket.send", "text": event.decode()})
        return trio.current_time() - began <= SEND_TIMEOUT_S
    return False


async def _close(send: Send, code: int, reason: str) -> None:
    with trio.move_on_after(_CLOSE_SEND_S):
        await send({"type": "websocket.close", "code": code, "reason": reason})


async def _watch_client(receive: Receive, feed: trio.CancelScope) -> None:
    """Read what the client sends (nothing is expected once admitted) until it leaves,
    then end the feed. Reading also lets Hypercorn take in its pings and close frame."""
    while (await receive())["type"] != "websocket.disconnect":
        pass
    feed.cancel()
