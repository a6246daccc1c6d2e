"""A client that stops reading cannot hold the server.

Hypercorn writes to a client without a timeout, so a client that stops reading a
stream but keeps its socket open would hold the request's admission slot, upstream
connection and provider permit for good. ``arbstr_trio.hypercorn_shim`` sets
``TCP_USER_TIMEOUT`` on every client socket (from ``[server] client_send_timeout_ms``),
so the kernel fails such a connection and everything is released.

The kernel's timer runs in real time: the test waits about a second for it, on events
under a deadline, without sleeping.
"""

from __future__ import annotations

import socket
import sys

import httpx
import orjson
import pytest
import trio
import trio.testing

from tests.conftest import chat_body, http_client, raw_chat_request, receive_until, running_proxy

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="TCP_USER_TIMEOUT is Linux only"
)

CONFIG = """
[server]
listen = "127.0.0.1:0"
client_send_timeout_ms = 1000

[[providers]]
name = "alpha"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini"]
"""

# Far more than loopback buffers hold between the proxy and its client (the proxy's send
# buffer grows to net.ipv4.tcp_wmem's 4 MiB at most; the client's is pinned small), so
# the stream cannot finish into buffers while the client is not reading.
_CHUNKS = 60_000


async def test_a_client_that_stops_reading_a_stream_cannot_hold_the_server() -> None:
    async with running_proxy(CONFIG) as started:
        url = httpx.URL(started.url)
        assert url.port is not None
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the window it advertises stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stream = trio.SocketStream(sock)
        try:
            with trio.fail_after(2):
                await sock.connect((url.host, url.port))
                body = orjson.dumps(chat_body(stream=True))
                mock = b"x-mock: chunks=%d; chunk_delay_ms=0" % _CHUNKS
                await stream.send_all(raw_chat_request(body, mock))
                data = await receive_until(stream, b"data:")
                assert data.startswith(b"HTTP/1.1 200 ")
            # From here on the client reads nothing, and keeps its socket open.
            with trio.fail_after(10):
                await started.mocks["alpha"].wait_for_disconnects(1)
            await trio.testing.wait_all_tasks_blocked()
            assert started.runtime.admission.in_flight == 0
            async with http_client(started) as client:
                health = (await client.get("/health")).json()
            assert health["in_flight"] == 0
            assert [p["in_flight"] for p in health["providers"]] == [0]
        finally:
            await trio.aclose_forcefully(stream)
