"""Reliability end to end: retries, fallback, cooldowns, deadlines, hedging, breakers,
client disconnects, chaos and overload, through the real server and the mock providers.

Nothing here sleeps. Where a test must see time pass (a cooldown running out), it
runs on a :class:`trio.testing.MockClock` that keeps real pace (``rate=1``), so the
server's timeouts behave as usual, and jumps it forward instead of waiting.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
import trio.testing
from openai.types.chat import ChatCompletionMessageParam

from arbstr_trio.server import Started
from tests.conftest import (
    chat_body,
    http_client,
    openai_client,
    raw_chat_request,
    receive_until,
    running_proxy,
)

_PROVIDERS = (("alpha", 150, 600), ("beta", 300, 1200), ("gamma", 450, 1800))
_FAST_RETRIES = "backoff_base_ms = 1\nbackoff_max_ms = 5"


def proxy_config(
    *,
    providers: int = 2,
    server: str = "",
    retry: str = _FAST_RETRIES,
    breaker: str = "",
    ratelimit: str = "",
    mock: str = "chunks = 5",
) -> str:
    """A config with ``providers`` mocks, cheapest first (alpha, beta, gamma)."""
    parts = [f'[server]\nlisten = "127.0.0.1:0"\n{server}\n']
    for section, body in (("retry", retry), ("breaker", breaker), ("ratelimit", ratelimit)):
        if body:
            parts.append(f"[{section}]\n{body}\n")
    for name, input_rate, output_rate in _PROVIDERS[:providers]:
        parts.append(
            f'[[providers]]\nname = "{name}"\nurl = "http://mock.invalid/v1"\n'
            f'models = ["gpt-4o-mini"]\ninput_rate = {input_rate}\n'
            f"output_rate = {output_rate}\n\n[providers.mock]\n{mock}\n"
        )
    return "\n".join(parts)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Real pace, plus :meth:`~trio.testing.MockClock.jump` to skip ahead."""
    return trio.testing.MockClock(rate=1.0)


MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


async def post(
    client: httpx.AsyncClient, body: Mapping[str, object] | None = None, /, **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json=dict(body or chat_body()), headers=headers
    )


async def get_health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/health")
    document: dict[str, Any] = response.json()
    return response.status_code, document


def by_name(health: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {provider["name"]: provider for provider in health["providers"]}


def assert_error_object(error: object) -> dict[str, Any]:
    """The OpenAI error object: the four keys, a message and a type that are strings."""
    assert isinstance(error, dict), error
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert "Traceback" not in error["message"]
    return error


def assert_envelope(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = assert_error_object(response.json()["error"])
    assert error["code"] == code, error
    return error


def sse_payloads(text: str) -> list[str]:
    """The ``data:`` payloads of an event stream, in order."""
    payloads = []
    for event in text.replace("\r\n", "\n").split("\n\n"):
        data = [
            line.removeprefix("data:").removeprefix(" ")
            for line in event.split("\n")
            if line.startswith("data:")
        ]
        if data:
            payloads.append("\n".join(data))
    return payloads


def received(started: Started) -> dict[str, int]:
    return {name: len(mock.received) for name, mock in started.mocks.items()}


# --- retries and fallback --------------------------------------------------------------


async def test_a_503_then_success_is_retried_on_the_same_provider() -> None:
    async with running_proxy(proxy_config()) as started:
        client = openai_client(started)
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-mock-alpha": "status=503; fault_count=1"},
        )
        completion = raw.parse()
        assert completion.choices[0].message.content == "the quick brown fox jumps"
        assert raw.headers["x-arbstr-provider"] == "alpha"
        assert raw.headers["x-arbstr-retries"] == "1/alpha"
        assert raw.headers["x-arbstr-attempts"] == "alpha:http_503, alpha:ok"
        assert received(started) == {"alpha": 2, "beta": 0}
        await client.close()


@pytest.mark.parametrize("fault", ["status=503", "drop_after=0"])
async def test_primary_down_falls_back_to_the_next_provider(fault: str) -> None:
    async with running_proxy(proxy_config()) as started:
        client = openai_client(started)
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-mock-alpha": fault}
        )
        assert raw.parse().choices[0].message.content == "the quick brown fox jumps"
        assert raw.headers["x-arbstr-provider"] == "beta"
        assert raw.headers["x-arbstr-retries"] == "2/alpha"
        assert received(started) == {"alpha": 2, "beta": 1}
        await client.close()


