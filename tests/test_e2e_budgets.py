"""Client-key budgets through the real server: the race, settling, and surviving restart.

Costs are computed here from the mock's deterministic usage (the proxy's own prompt
estimate, and ``chunks`` completion tokens unless ``max_tokens`` is fewer), and holds
from the proxy's prompt bound, so every expected figure is exact to the msat.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import trio
import trio.testing

from arbstr_trio.budget import Period
from arbstr_trio.pricing import Rates, Usage, cost_msat, format_sats
from arbstr_trio.server import Started
from arbstr_trio.tokens import estimate_prompt_tokens, prompt_token_bound
from tests.conftest import (
    chat_body,
    config_from,
    http_client,
    raw_chat_request,
    receive_until,
    running_proxy,
)

TEAM_A = "team-a-5e4d3c2b1a0f9e8d7c6b"
AUTH = {"x-api-key": TEAM_A}
BODY = chat_body(max_tokens=50)
PROMPT = estimate_prompt_tokens(BODY["messages"])  # type: ignore[arg-type]
PROMPT_BOUND = prompt_token_bound(BODY["messages"])  # type: ignore[arg-type]
CHUNKS = 5
CHEAP = Rates(Decimal(1500), Decimal(6000), Decimal("0.5"))
DEAR = Rates(Decimal(3000), Decimal(12000), Decimal(1))


def provider(name: str, rates: Rates, latency_ms: int = 0) -> str:
    return f"""
[[providers]]
name = "{name}"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini"]
input_rate = {rates.input_rate}
output_rate = {rates.output_rate}
base_fee = {rates.base_fee}

[providers.mock]
chunks = {CHUNKS}
latency_ms = {latency_ms}
"""


def proxy_config(db: Path, providers: str, max_sats_per_day: int) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"

[database]
path = "{db}"

{providers}

[[keys]]
name = "team-a"
key = "{TEAM_A}"
max_sats_per_day = {format_sats(max_sats_per_day)}
"""


def spent_in_log(started: Started) -> tuple[int, int]:
    """(rows, total cost_msat) the request log holds for team-a."""
    uri = f"file:{started.config.database.path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows, total = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost_msat), 0) FROM requests WHERE client_key = ?",
            ("team-a",),
        ).fetchone()
    return int(rows), int(total)


