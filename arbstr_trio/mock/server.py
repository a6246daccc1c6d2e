"""The mock provider on the wire: a small HTTP/1.1 server on trio sockets and h11.

It is not an ASGI app on purpose. Faults have to happen at the transport: a
connection dropped before the status line, a body cut off mid-stream, a stall while
the socket stays open, and noticing when the *client* hangs up. An ASGI server hides
exactly those from its app (Hypercorn answers 500 when an app fails before
responding), so this speaks HTTP itself, with h11 doing the parsing.
"""

from __future__ import annotations

import logging
import math
import ssl
from functools import partial

import h11
import trio

from arbstr_trio.mock.provider import MockProvider, Reply

__all__ = ["serve_mock"]

log = logging.getLogger(__name__)

_RECEIVE_SIZE = 65536
_REQUEST_TIMEOUT_S = 60.0


async def serve_mock(
    provider: MockProvider,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``provider`` until cancelled; ``task_status`` gets its base URL (``.../v1``)."""
    tcp_listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = tcp_listeners[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp_listeners)
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True)
            for listener in tcp_listeners
        ]
    scheme = "https" if ssl_context is not None else "http"
    shown_host = f"[{host}]" if ":" in host else host
    task_status.started(f"{scheme}://{shown_host}:{bound_port}/v1")
    await trio.serve_listeners(partial(_serve_connection, provider), listeners)


async def _serve_connection(provider: MockProvider, stream: trio.abc.Stream) -> None:
    """Serve one connection; whatever goes wrong on it stays on it."""
    try:
        await _converse(provider, stream)
    except Exception as exc:  # one bad connection must not stop the mock
        if not _is_hangup(exc):
            log.warning("mock %s: connection failed: %r", provider.name, exc)
    finally:
        await trio.aclose_forcefully(stream)


async def _converse(provider: MockProvider, stream: trio.abc.Stream) -> None:
    connection = h11.Connection(h11.SERVER)
    while True:
        received = None
        with trio.move_on_after(_REQUEST_TIMEOUT_S):
            received = await _read_request(stream, connection)
        if received is None:
            return  # the client closed, or sat idle past the timeout
        request, body = received
        headers = {
            name.decode().lower(): value.decode("latin-1") for name, value in request.headers
        }
        path = request.target.decode("latin-1").split("?", 1)[0]
        reply = provider.reply(request.method.decode(), path, headers, body)
        if not await _deliver(stream, connection, reply, provider):
            return
        if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
            return
        connection.start_next_cycle()


def _is_hangup(exc: BaseException) -> bool:
    """The client went away or spoke broken HTTP: routine for a server, not worth a log."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_hangup(inner) for inner in exc.exceptions)
    return isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | h11.ProtocolError)


async def _read_request(
    stream: trio.abc.Stream, connection: h11.Connection
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    parts: list[bytes] = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, b"".join(parts)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _deliver(
    stream: trio.abc.Stream, connection: h11.Connection, reply: Reply, provider: MockProvider
) -> bool:
    """Carry out ``reply``; False when the connection must close (a drop, or the client left)."""
    completed = False
    async with trio.open_nursery() as nursery:

        async def watch_for_hangup() -> None:
            while True:
                try:
                    data = await stream.receive_some(_RECEIVE_SIZE)
                except trio.BrokenResourceError:
                    data = b""  # reset rather than closed: gone all the same
                if not data:
                    provider.client_disconnected()
                    nursery.cancel_scope.cancel()
                    return
                connection.receive_data(bytes(data))  # a pipelined request, kept for later

        nursery.start_soon(watch_for_hangup)
        try:
            completed = await _write_reply(stream, connection, reply)
        finally:
            nursery.cancel_scope.cancel()
    return completed


async def _write_reply(stream: trio.abc.Stream, connection: h11.Connection, reply: Reply) -> bool:
    if reply.delay_s:
        await trio.sleep(reply.delay_s)
    if reply.drop_after == 0:
        return False
    headers = list(reply.headers)
    if reply.body is not None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        head = connection.send(h11.Response(status_code=reply.status, headers=headers))
        assert head is not None
        if reply.drop_after is not None:
            await stream.send_all(head + reply.body[: len(reply.body) // 2])
            return False
        body = connection.send(h11.Data(data=reply.body))
        end = connection.send(h11.EndOfMessage())
        assert body is not None
        assert end is not None
        await stream.send_all(head + body + end)
        return True

    head = connection.send(h11.Response(status_code=reply.status, headers=headers))
    assert head is not None
    pending = [head]
    for index, event in enumerate(reply.events):
        if reply.drop_after is not None and index == reply.drop_after:
            await _send_pending(stream, pending)
            return False
        if reply.stall_after is not None and index == reply.stall_after:
            await _send_pending(stream, pending)
            await trio.sleep(math.inf if reply.stall_s is None else reply.stall_s)
        if reply.event_delay_s and index:
            await _send_pending(stream, pending)
            await trio.sleep(reply.event_delay_s)
        frame = connection.send(h11.Data(data=event))
        assert frame is not None
        pending.append(frame)
        if reply.event_delay_s:
            await _send_pending(stream, pending)
    end = connection.send(h11.EndOfMessage())
    assert end is not None
    pending.append(end)
    await _send_pending(stream, pending)
    return True


async def _send_pending(stream: trio.abc.Stream, pending: list[bytes]) -> None:
    if pending:
        await stream.send_all(b"".join(pending))
        pending.clear()