# --- rate limits ----------------------------------------------------------------------


async def test_429_retry_after_skips_the_provider_for_that_long_and_no_longer(
    clock: trio.testing.MockClock,
) -> None:
    async with running_proxy(proxy_config()) as started, http_client(started) as client:
        response = await post(client, **{"x-mock-alpha": "status=429; retry_after=1"})
        assert response.status_code == 200
        assert response.headers["x-arbstr-provider"] == "beta"
        assert response.headers["x-arbstr-retries"] == "1/alpha"
        assert received(started) == {"alpha": 1, "beta": 1}

        # Cooling down: the next request goes straight to beta, alpha is not asked.
        response = await post(client)
        assert response.headers["x-arbstr-provider"] == "beta"
        assert "x-arbstr-retries" not in response.headers
        assert received(started) == {"alpha": 1, "beta": 2}

        status, health = await get_health(client)
        assert (status, health["status"]) == (200, "degraded")
        [cooldown] = by_name(health)["alpha"]["cooldowns"]
        assert cooldown["model"] == "gpt-4o-mini"
        assert 0.5 < cooldown["seconds_left"] <= 1.0
        cooldown_ends = trio.current_time() + cooldown["seconds_left"]

        # For that long: shortly before the end it is still skipped...
        clock.jump(max(0.0, cooldown_ends - 0.2 - trio.current_time()))
        response = await post(client)
        assert response.headers["x-arbstr-provider"] == "beta"
        assert received(started) == {"alpha": 1, "beta": 3}

        # ...and no longer: just after the end, alpha (the cheaper) answers again.
        clock.jump(max(0.0, cooldown_ends + 0.01 - trio.current_time()))
        status, health = await get_health(client)
        assert (status, health["status"]) == (200, "ok")
        assert by_name(health)["alpha"]["cooldowns"] == []
        response = await post(client)
        assert response.headers["x-arbstr-provider"] == "alpha"
        assert received(started) == {"alpha": 2, "beta": 3}


async def test_remaining_requests_zero_skips_the_provider_until_its_reset(
    clock: trio.testing.MockClock,
) -> None:
    async with running_proxy(proxy_config()) as started, http_client(started) as client:
        headers = {"x-mock-alpha": "ratelimit_remaining_requests=0; ratelimit_reset_requests=2s"}
        response = await post(client, **headers)
        assert response.status_code == 200
        assert response.headers["x-arbstr-provider"] == "alpha"
        _, health = await get_health(client)
        assert by_name(health)["alpha"]["remaining"] == [{"model": "gpt-4o-mini", "requests": 0}]

        # alpha said it has no requests left: skipped without being asked (no 429 needed).
        response = await post(client)
        assert response.status_code == 200
        assert response.headers["x-arbstr-provider"] == "beta"
        assert "x-arbstr-retries" not in response.headers
        assert received(started) == {"alpha": 1, "beta": 1}

        clock.jump(2.1)  # past x-ratelimit-reset-requests
        response = await post(client)
        assert response.headers["x-arbstr-provider"] == "alpha"
        assert received(started) == {"alpha": 2, "beta": 1}


# --- deadlines ------------------------------------------------------------------------


async def timed_post(
    client: httpx.AsyncClient, body: Mapping[str, object] | None = None, /, **headers: str
) -> tuple[httpx.Response, float]:
    start = trio.current_time()
    response = await post(client, body, **headers)
    return response, trio.current_time() - start


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stall_beyond_the_deadline_is_504_on_time(stream: bool) -> None:
    # A deadline of a second: 10% of it is slack enough for a loaded 2-core machine.
    config = proxy_config(server="request_timeout_ms = 1000")
    async with running_proxy(config) as started, http_client(started) as client:
        assert (await post(client)).status_code == 200  # connection to the proxy warmed up
        response, elapsed = await timed_post(
            client, chat_body(stream=stream), **{"x-mock": "stall_ms=5000"}
        )
        error = assert_envelope(response, 504, "deadline_exceeded")
        assert "1000 ms deadline" in error["message"]
        assert 1.0 <= elapsed <= 1.1, elapsed
        assert [a["provider"] for a in error["attempts"]] == ["alpha"]
        assert error["attempts"][0]["outcome"] == "cancelled"
        with trio.fail_after(2):
            await started.mocks["alpha"].wait_for_disconnects(1)


