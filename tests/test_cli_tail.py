"""``arbstr-trio tail`` against a real proxy: its lines, its filters, its failures.

The client's own coroutine (:func:`arbstr_trio.cli.tail.follow`) runs in the test's
trio run beside the server, its lines sent to a channel the test reads; the command
line itself is run as a subprocess for its exit codes and messages.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
import trio

from arbstr_trio.cli.common import CliError
from arbstr_trio.cli.tail import TailOptions, describe, feed_url, follow, keep
from arbstr_trio.server import Started
from tests.conftest import TWO_PROVIDERS, chat_body, config_from, http_client, running_proxy
from tests.test_auth import ENVIRON, GATED, TEAM_A

FAST_BREAKER = TWO_PROVIDERS + "\n[breaker]\nfailure_threshold = 1\n"
REQUEST_LINE = re.compile(
    r"^\d\d:\d\d:\d\d ✓ 200 gpt-4o-mini via (?P<provider>\w+)  \d+ ms  9\+5 tok  "
    r"(?P<cost>\d+\.\d{3}) sats(?P<retries>  \(\d+ retr(y|ies)\))?$"
)


@asynccontextmanager
async def tailing(
    started: Started, **options: object
) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
    """``tail`` following ``started``; yields its lines once it is connected."""
    lines, received = trio.open_memory_channel[str](100)
    connected = trio.Event()

    def status(line: str) -> None:
        assert line.startswith(f"following {started.url}")
        connected.set()

    tail = TailOptions(url=started.url, **options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, tail, lines.send_nowait, status)
        with trio.fail_after(5):
            await connected.wait()
        yield received
        nursery.cancel_scope.cancel()


async def next_line(lines: trio.MemoryReceiveChannel[str]) -> str:
    with trio.fail_after(5):
        return await lines.receive()


async def post(client: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=chat_body(), headers=headers)


async def test_one_readable_line_per_event() -> None:
    async with (
        running_proxy(FAST_BREAKER) as started,
        http_client(started) as client,
        tailing(started) as lines,
    ):
        response = await post(client)
        line = await next_line(lines)
        match = REQUEST_LINE.match(line)
        assert match is not None, line
        assert match["provider"] == "alpha"
        assert match["cost"] == response.headers["x-arbstr-cost-sats"]
        assert match["retries"] is None

        await post(client, **{"x-mock-alpha": "status=503"})
        breaker, attempt, request = [await next_line(lines) for _ in range(3)]
        assert breaker.endswith(" ⚡ alpha breaker closed → open"), breaker
        assert re.search(r" ! alpha gpt-4o-mini attempt failed: http_503  request \w{8}$", attempt)
        match = REQUEST_LINE.match(request)
        assert match is not None, request
        assert (match["provider"], match["retries"]) == ("beta", "  (1 retry)")


async def test_provider_and_errors_filters() -> None:
    async with (
        running_proxy(FAST_BREAKER) as started,
        http_client(started) as client,
        tailing(started, provider="beta") as beta_lines,
        tailing(started, errors=True) as error_lines,
    ):
        await post(client)  # alpha answers: neither filter shows it
        await post(client, **{"x-mock-alpha": "status=503"})  # opens alpha; beta answers
        await post(client, **{"x-mock": "status=400"})  # beta refuses: a failed request
        # --provider beta: what beta did; the refused request has no provider.
        assert "✓ 200 gpt-4o-mini via beta" in await next_line(beta_lines)
        assert "! beta gpt-4o-mini attempt failed: http_400" in await next_line(beta_lines)
        # --errors: failures only, whoever they are about.
        seen = [await next_line(error_lines) for _ in range(4)]
        assert "⚡ alpha breaker closed → open" in seen[0], seen
        assert "! alpha gpt-4o-mini attempt failed: http_503" in seen[1], seen
        assert "! beta gpt-4o-mini attempt failed: http_400" in seen[2], seen
        # A provider's own 400, passed back: no error code of ours; its attempt counts.
        assert re.search(r" ✗ 400 gpt-4o-mini  \d+ ms  \(1 retry\)$", seen[3]), seen
        # Then a success by beta and one more refusal: the next line each filter
        # prints shows nothing came between (no provider-less line for --provider,
        # no success for --errors).
        await post(client)
        await post(client, **{"x-mock": "status=400"})
        assert "✓ 200 gpt-4o-mini via beta" in await next_line(beta_lines)
        assert "! beta gpt-4o-mini attempt failed: http_400" in await next_line(beta_lines)
        assert "! beta gpt-4o-mini attempt failed: http_400" in await next_line(error_lines)


async def test_json_prints_the_feed_lines_and_a_key_opens_a_gated_proxy() -> None:
    async with (
        running_proxy(config_from(GATED, ENVIRON)) as started,
        http_client(started) as client,
        tailing(started, key=TEAM_A, json=True) as lines,
    ):
        await post(client, **{"x-api-key": TEAM_A})
        hello = orjson.loads(await next_line(lines))
        assert hello["type"] == "hello"
        event = orjson.loads(await next_line(lines))
        assert (event["type"], event["client_key"]) == ("request", "team-a")


async def test_a_wrong_key_and_no_key_are_one_clear_error() -> None:
    async with running_proxy(config_from(GATED, ENVIRON)) as started:
        for key, words in (("wrong-key", "refused the API key"), (None, "needs an API key")):
            options = TailOptions(url=started.url, key=key)
            with trio.fail_after(5), pytest.raises(CliError) as failed:
                await follow(options, print, print)
            assert words in str(failed.value)
            assert "wrong-key" not in str(failed.value)


async def test_the_feed_ending_with_the_proxy_is_an_error_to_report() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:

        def connected(line: str) -> None:
            started.runtime.live.close()  # what the runtime does as the proxy stops

        with trio.fail_after(5), pytest.raises(CliError, match="shutting down"):
            await follow(TailOptions(url=started.url), print, connected)


def test_unreachable_proxy_is_exit_1_with_a_message_and_no_traceback() -> None:
    url = f"http://127.0.0.1:{port_nobody_listens_on()}"
    result = subprocess.run(
        [sys.executable, "-m", "arbstr_trio", "tail", "--url", url, "--key", "sekrit-key"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: cannot connect to the proxy at {url}"), result.stderr
    assert "Traceback" not in result.stderr
    assert "sekrit-key" not in result.stderr


def port_nobody_listens_on() -> int:
    """A port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_feed_url_and_filters_and_lines_without_a_server() -> None:
    assert feed_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/live"
    assert feed_url("https://proxy.example/") == "wss://proxy.example/v1/live"
    assert feed_url("ws://h:1/v1/live") == "ws://h:1/v1/live"
    with pytest.raises(CliError):
        feed_url("ftp://h")
    cooldown = {
        "type": "cooldown_started",
        "ts": 0.0,
        "provider": "a",
        "model": "m",
        "until": 2.5,
        "reason": "retry_after",
    }
    assert describe(cooldown).endswith(" ⏸ a m cooling down for 2.5 s (retry_after)")
    assert keep(cooldown, provider="a", errors=True)
    assert not keep(cooldown, provider="b", errors=False)
    closing = {"type": "breaker", "provider": "a", "from": "half_open", "to": "closed"}
    assert keep(closing, provider=None, errors=False)
    assert not keep(closing, provider=None, errors=True)
    dropped = {"type": "dropped", "ts": 0.0, "count": 3}
    assert keep(dropped, provider="z", errors=True)
    assert describe(dropped).endswith(" … 3 events dropped: this client read too slowly")
