"""The mock provider's server survives whatever one connection does to it."""

from __future__ import annotations

import httpx
import trio

from arbstr_trio.mock.behaviour import MockBehaviour
from arbstr_trio.mock.provider import MockProvider
from arbstr_trio.mock.server import serve_mock
from tests.conftest import raw_chat_request

REQUEST = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}'


async def raw_exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; what comes back before the server closes it."""
    host, port = url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        return received


def post(*extra_headers: bytes) -> bytes:
    return raw_chat_request(REQUEST, b"connection: close", *extra_headers)


async def test_broken_clients_do_not_stop_the_mock() -> None:
    provider = MockProvider("alpha", MockBehaviour(chunks=3, chunk_delay_ms=60_000))
    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_mock, provider)
            # Not HTTP at all.
            await raw_exchange(url, b"NOT HTTP AT ALL\r\n\r\n")
            # A status h11 refuses to send.
            await raw_exchange(url, post(b"x-mock: status=150"))
            # A client that leaves in the middle of a stream.
            host, port = url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(post())
            await stream.receive_some(10)
            await trio.aclose_forcefully(stream)
            await provider.wait_for_disconnects()
            # Still serving.
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.post(
                    "/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                )
            assert response.status_code == 200
            assert response.json()["object"] == "chat.completion"
            nursery.cancel_scope.cancel()