async def test_deadline_header_shortens_is_clamped_and_is_checked() -> None:
    config = proxy_config(server="request_timeout_ms = 2000")
    async with running_proxy(config) as started, http_client(started) as client:
        assert (await post(client)).status_code == 200
        stall = "stall_ms=5000"

        response, elapsed = await timed_post(
            client, **{"x-mock": stall, "x-arbstr-deadline-ms": "1000"}
        )
        error = assert_envelope(response, 504, "deadline_exceeded")
        assert "1000 ms deadline" in error["message"]
        assert 1.0 <= elapsed <= 1.1, elapsed

        # Longer than configured: clamped to the configured 2000 ms, never lengthened.
        response, elapsed = await timed_post(
            client, **{"x-mock": stall, "x-arbstr-deadline-ms": "60000"}
        )
        error = assert_envelope(response, 504, "deadline_exceeded")
        assert "2000 ms deadline" in error["message"]
        assert 2.0 <= elapsed <= 2.2, elapsed

        before = received(started)
        for bad in ("abc", "0", "-5", "1.5", "10ms", "0x10"):
            response = await post(client, **{"x-arbstr-deadline-ms": bad})
            error = assert_envelope(response, 400, "invalid_header")
            assert error["param"] == "x-arbstr-deadline-ms", bad
        assert received(started) == before


# --- streams --------------------------------------------------------------------------


async def test_a_stream_dying_before_its_first_byte_falls_over_transparently() -> None:
    async with running_proxy(proxy_config()) as started:
        client = openai_client(started, default_headers={"x-mock-alpha": "drop_after=0"})
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ) as response:
            assert response.headers["x-arbstr-provider"] == "beta"
            assert response.headers["x-arbstr-retries"] == "2/alpha"
            chunks = [chunk async for chunk in await response.parse()]
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert text == "the quick brown fox jumps"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert received(started) == {"alpha": 2, "beta": 1}
        await client.close()