def assert_budget_exceeded(response: httpx.Response, left_msat: int | None) -> None:
    """A budget refusal; ``left_msat`` None: some amount less than the request's hold."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "budget_exceeded")
    now = time.time()
    reset = Period.DAY.bounds(now)[1]
    if left_msat is not None:
        assert f"has {format_sats(left_msat)} sats left" in error["message"]
    else:
        left, hold = re.findall(
            r"has ([\d.]+) sats left.*cost up to ([\d.]+) sats", error["message"]
        )[0]
        assert Decimal(left) < Decimal(hold)
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset)) in error["message"]
    retry_after = int(response.headers["retry-after"])
    assert abs(retry_after - (reset - now)) <= 2


async def test_fifty_racing_requests_get_exactly_the_ten_the_budget_fits(tmp_path: Path) -> None:
    # One provider and max_tokens = chunks: each holds the same worst case, so exactly 10
    # fit however the 50 interleave. The mock's latency keeps all in flight.
    body = chat_body(max_tokens=CHUNKS)
    hold = cost_msat(CHEAP, Usage(PROMPT_BOUND, CHUNKS))
    each = cost_msat(CHEAP, Usage(PROMPT, CHUNKS))
    config = proxy_config(tmp_path / "log.db", provider("solo", CHEAP, latency_ms=200), 10 * hold)
    async with running_proxy(config_from(config)) as started, http_client(started) as client:
        responses: list[httpx.Response] = []

        async def send_one() -> None:
            responses.append(await client.post("/v1/chat/completions", json=body, headers=AUTH))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(send_one)

        ok = [response for response in responses if response.status_code == 200]
        refused = [response for response in responses if response.status_code != 200]
        assert len(ok) == 10
        assert len(refused) == 40
        assert {response.headers["x-arbstr-cost-sats"] for response in ok} == {format_sats(each)}
        for response in refused:
            # What the first to finish gave back (hold minus cost) may show as left.
            assert_budget_exceeded(response, left_msat=None)
        assert 10 * each <= 10 * hold
        await started.runtime.writer.flushed(50)
        assert spent_in_log(started) == (50, 10 * each)
        assert len(started.mocks["solo"].received) == 10  # the refused never went upstream


async def test_settling_gives_back_what_the_worst_case_did_not_cost(tmp_path: Path) -> None:
    # Reserved: the dear provider with 50 completion tokens; charged: the cheap one, 5.
    worst = cost_msat(DEAR, Usage(PROMPT_BOUND, 50))
    actual = cost_msat(CHEAP, Usage(PROMPT, CHUNKS))
    assert actual < worst
    config = proxy_config(
        tmp_path / "log.db", provider("cheap", CHEAP) + provider("dear", DEAR), worst + actual
    )
    async with running_proxy(config_from(config)) as started, http_client(started) as client:
        for _ in range(2):  # without settling, the second would not fit
            response = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
            assert response.status_code == 200, response.text
            assert response.headers["x-arbstr-cost-sats"] == format_sats(actual)
        refused = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert_budget_exceeded(refused, left_msat=worst - actual)


async def test_a_request_that_fails_releases_its_reservation(tmp_path: Path) -> None:
    each = cost_msat(CHEAP, Usage(PROMPT_BOUND, 50))
    config = proxy_config(tmp_path / "log.db", provider("solo", CHEAP), each)
    async with running_proxy(config_from(config)) as started, http_client(started) as client:
        # Each would have used the whole budget had it kept its reservation.
        for fault, status in (("status=503", 502), ("status=400", 400), ("status=503", 502)):
            failed = await client.post(
                "/v1/chat/completions", json=BODY, headers={**AUTH, "x-mock": fault}
            )
            assert failed.status_code == status, failed.text
        response = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert response.status_code == 200, response.text
        await started.runtime.writer.flushed(4)
        assert spent_in_log(started) == (4, cost_msat(CHEAP, Usage(PROMPT, CHUNKS)))


async def test_spend_survives_a_restart_and_the_log_names_the_key(tmp_path: Path) -> None:
    worst = cost_msat(DEAR, Usage(PROMPT_BOUND, 50))
    actual = cost_msat(CHEAP, Usage(PROMPT, CHUNKS))
    config = config_from(
        proxy_config(
            tmp_path / "log.db", provider("cheap", CHEAP) + provider("dear", DEAR), worst + actual
        )
    )
    async with running_proxy(config) as started, http_client(started) as client:
        response = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert response.status_code == 200, response.text
    async with running_proxy(config) as started, http_client(started) as client:
        # Forgetting the first run's spend would let a third request through too.
        response = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert response.status_code == 200, response.text
        refused = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert_budget_exceeded(refused, left_msat=worst - actual)
        await started.runtime.writer.flushed(2)
        listing = await client.get("/v1/requests", headers=AUTH)
        rows = listing.json()["data"]
        assert [(row["client_key"], row["status"]) for row in rows] == [
            ("team-a", 429),
            ("team-a", 200),
            ("team-a", 200),
        ]
        assert TEAM_A not in listing.text


async def open_stream(started: Started, *headers: bytes) -> trio.SocketStream:
    """A streamed request with team-a's key, sent on a raw socket the test can hang up."""
    url = httpx.URL(started.url)
    assert url.port is not None
    socket = await trio.open_tcp_stream(url.host, url.port)
    body = orjson.dumps({**BODY, "stream": True})
    await socket.send_all(raw_chat_request(body, b"x-api-key: " + TEAM_A.encode(), *headers))
    return socket


