"""Our HTTP/1.1 client: what it reuses, what it closes, and what it never leaks.

Each test runs a scripted server on 127.0.0.1:0 that counts the connections it
accepts and answers with exactly the bytes the test wants, so reuse and closing are
seen from the other end of the socket.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from arbstr_trio.http1 import ConnectionPool, Origin, TransportError, TransportKind

DEADLINE_S = 10.0
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@attrs.define
class Server:
    port: int
    accepted: int = 0
    closed: int = 0
    """Connections the client closed (the server read EOF)."""

    def origin(self) -> Origin:
        return Origin("http", "127.0.0.1", self.port)


Handler = Callable[[trio.SocketStream, Server], Awaitable[None]]


async def answer_each_request(stream: trio.SocketStream, server: Server, reply: bytes = OK) -> None:
    """Answer every request head that arrives (bodies are small, read with the head)."""
    while True:
        data = await stream.receive_some(65536)
        if not data:
            server.closed += 1
            return
        await stream.send_all(reply)


@asynccontextmanager
async def scripted_server(handler: Handler = answer_each_request) -> AsyncIterator[Server]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server = Server(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        server.accepted += 1
        async with stream:
            try:
                await handler(stream, server)
            except trio.BrokenResourceError:
                server.closed += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        yield server
        nursery.cancel_scope.cancel()


def a_pool(**limits: float) -> ConnectionPool:
    settings: dict[str, float] = {
        "max_connections": 10,
        "max_idle_connections": 10,
        "keepalive_expiry_s": 30.0,
        "connect_timeout_s": 5.0,
        **limits,
    }
    return ConnectionPool(
        ssl.create_default_context(),
        max_connections=int(settings["max_connections"]),
        max_idle_connections=int(settings["max_idle_connections"]),
        keepalive_expiry_s=settings["keepalive_expiry_s"],
        connect_timeout_s=settings["connect_timeout_s"],
    )


async def get(pool: ConnectionPool, server: Server, *, read: bool = True) -> bytes:
    response = await pool.request(server.origin(), b"GET", b"/", [], b"", timeout_s=5.0)
    body = b""
    try:
        while read and (piece := await response.next_piece()) is not None:
            body += piece
    finally:
        await response.aclose()
    return body


async def test_a_response_read_to_its_end_gives_its_connection_to_the_next_request() -> None:
    with trio.fail_after(DEADLINE_S):
        async with scripted_server() as server:
            pool = a_pool()
            assert [await get(pool, server) for _ in range(3)] == [b"ok"] * 3
            assert server.accepted == 1
            assert (pool.open_connections, pool.idle_connections) == (1, 1)
            await pool.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert (pool.open_connections, server.closed) == (0, 1)


async def test_a_response_left_unread_closes_its_connection() -> None:
    with trio.fail_after(DEADLINE_S):
        async with scripted_server() as server:
            pool = a_pool()
            await get(pool, server, read=False)
            await trio.testing.wait_all_tasks_blocked()
            assert (server.closed, pool.open_connections) == (1, 0)
            assert await get(pool, server) == b"ok"
            assert server.accepted == 2


async def test_a_connection_the_provider_closed_while_idle_is_not_used_again() -> None:
    async def answer_once(stream: trio.SocketStream, server: Server) -> None:
        await stream.receive_some(65536)
        await stream.send_all(OK)  # and then hang up, as a server's idle timeout does

    with trio.fail_after(DEADLINE_S):
        async with scripted_server(answer_once) as server:
            pool = a_pool()
            assert await get(pool, server) == b"ok"
            await trio.testing.wait_all_tasks_blocked()
            assert await get(pool, server) == b"ok"  # not "closed before a response"
            assert server.accepted == 2


async def test_one_providers_burst_does_not_take_keep_alive_from_another() -> None:
    with trio.fail_after(DEADLINE_S):
        async with scripted_server() as burst, scripted_server() as steady:
            pool = a_pool(max_idle_connections=4)
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(get, pool, burst)
            assert pool.idle_connections == 4
            for _ in range(5):
                assert await get(pool, steady) == b"ok"
            # The longest-idle of the burst made room: steady kept one connection.
            assert steady.accepted == 1
            assert pool.idle_connections == 4


async def test_idle_connections_past_their_expiry_are_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S * 10):
        async with scripted_server() as old, scripted_server() as fresh:
            pool = a_pool(keepalive_expiry_s=30.0)
            await get(pool, old)
            await trio.sleep(31)  # the mock clock's: past the expiry
            await get(pool, fresh)  # any release sweeps every provider's expired ones
            await trio.testing.wait_all_tasks_blocked()
            assert old.closed == 1
            assert pool.open_connections == 1


async def test_pieces_gather_what_one_read_brought_up_to_16_kib() -> None:
    event = b"data: " + b"x" * 994 + b"\n\n"  # 1000 bytes an event
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for _ in range(40))

    async def burst(stream: trio.SocketStream, server: Server) -> None:
        await stream.receive_some(65536)
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        await stream.send_all(head + chunks + b"0\r\n\r\n")  # 40 chunks in one write
        await stream.receive_some(65536)

    with trio.fail_after(DEADLINE_S):
        async with scripted_server(burst) as server:
            pool = a_pool()
            response = await pool.request(server.origin(), b"GET", b"/", [], b"", timeout_s=5)
            await trio.testing.wait_all_tasks_blocked()
            sizes = []
            while (piece := await response.next_piece()) is not None:
                sizes.append(len(piece))
            await response.aclose()
            assert sum(sizes) == 40 * len(event)
            assert len(sizes) < 10  # gathered, not a piece per chunk
            assert max(sizes) <= 16 * 1024 + 1000  # and never all of it at once


async def test_a_full_pool_makes_a_request_wait_then_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S * 10):
        async with scripted_server() as server:
            pool = a_pool(max_connections=1, connect_timeout_s=2.0)
            held = await pool.request(server.origin(), b"GET", b"/", [], b"", timeout_s=5)
            started = trio.current_time()
            with pytest.raises(TransportError) as caught:
                await get(pool, server)
            assert caught.value.kind is TransportKind.UNREACHABLE
            assert "max_connections" in caught.value.detail
            assert trio.current_time() - started == pytest.approx(2.0)
            await held.aclose()
            assert await get(pool, server) == b"ok"  # and the connection it held is free


async def test_a_tls_handshake_cut_short_closes_its_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never_answer(stream: trio.SocketStream, server: Server) -> None:
        while await stream.receive_some(65536):  # the ClientHello, then nothing back
            pass
        server.closed += 1

    with trio.fail_after(DEADLINE_S * 10):
        async with scripted_server(never_answer) as server:
            pool = a_pool(connect_timeout_s=3.0)
            origin = Origin("https", "127.0.0.1", server.port)
            with pytest.raises(TransportError) as caught:
                await pool.request(origin, b"GET", b"/", [], b"", timeout_s=5)
            assert caught.value.detail == "connect timed out"
            with trio.move_on_after(1) as cut:  # cancelled from outside, as a hedge is
                await pool.request(origin, b"GET", b"/", [], b"", timeout_s=5)
            assert cut.cancelled_caught
            await trio.testing.wait_all_tasks_blocked()
            assert (server.accepted, server.closed) == (2, 2)
            assert pool.open_connections == 0


async def test_a_pooled_connection_closed_as_it_is_reused_is_retried_on_a_new_one() -> None:
    # The provider's idle timeout fires just as the request goes out: it reads the
    # request and hangs up without a byte, too late for the readability check.
    async def answer_then_drop(stream: trio.SocketStream, server: Server) -> None:
        await stream.receive_some(65536)
        await stream.send_all(OK)
        await stream.receive_some(65536)  # the second request, never answered

    with trio.fail_after(DEADLINE_S):
        async with scripted_server(answer_then_drop) as server:
            pool = a_pool()
            assert await get(pool, server) == b"ok"
            assert await get(pool, server) == b"ok"  # said again on a new connection
            assert server.accepted == 2


async def test_a_new_connection_that_breaks_before_answering_is_not_retried() -> None:
    async def drop(stream: trio.SocketStream, server: Server) -> None:
        await stream.receive_some(65536)

    with trio.fail_after(DEADLINE_S):
        async with scripted_server(drop) as server:
            pool = a_pool()
            with pytest.raises(TransportError) as caught:
                await get(pool, server)
            assert caught.value.kind is TransportKind.PROTOCOL
            assert server.accepted == 1  # the engine, not the pool, decides on retries
