"""``/v1/live`` end to end: the real server under Hypercorn, a trio-websocket client.

Each event arrives after the action that causes it; the feed is gated like ``/v1/*``;
a client that stops reading costs the proxy nothing but dropped events. Time passes
on a :class:`trio.testing.MockClock` at real pace, jumped forward where a test waits
for a cooldown, a probe or a timeout, so nothing sleeps.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    connect_websocket_url,
    open_websocket_url,
    wrap_client_stream,
)

from arbstr_trio import __version__
from arbstr_trio.live.hub import DEFAULT_QUEUE_LIMIT
from arbstr_trio.server import Started
from tests import test_admin as admin
from tests.conftest import TWO_PROVIDERS, chat_body, config_from, http_client, running_proxy
from tests.test_auth import ENVIRON, GATED, TEAM_A

FAST_BREAKER = (
    TWO_PROVIDERS
    + """
[retry]
backoff_base_ms = 1
backoff_max_ms = 5

[breaker]
failure_threshold = 1
open_ms = 4000
"""
)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=1.0)


def feed_url(started: Started) -> str:
    return started.url.replace("http://", "ws://") + "/v1/live"


@asynccontextmanager
async def feed(
    started: Started, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(
        feed_url(started), extra_headers=headers, connect_timeout=5, disconnect_timeout=5
    ) as connection:
        yield connection


async def next_event(connection: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        event: dict[str, Any] = orjson.loads(await connection.get_message())
    return event


async def events_until(connection: WebSocketConnection, kind: str) -> list[dict[str, Any]]:
    """Every event up to and including the first of ``kind``."""
    seen = [await next_event(connection)]
    while seen[-1]["type"] != kind:
        seen.append(await next_event(connection))
    return seen


async def hello(connection: WebSocketConnection) -> dict[str, Any]:
    event = await next_event(connection)
    assert event["type"] == "hello"
    return event


async def close_code(connection: WebSocketConnection) -> int:
    with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
        await connection.get_message()
    assert closed.value.reason is not None
    return closed.value.reason.code


async def test_a_finished_request_is_one_event_with_what_its_headers_said() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        async with feed(started) as connection:
            greeting = await hello(connection)
            assert greeting["version"] == __version__
            assert greeting["queue_limit"] == DEFAULT_QUEUE_LIMIT
            response = await client.post("/v1/chat/completions", json=chat_body())
            assert response.status_code == 200
            event = await next_event(connection)
        assert event == {
            "type": "request",
            "ts": event["ts"],
            "id": response.headers["x-arbstr-request-id"],
            "model": "gpt-4o-mini",
            "upstream_model": "gpt-4o-mini",
            "provider": "alpha",
            "status": 200,
            "success": True,
            "streaming": False,
            "error_type": None,
            "prompt_tokens": 9,
            "completion_tokens": 5,
            "cost_msat": 4,
            "cost_sats": response.headers["x-arbstr-cost-sats"],
            "latency_ms": event["latency_ms"],
            "ttfb_ms": event["ttfb_ms"],
            "policy": None,
            "client_key": None,
            "attempts": 1,
            "retries": 0,
        }
        assert greeting["ts"] <= event["ts"]


async def test_attempt_failed_and_breaker_open_then_half_open_by_the_clock(
    clock: trio.testing.MockClock,
) -> None:
    async with (
        running_proxy(FAST_BREAKER) as started,
        http_client(started) as client,
        feed(started) as connection,
    ):
        await hello(connection)
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-mock-alpha": "status=503"}
        )
        assert response.headers["x-arbstr-retries"] == "1/alpha"
        seen = await events_until(connection, "request")
        by_type = {event["type"]: event for event in seen}
        assert set(by_type) == {"attempt_failed", "breaker", "request"}
        request_id = response.headers["x-arbstr-request-id"]
        assert {k: v for k, v in by_type["attempt_failed"].items() if k != "ts"} == {
            "type": "attempt_failed",
            "request_id": request_id,
            "provider": "alpha",
            "model": "gpt-4o-mini",
            "status": 503,
            "error": by_type["attempt_failed"]["error"],
            "outcome": "http_503",
            "hedge": False,
        }
        assert "503" in by_type["attempt_failed"]["error"]
        breaker = by_type["breaker"]
        assert (breaker["provider"], breaker["from"], breaker["to"]) == (
            "alpha",
            "closed",
            "open",
        )
        request = by_type["request"]
        assert (request["provider"], request["attempts"], request["retries"]) == ("beta", 2, 1)

        clock.jump(4.0)  # open_ms: the probe is due, and the feed says so unasked
        event = await next_event(connection)
        assert (event["type"], event["from"], event["to"]) == ("breaker", "open", "half_open")


async def test_cooldown_started_by_a_429_and_ended_when_retry_after_runs_out(
    clock: trio.testing.MockClock,
) -> None:
    async with (
        running_proxy(TWO_PROVIDERS) as started,
        http_client(started) as client,
        feed(started) as connection,
    ):
        await hello(connection)
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"x-mock-alpha": "status=429; retry_after=5"},
        )
        assert response.headers["x-arbstr-provider"] == "beta"
        seen = await events_until(connection, "request")
        [cooldown] = [event for event in seen if event["type"] == "cooldown_started"]
        assert (cooldown["provider"], cooldown["model"], cooldown["reason"]) == (
            "alpha",
            "gpt-4o-mini",
            "retry_after",
        )
        assert 4.5 < cooldown["until"] - cooldown["ts"] <= 5.0
        [failed] = [event for event in seen if event["type"] == "attempt_failed"]
        assert (failed["status"], failed["outcome"]) == (429, "http_429")

        clock.jump(4.0)  # not yet over: the next event is the next request's
        response = await client.post("/v1/chat/completions", json=chat_body())
        assert response.headers["x-arbstr-provider"] == "beta"  # alpha still cooling
        assert (await next_event(connection))["type"] == "request"
        clock.jump(1.0)
        event = await next_event(connection)
        assert event == {
            "type": "cooldown_ended",
            "ts": event["ts"],
            "provider": "alpha",
            "model": "gpt-4o-mini",
        }


# --- auth -------------------------------------------------------------------------------


async def test_with_keys_a_wrong_header_key_is_refused_at_the_handshake() -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started:
        for header in (b"authorization", b"x-api-key"):
            value = b"Bearer not-a-key" if header == b"authorization" else b"not-a-key"
            with pytest.raises(ConnectionRejected) as rejected:
                async with feed(started, [(header, value)]):
                    pytest.fail("accepted with a wrong key")
            assert rejected.value.status_code == 403
            assert b"not-a-key" not in (rejected.value.body or b"")


async def test_with_keys_a_right_header_key_opens_the_feed_and_names_the_key() -> None:
    config = config_from(GATED, ENVIRON)
    bearer = [(b"authorization", f"Bearer {TEAM_A}".encode())]
    async with (
        running_proxy(config) as started,
        http_client(started) as client,
        feed(started, bearer) as connection,
    ):
        await hello(connection)
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-api-key": TEAM_A}
        )
        assert response.status_code == 200
        event = await next_event(connection)
        assert (event["type"], event["client_key"]) == ("request", "team-a")
        assert TEAM_A not in orjson.dumps(event).decode()


async def test_with_keys_and_no_header_the_auth_message_opens_the_feed() -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started, feed(started) as connection:
        await connection.send_message(orjson.dumps({"type": "auth", "key": TEAM_A}).decode())
        greeting = await hello(connection)
        assert greeting["version"] == __version__


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "auth", "key": "not-a-key"}, 4403),
        ({"type": "auth", "key": ""}, 4401),
        ({"type": "subscribe"}, 4401),
    ],
)
async def test_with_keys_a_wrong_or_missing_auth_message_closes_the_feed(
    message: dict[str, str], code: int
) -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started, feed(started) as connection:
        await connection.send_message(orjson.dumps(message).decode())
        assert await close_code(connection) == code


async def test_with_keys_no_auth_message_within_5_s_closes_with_4401(
    clock: trio.testing.MockClock,
) -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started, feed(started) as connection:
        clock.jump(4.5)
        # Every task has had its turn (a close would have reached the client's reader).
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert connection.closed is None
        clock.jump(0.5)
        assert await close_code(connection) == 4401


async def test_only_v1_live_is_a_websocket() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        url = started.url.replace("http://", "ws://") + "/v1/chat/completions"
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url, connect_timeout=5):
                pytest.fail("accepted")
        assert rejected.value.status_code == 403


async def test_a_page_of_another_origin_cannot_open_the_feed() -> None:
    # No keys: without the Origin check any website its user visits could read the feed.
    async with running_proxy(TWO_PROVIDERS) as started:
        host = started.url.removeprefix("http://")
        with pytest.raises(ConnectionRejected) as rejected:
            async with feed(started, [(b"origin", b"https://evil.example")]):
                pytest.fail("accepted")
        assert rejected.value.status_code == 403
        # The dashboard's own page, served by this proxy, opens it.
        async with feed(started, [(b"origin", f"http://{host}".encode())]) as connection:
            await hello(connection)


async def test_feeds_past_the_limit_are_told_to_try_again_later() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        started.runtime.live.max_subscribers = 1
        async with feed(started) as first:
            await hello(first)
            async with feed(started) as second:
                assert await close_code(second) == 1013
        while started.runtime.live.listening:  # the server has seen the first go
            await trio.testing.wait_all_tasks_blocked()
        async with feed(started) as again:  # room again
            await hello(again)


# --- slow clients and shutdown ------------------------------------------------------------


async def dropped_total(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    [line] = [ln for ln in text.splitlines() if ln.startswith("arbstr_live_events_dropped_total")]
    return float(line.split()[-1])


@asynccontextmanager
async def stalled_feed(started: Started) -> AsyncIterator[WebSocketConnection]:
    """A feed whose client reads nothing until asked: a tiny receive buffer and a
    one-message queue, so the server's sends block after a few dozen events."""
    host, port = started.url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect((host, int(port)))
    async with trio.open_nursery() as nursery:
        connection = await wrap_client_stream(
            nursery, trio.SocketStream(sock), host, "/v1/live", message_queue_size=1
        )
        try:
            yield connection
        finally:
            with trio.move_on_after(2):
                await connection.aclose()
            nursery.cancel_scope.cancel()


