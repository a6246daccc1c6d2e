"""The few ASGI primitives the app needs, written out rather than taken from a framework.

A proxy's handlers do little more than read one body and send one response (or a
stream), so a framework's request and response objects would cost more per request
than they save in code. What is here: the callable types, reading a body under a size
limit, sending a complete response, and watching for the client to leave.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeVar

import orjson
import trio

from arbstr_trio.errors import ClientDisconnected, ClientError, RequestTooLarge

__all__ = [
    "Header",
    "Message",
    "Receive",
    "ResponseSend",
    "Scope",
    "Send",
    "header_value",
    "read_body",
    "run_until_disconnect",
    "send_bytes",
    "send_json",
    "wait_for_disconnect",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]
T = TypeVar("T")


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (ASGI servers lower-case the names)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refused with 413 past ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before a byte is read,
    so a client cannot make the proxy buffer what it will reject anyway.
    """
    declared = header_value(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ClientError("the Content-Length header is not a number", code="invalid_header")
        if int(declared) > limit:
            raise _too_large(limit)
    first = await receive()
    if first["type"] == "http.disconnect":
        raise _gone()
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _gone()
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def _gone() -> ClientError:
    return ClientDisconnected("the client closed the connection while sending the body")


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"the request body is larger than the {limit}-byte limit ([server] max_body_bytes)"
    )


class ResponseSend:
    """The ``send`` handlers get: it stamps the request id on the response and knows
    whether the response has started and whether it has finished."""

    __slots__ = ("_request_id", "_send", "finished", "started")

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self._request_id = request_id.encode()
        self.started = False
        self.finished = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            headers = message["headers"]
            if not isinstance(headers, list):
                headers = message["headers"] = list(headers)
            headers.append((b"x-arbstr-request-id", self._request_id))
        elif kind == "http.response.body" and not message.get("more_body", False):
            # Set before sending: the server reports the end of the exchange as a
            # disconnect, which must not be mistaken for the client leaving early.
            self.finished = True
        await self._send(message)


async def send_bytes(send: Send, status: int, headers: Iterable[Header], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, headers: Iterable[Header], document: Any) -> None:
    body = orjson.dumps(document)
    await send_bytes(send, status, [(b"content-type", b"application/json"), *headers], body)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has gone.

    Hypercorn does not raise from ``send()`` once the client has left (its issue
    #210): the only sign is ``http.disconnect`` from ``receive()``, so a handler that
    must stop working for a departed client runs this beside its work.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(
    receive: Receive, send: ResponseSend, work: Callable[[], Awaitable[T]]
) -> T | None:
    """Run ``work`` while watching the client; ``None`` if the client left first.

    When the client disconnects, ``work`` is cancelled at once, so the upstream
    request it was making is abandoned and its connection closed. Exceptions from
    ``work`` come out as themselves, never wrapped in an ExceptionGroup.
    """
    result: T | None = None
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await wait_for_disconnect(receive)
            if not send.finished:
                nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        try:
            result = await work()
        except Exception as exc:
            failure = exc
        finally:
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result