async def test_a_stream_dying_midway_ends_with_an_error_event_and_no_done() -> None:
    async with running_proxy(proxy_config()) as started, http_client(started) as client:
        response = await post(client, chat_body(stream=True), **{"x-mock": "drop_after=2"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-arbstr-provider"] == "alpha"
        payloads = sse_payloads(response.text)
        assert "[DONE]" not in payloads
        assert "[DONE]" not in response.text
        *chunks, last = [orjson.loads(p) for p in payloads]
        assert [chunk["object"] for chunk in chunks] == ["chat.completion.chunk"] * 2
        assert set(last) == {"error"}
        error = assert_error_object(last["error"])
        assert "'alpha'" in error["message"]
        assert received(started) == {"alpha": 1, "beta": 0}


async def test_a_stream_holds_its_permit_until_it_ends_and_a_broken_one_is_a_failure() -> None:
    config = proxy_config(mock="chunks = 5\nchunk_delay_ms = 200")
    async with running_proxy(config) as started, http_client(started) as client:
        body = chat_body(stream=True)
        headers = {"x-mock": "drop_after=3"}
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as response:
            parts = response.aiter_raw()
            first = await anext(parts)
            assert first.startswith(b"data: ")
            # Mid-stream the attempt still holds alpha's permit (its concurrency slot).
            _, health = await get_health(client)
            assert by_name(health)["alpha"]["in_flight"] == 1
            rest = b"".join([part async for part in parts])
        assert b'data: {"error":' in rest
        _, health = await get_health(client)
        alpha = by_name(health)["alpha"]
        assert alpha["in_flight"] == 0
        # The provider broke the stream: the breaker heard of it, once.
        assert alpha["consecutive_failures"] == 1


# --- hedging and cancellation -----------------------------------------------------------


async def test_a_hedge_wins_when_the_primary_stalls() -> None:
    config = proxy_config(retry=f"{_FAST_RETRIES}\nhedge_after_ms = 100")
    async with running_proxy(config) as started:
        client = openai_client(started, default_headers={"x-mock-alpha": "stall_ms=10000"})
        start = trio.current_time()
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
        elapsed = trio.current_time() - start
        assert raw.parse().choices[0].message.content == "the quick brown fox jumps"
        assert raw.headers["x-arbstr-provider"] == "beta"
        assert raw.headers["x-arbstr-attempts"] == "alpha:hedge_lost, beta:ok"
        assert "x-arbstr-retries" not in raw.headers  # losing a race is not a failure
        assert 0.1 <= elapsed < 1.0, elapsed
        # The loser's request was cancelled: its connection closed, not left to stall.
        with trio.fail_after(2):
            await started.mocks["alpha"].wait_for_disconnects(1)
        assert received(started) == {"alpha": 1, "beta": 1}
        await client.close()


async def test_a_client_disconnect_cancels_the_upstream_request() -> None:
    config = proxy_config(mock="chunks = 20\nchunk_delay_ms = 200")
    async with running_proxy(config) as started:
        url = httpx.URL(started.url)
        assert url.port is not None
        with trio.fail_after(2):
            stream = await trio.open_tcp_stream(url.host, url.port)
            await stream.send_all(raw_chat_request(orjson.dumps(chat_body(stream=True))))
            data = await receive_until(stream, b"data:")
            assert data.startswith(b"HTTP/1.1 200 ")
            await stream.aclose()
        alpha = started.mocks["alpha"]
        with trio.fail_after(2):
            await alpha.wait_for_disconnects(1)
        assert received(started) == {"alpha": 1, "beta": 0}
        # The client left: the provider is not blamed, and its permit is released.
        async with http_client(started) as client:
            _, health = await get_health(client)
        assert by_name(health)["alpha"]["consecutive_failures"] == 0
        assert by_name(health)["alpha"]["in_flight"] == 0


async def test_the_proxy_closes_a_connection_its_client_has_finished_with() -> None:
    """A client that is done with a keep-alive connection (EOF while idle) must not leave
    the proxy holding that socket, and a task, until ``keep_alive_timeout``."""
    async with running_proxy(proxy_config()) as started:
        url = httpx.URL(started.url)
        assert url.port is not None
        with trio.fail_after(2):
            stream = await trio.open_tcp_stream(url.host, url.port)
            await stream.send_all(b"GET /health HTTP/1.1\r\nhost: %b\r\n\r\n" % url.host.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                part = await stream.receive_some(65536)
                assert part, data
                data += part
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            [length] = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            while len(body) < length:
                body += await stream.receive_some(65536)
        await trio.testing.wait_all_tasks_blocked()  # the connection is idle, between requests
        await stream.send_eof()
        with trio.fail_after(1):
            assert await stream.receive_some(65536) == b""  # the proxy closed its side too
        await stream.aclose()


# --- breakers and /health ---------------------------------------------------------------


async def test_all_breakers_open_is_503_at_once_without_calling_anyone() -> None:
    config = proxy_config(breaker="failure_threshold = 1\nopen_ms = 60000")
    async with running_proxy(config) as started, http_client(started) as client:
        response = await post(client, **{"x-mock": "status=503"})
        assert_envelope(response, 502, "upstream_http_503")
        assert received(started) == {"alpha": 1, "beta": 1}

        response, elapsed = await timed_post(client)
        error = assert_envelope(response, 503, "no_healthy_provider")
        assert error["type"] == "service_unavailable"
        assert 55 <= int(response.headers["retry-after"]) <= 60
        assert elapsed < 0.25, elapsed
        assert received(started) == {"alpha": 1, "beta": 1}  # nobody was called


async def test_health_goes_from_ok_to_degraded_to_unhealthy() -> None:
    config = proxy_config(breaker="failure_threshold = 1\nopen_ms = 60000")
    async with running_proxy(config) as started, http_client(started) as client:
        status, health = await get_health(client)
        assert (status, health["status"]) == (200, "ok")
        assert {p["name"]: p["breaker"] for p in health["providers"]} == {
            "alpha": "closed",
            "beta": "closed",
        }

        response = await post(client, **{"x-mock-alpha": "status=503"})
        assert response.headers["x-arbstr-provider"] == "beta"
        status, health = await get_health(client)
        assert (status, health["status"]) == (200, "degraded")
        alpha, beta = by_name(health)["alpha"], by_name(health)["beta"]
        assert alpha["breaker"] == "open"
        assert alpha["consecutive_failures"] == 1
        assert alpha["opened_at"] is not None
        assert alpha["probe_at"] is not None
        assert 59 < alpha["probe_at"] - alpha["opened_at"] <= 60.001
        assert (beta["breaker"], beta["opened_at"], beta["probe_at"]) == ("closed", None, None)

        response = await post(client, **{"x-mock-beta": "status=503"})
        assert_envelope(response, 502, "upstream_http_503")
        status, health = await get_health(client)
        assert (status, health["status"]) == (503, "unhealthy")
        assert {p["name"]: p["breaker"] for p in health["providers"]} == {
            "alpha": "open",
            "beta": "open",
        }


# --- chaos ----------------------------------------------------------------------------

_FAULTS = (
    "status=503",
    "status=500",
    "status=429; retry_after=1",
    "status=429",
    "status=422",
    "drop_after=0",
    "drop_after=2",
    "stall_ms=2500",  # past the deadline
    "stall_ms=800; stall_after=2",  # past the stream idle timeout
    "latency_ms=150",
)


@attrs.frozen
class ChaosResult:
    stream: bool
    status: int
    kind: str
    """``ok``, ``error`` (an error envelope) or ``stream_error`` (an error event)."""
    code: str | None = None


def check_chaos_response(stream: bool, response: httpx.Response) -> ChaosResult:
    """Assert ``response`` is a whole answer or an OpenAI-shaped error, and say which."""
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200:
        assert content_type == "application/json", (response.status_code, response.text)
        error = assert_error_object(response.json()["error"])
        return ChaosResult(stream, response.status_code, "error", error["code"])
    if not stream:
        assert content_type == "application/json"
        document = response.json()
        assert document["object"] == "chat.completion", document
        assert document["choices"][0]["message"]["content"] == "the quick brown fox jumps"
        return ChaosResult(stream, 200, "ok")
    assert content_type.startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    if payloads[-1] == "[DONE]":
        chunks = [orjson.loads(p) for p in payloads[:-1]]
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks), chunks
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == "the quick brown fox jumps", payloads
        return ChaosResult(stream, 200, "ok")
    assert "[DONE]" not in payloads
    *chunks, last = [orjson.loads(p) for p in payloads]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks), chunks
    assert set(last) == {"error"}, last
    error = assert_error_object(last["error"])
    return ChaosResult(stream, 200, "stream_error", error["code"])


def chaos_headers(rng: random.Random, providers: Sequence[str]) -> dict[str, str]:
    """Each provider's fault for one request (none 70% of the time), in its own header."""
    headers = {}
    for name in providers:
        if rng.random() < 0.3:
            headers[f"x-mock-{name}"] = rng.choice(_FAULTS)
    return headers


def all_tasks() -> list[trio.lowlevel.Task]:
    tasks: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        tasks.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return tasks


def awaiting(task: trio.lowlevel.Task) -> list[str]:
    """The functions ``task`` is suspended in, outermost first."""
    return [frame.f_code.co_name for frame, _ in task.iter_await_frames()]


_CONNECTION_TASK = "trio._highlevel_serve_listeners._run_handler"


def under_mock(task: trio.lowlevel.Task) -> bool:
    """Whether ``task`` belongs to a mock provider's server (not to the proxy's)."""
    nursery = task.parent_nursery
    while nursery is not None and nursery.parent_task is not None:
        if nursery.parent_task.name == "arbstr_trio.mock.server.serve_mock":
            return True
        nursery = nursery.parent_task.parent_nursery
    return False


async def test_chaos_every_client_gets_an_answer_or_a_proper_error(
    clock: trio.testing.MockClock,
) -> None:
    """200 concurrent requests, half of them streams, against three providers that each
    fail 30% of the time in one of ten ways (drawn from a seeded generator and sent as
    ``x-mock-<name>`` headers, so the run is repeatable): every client gets a whole answer
    or an OpenAI-shaped error, nothing is left running, and the proxy still serves."""
    config = proxy_config(
        providers=3,
        server="request_timeout_ms = 2000\nstream_idle_timeout_ms = 400",
        retry=f"{_FAST_RETRIES}\nhedge_after_ms = 300",
        breaker="failure_threshold = 5\nopen_ms = 250",
        ratelimit="default_cooldown_ms = 500",
    )
    names = [name for name, _, _ in _PROVIDERS]
    rng = random.Random(20240611)
    plan = [(rng.random() < 0.5, chaos_headers(rng, names)) for _ in range(200)]
    results: list[ChaosResult] = []
    async with running_proxy(config) as started:
        baseline = collections.Counter(task.name for task in all_tasks())
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(base_url=started.url, timeout=10.0, limits=limits) as client:

            async def one(stream: bool, headers: dict[str, str]) -> None:
                response = await post(client, chat_body(stream=stream), **headers)
                results.append(check_chaos_response(stream, response))

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for stream, headers in plan:
                    nursery.start_soon(one, stream, headers)
            chaos_s = trio.current_time() - start
        summary = collections.Counter((r.kind, r.status, r.code) for r in results)
        print(f"\nchaos: 200 requests in {chaos_s:.2f} s: {dict(summary)}")
        assert len(results) == 200
        assert sum(r.kind == "ok" for r in results) >= 100
        assert any(r.kind == "error" for r in results)
        assert any(r.kind == "stream_error" for r in results)

        # Nothing left behind. Every client has its answer; once the proxy has finished
        # its own cleanup (closing abandoned upstream connections), no request is held.
        await trio.testing.wait_all_tasks_blocked()
        runtime = started.runtime
        assert runtime.admission.in_flight == 0
        assert runtime.engine.budget.active_requests == 0
        assert runtime.engine.budget.active_retries == 0
        async with http_client(started) as client:
            _, health = await get_health(client)
        assert health["in_flight"] == 0
        assert [p["in_flight"] for p in health["providers"]] == [0, 0, 0]
        # ...and every upstream connection still open is idle in the pool, not mid-answer.
        pool = runtime.upstream.pool
        assert pool.open_connections == pool.idle_connections
        await trio.testing.wait_all_tasks_blocked()
        tasks = all_tasks()
        leftover = collections.Counter(task.name for task in tasks) - baseline
        # No request is still being handled: no app call, no attempt, no relay, and no
        # client connection (they were closed). What may remain is the mocks' side of the
        # pooled upstream connections, one task each.
        assert set(leftover) <= {_CONNECTION_TASK}, leftover
        mock_side = [t for t in tasks if t.name == _CONNECTION_TASK and under_mock(t)]
        busy = [awaiting(t) for t in mock_side if "_deliver" in awaiting(t)]
        assert busy == []  # no mock is still answering anyone
        assert len(mock_side) == pool.open_connections

        # Past every cooldown and open breaker, the proxy serves normally again.
        clock.jump(3.0)
        client_sdk = openai_client(started)
        completion = await client_sdk.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
        assert completion.choices[0].message.content == "the quick brown fox jumps"
        await client_sdk.close()


# --- overload -------------------------------------------------------------------------


async def test_overload_past_max_in_flight_is_503_overloaded_after_the_wait() -> None:
    config = proxy_config(
        server="max_in_flight = 4\nadmission_wait_ms = 200", mock="chunks = 5\nlatency_ms = 1000"
    )
    outcomes: list[tuple[httpx.Response, float]] = []
    async with running_proxy(config) as started, http_client(started) as client:

        async def one() -> None:
            outcomes.append(await timed_post(client))

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(one)
    served = [(r, t) for r, t in outcomes if r.status_code == 200]
    refused = [(r, t) for r, t in outcomes if r.status_code != 200]
    assert len(served) == 4
    assert len(refused) == 4
    for response, elapsed in served:
        assert response.headers["x-arbstr-provider"] == "alpha"
        assert elapsed >= 1.0
    for response, elapsed in refused:
        error = assert_envelope(response, 503, "overloaded")
        assert error["type"] == "service_unavailable"
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-backoff-ms"] == "200"
        # After the 200 ms wait, and well before the 1 s the served ones took (the
        # margin is for a loaded machine's scheduling, not for the proxy).
        assert 0.2 <= elapsed <= 0.6, elapsed
    assert received(started) == {"alpha": 4, "beta": 0}