async def test_a_stalled_client_loses_the_oldest_events_and_never_slows_requests() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        started.runtime.live.queue_limit = 8
        async with stalled_feed(started) as connection:
            ids: list[str] = []
            slowest = 0.0
            # In rounds until the feed's sends block and drops begin (a few dozen
            # events fill the socket buffers), then one more round.
            with trio.fail_after(15):
                while len(ids) < 400 and (await dropped_total(client) == 0 or len(ids) % 20):
                    began = trio.current_time()
                    response = await client.post("/v1/chat/completions", json=chat_body())
                    slowest = max(slowest, trio.current_time() - began)
                    assert response.status_code == 200
                    ids.append(response.headers["x-arbstr-request-id"])
            assert await dropped_total(client) > 0
            assert slowest < 1.0, slowest

            # Reading again: every request is an event or counted in a `dropped` event,
            # the drops come before the newest events, and the newest are all there.
            delivered: list[str] = []
            dropped = 0
            await hello(connection)
            while len(delivered) + dropped < len(ids):
                event = await next_event(connection)
                if event["type"] == "dropped":
                    dropped += event["count"]
                else:
                    assert event["type"] == "request"
                    delivered.append(event["id"])
            assert dropped > 0
            assert delivered == [i for i in ids if i in set(delivered)]  # in order
            assert delivered[-8:] == ids[-8:]


