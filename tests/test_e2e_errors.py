"""Every error a client can get, through the real server, in the OpenAI envelope."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import openai
import pytest
import trio

from arbstr_trio.web import app as web_app
from tests.conftest import TWO_PROVIDERS, chat_body, http_client, openai_client, running_proxy


def assert_envelope(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-arbstr-request-id"]
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "Traceback" not in response.text
    return error  # type: ignore[no-any-return]


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    if isinstance(body, bytes):
        return await client.post("/v1/chat/completions", content=body, headers=headers)
    return await client.post("/v1/chat/completions", json=body, headers=headers)


async def test_client_mistakes_are_400_naming_the_field() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        error = assert_envelope(await post(client, b"{oops"), 400, "invalid_json")
        assert "not valid JSON" in error["message"]
        error = assert_envelope(await post(client, {"messages": []}), 400, "invalid_request")
        assert error["param"] == "model"
        error = assert_envelope(
            await post(client, {"model": "gpt-4o", "messages": {}}), 400, "invalid_request"
        )
        assert error["param"] == "messages"
        assert error["type"] == "invalid_request_error"
        assert len(started.mocks["alpha"].received) == 0


async def test_unknown_model_is_404_model_not_found() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        client = openai_client(started)
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.code == "model_not_found"
        assert caught.value.param == "model"
        await client.close()


async def test_body_over_the_limit_is_413() -> None:
    config = TWO_PROVIDERS.replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nmax_body_bytes = 1024'
    )
    async with running_proxy(config) as started, http_client(started) as client:
        big = chat_body(content="x" * 2000)
        assert_envelope(await post(client, big), 413, "request_too_large")

        # Without a Content-Length (chunked upload) the limit still holds.
        async def chunks() -> Any:
            for _ in range(4):
                yield b"x" * 512

        response = await client.post("/v1/chat/completions", content=chunks())
        assert_envelope(response, 413, "request_too_large")
        ok = await post(client, chat_body())
        assert ok.status_code == 200


async def test_unreachable_provider_is_502() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = f"""
[[providers]]
name = "gone"
url = "http://127.0.0.1:{port}/v1"
models = ["gpt-4o-mini"]
"""
    async with running_proxy(config, mock=False) as started, http_client(started) as client:
        error = assert_envelope(await post(client, chat_body()), 502, "upstream_unreachable")
        assert "'gone'" in error["message"]
        assert error["type"] == "upstream_error"


async def test_every_provider_failing_is_502_listing_the_attempts() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await post(client, chat_body(), **{"x-mock": "status=503"})
        error = assert_envelope(response, 502, "upstream_http_503")
        assert error["message"].startswith("provider 'beta' failed with HTTP 503; attempts: ")
        assert "alpha http_503, alpha http_503, beta http_503, beta http_503" in error["message"]
        assert [a["provider"] for a in error["attempts"]] == ["alpha", "alpha", "beta", "beta"]
        assert response.headers["x-arbstr-retries"] == "2/alpha, 2/beta"


async def test_provider_4xx_for_the_clients_mistake_is_passed_back() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        error = assert_envelope(
            await post(client, chat_body(), **{"x-mock": "status=422"}), 422, "mock_http_422"
        )
        assert error["message"] == "mock alpha: injected HTTP 422"


async def test_provider_refusing_our_key_is_502_not_401() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await post(client, chat_body(), **{"x-mock": "status=401"})
        error = assert_envelope(response, 502, "upstream_auth_failed")
        assert "ARBSTR_BETA_API_KEY" in error["message"]
        # A refused key is not retried on the same provider: one attempt each.
        assert response.headers["x-arbstr-retries"] == "1/alpha, 1/beta"


async def test_provider_rate_limit_is_429_with_retry_after() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        # Both providers cool down for 7 s, past this request's 2 s: 429 at once, with
        # the soonest recovery. (Inside its deadline, it would wait for it instead.)
        headers = {"x-mock": "status=429; retry_after=7", "x-arbstr-deadline-ms": "2000"}
        start = trio.current_time()
        response = await post(client, chat_body(), **headers)
        assert trio.current_time() - start < 1.0
        assert_envelope(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "7"


async def test_unknown_route_and_wrong_method() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        assert_envelope(await client.get("/v2/anything"), 404, "not_found")
        response = await client.get("/v1/chat/completions")
        assert_envelope(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "POST"


async def test_stream_dying_midway_ends_with_an_error_event_and_no_done() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        client = openai_client(started, default_headers={"x-mock": "drop_after=3"})
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received: list[object] = []

        async def consume() -> None:
            async for chunk in stream:
                received.append(chunk)  # noqa: PERF401 - kept one by one until it raises

        with pytest.raises(openai.APIError) as caught:
            await consume()
        assert len(received) == 3
        assert "'alpha'" in caught.value.message
        await client.close()

    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as raw_client:
        response = await post(raw_client, chat_body(stream=True), **{"x-mock": "drop_after=3"})
        assert response.status_code == 200
        assert "[DONE]" not in response.text
        assert response.text.rstrip().splitlines()[-1].startswith('data: {"error":')


async def test_stream_dying_before_its_first_byte_is_502() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await post(client, chat_body(stream=True), **{"x-mock": "drop_after=0"})
        assert_envelope(response, 502, "upstream_protocol_error")


async def test_truncated_completion_body_is_502() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await post(client, chat_body(), **{"x-mock": "drop_after=1"})
        assert_envelope(response, 502, "upstream_protocol_error")


async def test_provider_slower_than_the_deadline_is_504() -> None:
    config = TWO_PROVIDERS.replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nrequest_timeout_ms = 300'
    )
    async with running_proxy(config) as started, http_client(started) as client:
        start = trio.current_time()
        response = await post(client, chat_body(), **{"x-mock": "latency_ms=5000"})
        elapsed = trio.current_time() - start
        error = assert_envelope(response, 504, "deadline_exceeded")
        assert "300 ms deadline" in error["message"]
        assert [a["outcome"] for a in error["attempts"]] == ["cancelled"]
        assert elapsed < 2.0
        # The abandoned upstream request was cancelled, its connection closed.
        with trio.fail_after(5):
            await started.mocks["alpha"].wait_for_disconnects(1)


async def test_a_bug_is_a_500_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setitem(web_app.ROUTES, "/health", {"GET": broken})
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await client.get("/health")
        error = assert_envelope(response, 500, "internal_error")
        assert "secret internal detail" not in response.text
        assert response.headers["x-arbstr-request-id"] in error["message"]


async def test_a_body_slower_than_the_deadline_is_408() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        host, port = started.url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                b"content-type: application/json\r\ncontent-length: 100\r\n"
                b"x-arbstr-deadline-ms: 200\r\n\r\n{"
            )
            received = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in received or not received.endswith(b"}"):
                    received += await stream.receive_some(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert b'"code":"request_timeout"' in body
        assert b"200 ms deadline" in body
        assert len(started.mocks["alpha"].received) == 0