async def test_a_client_that_leaves_settles_its_reservation_once(tmp_path: Path) -> None:
    worst = cost_msat(CHEAP, Usage(PROMPT_BOUND, 50))
    config = proxy_config(tmp_path / "log.db", provider("solo", CHEAP), 10 * worst)
    async with running_proxy(config_from(config)) as started:
        budgets, now = started.runtime.budgets, time.time()
        # Gone before any answer: nothing was spent, all is released.
        with trio.fail_after(5):
            socket = await open_stream(started, b"x-mock: latency_ms=10000")
            while not started.mocks["solo"].received:
                await trio.testing.wait_all_tasks_blocked()
            assert budgets.held_msat("team-a", Period.DAY, now) == worst
            await socket.aclose()
            await started.runtime.writer.flushed(1)
        assert budgets.held_msat("team-a", Period.DAY, now) == 0
        assert budgets.spent_msat("team-a", Period.DAY, now) == 0
        # Gone mid-stream: the provider charges for an answer nobody reported the usage
        # of, so the whole reservation stays spent.
        with trio.fail_after(5):
            socket = await open_stream(started, b"x-mock: chunk_delay_ms=500")
            await receive_until(socket, b"data:")
            await socket.aclose()
            await started.runtime.writer.flushed(2)
        assert budgets.held_msat("team-a", Period.DAY, now) == 0
        assert budgets.spent_msat("team-a", Period.DAY, now) == worst
    async with running_proxy(config_from(config)) as started:
        # The log remembers the kept reservation, so a restart counts it too.
        assert started.runtime.budgets.spent_msat("team-a", Period.DAY, now) == worst


def capped_config(db: Path, budget_msat: int, *, limit_field: str = "max_tokens") -> str:
    """A provider whose answers run to 1000 tokens unless told fewer, and a 40-token cap."""
    return f"""
[server]
listen = "127.0.0.1:0"

[database]
path = "{db}"

[routing]
budget_completion_tokens = 40

[[providers]]
name = "verbose"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini"]
input_rate = {CHEAP.input_rate}
output_rate = {CHEAP.output_rate}
base_fee = {CHEAP.base_fee}
completion_limit_field = "{limit_field}"

[providers.mock]
chunks = 1000
latency_ms = 100

[[keys]]
name = "team-a"
key = "{TEAM_A}"
max_sats_per_day = {format_sats(budget_msat)}

[[keys]]
name = "unlimited"
key = "unlimited-9f8e7d6c5b4a"
"""


async def test_answers_without_a_limit_cannot_spend_past_the_budget(tmp_path: Path) -> None:
    # Without a cap, each answer would run to 1000 tokens and settle at 25 times the
    # hold: ten concurrent requests would spend far past a budget that fits three.
    hold = cost_msat(CHEAP, Usage(PROMPT_BOUND, 40))
    config = capped_config(tmp_path / "log.db", 3 * hold)
    async with running_proxy(config_from(config)) as started, http_client(started) as client:
        responses: list[httpx.Response] = []

        async def send_one() -> None:
            responses.append(
                await client.post("/v1/chat/completions", json=chat_body(), headers=AUTH)
            )

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(send_one)

        ok = [response for response in responses if response.status_code == 200]
        assert len(ok) == 3, [r.text for r in responses if r.status_code != 200]
        assert {response.json()["usage"]["completion_tokens"] for response in ok} == {40}
        await started.runtime.writer.flushed(10)
        rows, spent = spent_in_log(started)
        assert rows == 10
        assert spent == 3 * cost_msat(CHEAP, Usage(PROMPT, 40)) <= 3 * hold
        sent = [orjson.loads(request.body) for request in started.mocks["verbose"].received]
        assert [body["max_tokens"] for body in sent] == [40, 40, 40]


async def test_the_cap_goes_where_the_provider_reads_it_and_only_for_budgets(
    tmp_path: Path,
) -> None:
    config = capped_config(tmp_path / "log.db", 10**9, limit_field="max_completion_tokens")
    async with running_proxy(config_from(config)) as started, http_client(started) as client:
        capped = await client.post("/v1/chat/completions", json=chat_body(), headers=AUTH)
        own_limit = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=7), headers=AUTH
        )
        unlimited = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"x-api-key": "unlimited-9f8e7d6c5b4a"},
        )
        assert [r.status_code for r in (capped, own_limit, unlimited)] == [200, 200, 200]
        assert unlimited.json()["usage"]["completion_tokens"] == 1000
        first, second, third = (
            orjson.loads(request.body) for request in started.mocks["verbose"].received
        )
        assert (first["max_completion_tokens"], "max_tokens" in first) == (40, False)
        # The client's own limit, mirrored into the field this provider reads.
        assert (second["max_tokens"], second["max_completion_tokens"]) == (7, 7)
        assert "max_tokens" not in third
        assert "max_completion_tokens" not in third