async def test_a_send_blocked_past_10_s_ends_the_feed_with_1008(
    clock: trio.testing.MockClock,
) -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        started.runtime.live.queue_limit = 8
        async with stalled_feed(started) as connection:
            with trio.fail_after(10):
                while await dropped_total(client) == 0:
                    for _ in range(10):
                        await client.post("/v1/chat/completions", json=chat_body())
            clock.jump(10.5)  # the blocked send is now past its 10 s
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await read_until_closed(connection)
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1008
            assert closed.value.reason.reason == "too slow to read the feed"


async def read_until_closed(connection: WebSocketConnection) -> None:
    """What was sent before the close, then the close (raised)."""
    while True:
        await connection.get_message()


async def test_closing_the_hub_ends_open_feeds_at_once_with_1001() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, feed(started) as connection:
        await hello(connection)
        started.runtime.live.close()  # what the runtime does as it closes
        assert await close_code(connection) == 1001


async def test_shutting_down_ends_open_feeds_without_waiting_out_the_grace_period() -> None:
    # A feed never ends by itself: left to Hypercorn, it would hold the shutdown for the
    # whole 60 s grace period, past running_proxy's 20 s deadline.
    config = TWO_PROVIDERS.replace("[server]\n", "[server]\ngraceful_shutdown_ms = 60000\n")
    async with trio.open_nursery() as nursery:
        async with running_proxy(config) as started:
            with trio.fail_after(5):
                connection = await connect_websocket_url(nursery, feed_url(started))
            await hello(connection)
        assert await close_code(connection) == 1001


async def test_a_feed_ends_when_its_key_is_removed(tmp_path: Path) -> None:
    source = admin.write_config(tmp_path)
    async with admin.proxy_from(source) as (started, client):
        team_a = [(b"x-api-key", admin.TEAM_A.encode())]
        team_b = [(b"x-api-key", admin.TEAM_B.encode())]
        async with feed(started, team_a) as removed, feed(started, team_b) as kept:
            await hello(removed)
            await hello(kept)
            response = await client.delete("/v1/admin/keys/team-a", headers=admin.AS_ADMIN)
            assert response.status_code == 200, response.text
            assert await close_code(removed) == 4403
            # The other key's feed goes on: the next request reaches it.
            await client.post("/v1/chat/completions", json=chat_body(), headers=admin.AS_TEAM_B)
            assert (await events_until(kept, "request"))[-1]["client_key"] == "team-b"
