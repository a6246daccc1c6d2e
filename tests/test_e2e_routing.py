"""Policies, strategies and chains end to end: clients -> the proxy under Hypercorn -> mocks.

The providers are listed dearest first (beta, then alpha), so ``cheapest`` and
``ordered`` disagree and every test can tell which one routed its request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import httpx
import trio

from arbstr_trio.pricing import Rates, Usage, cost_msat, format_sats
from arbstr_trio.server import Started
from tests.conftest import chat_body, http_client, running_proxy

PROVIDERS = """
[server]
listen = "127.0.0.1:0"

[retry]
max_attempts_per_provider = 1

[[providers]]
name = "beta"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini", "gpt-4o"]
input_rate = 300
output_rate = 1200

[providers.mock]
chunks = 5

[[providers]]
name = "alpha"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini", "gpt-4o"]
input_rate = 150
output_rate = 600

[providers.mock]
chunks = 5
"""

POLICIES = """
[[policies.rules]]
name = "coding"
keywords = ["code", "unit test"]
strategy = "ordered"

[[policies.rules]]
name = "frugal"
allowed_models = ["gpt-4o-mini", "fast"]
max_sats_per_1m_output = 600
max_cost_sats = 1

[[policies.rules]]
name = "hedged"
hedge_after_ms = 100

[[chains]]
name = "fast"
entries = [{provider = "beta", model = "gpt-4o"}, {provider = "alpha", model = "gpt-4o-mini"}]
"""


async def post(
    client: httpx.AsyncClient, body: Mapping[str, object] | None = None, /, **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json=dict(body or chat_body()), headers=headers
    )


async def providers_of(client: httpx.AsyncClient, count: int, **headers: str) -> list[str]:
    answered = []
    for _ in range(count):
        response = await post(client, **headers)
        assert response.status_code == 200, response.text
        answered.append(response.headers["x-arbstr-provider"])
    return answered


def policy_column(started: Started) -> list[tuple[str | None, str | None, int]]:
    """(policy, provider, status) per request, in order, from the request log itself."""
    with sqlite3.connect(f"file:{started.config.database.path}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT policy, provider, status FROM requests ORDER BY id"))


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# --- strategies ------------------------------------------------------------------------


async def test_cheapest_is_the_default_and_ordered_follows_the_config() -> None:
    async with running_proxy(PROVIDERS) as started, http_client(started) as client:
        assert await providers_of(client, 2) == ["alpha", "alpha"]
    ordered = PROVIDERS + '\n[policies]\ndefault_strategy = "ordered"\n'
    async with running_proxy(ordered) as started, http_client(started) as client:
        assert await providers_of(client, 2) == ["beta", "beta"]
        # The order is the fallback order too: beta fails, alpha answers.
        response = await post(client, **{"x-mock-beta": "status=503"})
        assert response.status_code == 200
        assert response.headers["x-arbstr-provider"] == "alpha"
        assert response.headers["x-arbstr-retries"] == "1/beta"


async def test_lowest_cost_is_cheapest() -> None:
    config = PROVIDERS + '\n[policies]\ndefault_strategy = "lowest_cost"\n'
    async with running_proxy(config) as started, http_client(started) as client:
        assert await providers_of(client, 2) == ["alpha", "alpha"]


async def test_round_robin_takes_turns_across_requests() -> None:
    config = PROVIDERS + '\n[policies]\ndefault_strategy = "round_robin"\n'
    async with running_proxy(config) as started, http_client(started) as client:
        assert await providers_of(client, 4) == ["beta", "alpha", "beta", "alpha"]
        # Whoever's turn it is, the other is still the fallback.
        response = await post(client, **{"x-mock-beta": "status=503"})
        assert response.headers["x-arbstr-provider"] == "alpha"
        assert response.headers["x-arbstr-attempts"] == "beta:http_503, alpha:ok"


async def test_lowest_latency_measures_everyone_then_prefers_the_fastest() -> None:
    config = PROVIDERS + '\n[policies]\ndefault_strategy = "lowest_latency"\n'
    slow_alpha = {"x-mock-alpha": "latency_ms=150"}
    async with running_proxy(config) as started, http_client(started) as client:
        # Nobody measured: the cheapest (alpha, slow). Then beta, still unmeasured.
        # Then beta again, now the faster of two measured providers.
        assert await providers_of(client, 4, **slow_alpha) == ["alpha", "beta", "beta", "beta"]
        latency = started.runtime.routes.latency
        alpha, beta = (
            latency.estimate("alpha", "gpt-4o-mini"),
            latency.estimate("beta", "gpt-4o-mini"),
        )
        assert alpha is not None
        assert beta is not None
        assert alpha >= 0.15 > beta


# --- policies ----------------------------------------------------------------------------


async def test_policies_by_keyword_and_header_and_the_log_says_which() -> None:
    async with running_proxy(PROVIDERS + POLICIES) as started, http_client(started) as client:
        # "code" as a word chooses coding (ordered: beta); in "decode" it does not.
        response = await post(client, chat_body(content="Please review this CODE."))
        assert response.headers["x-arbstr-provider"] == "beta"
        response = await post(client, chat_body(content="decode this base64"))
        assert response.headers["x-arbstr-provider"] == "alpha"
        parts = [{"type": "text", "text": "then write a"}, {"type": "text", "text": "Unit Test"}]
        response = await post(client, chat_body(content=parts))  # type: ignore[arg-type]
        assert response.headers["x-arbstr-provider"] == "beta"
        # The header wins over keywords.
        response = await post(client, chat_body(content="code"), **{"x-arbstr-policy": "frugal"})
        assert response.headers["x-arbstr-provider"] == "alpha"
        await started.runtime.writer.flushed(4)
        assert policy_column(started) == [
            ("coding", "beta", 200),
            (None, "alpha", 200),
            ("coding", "beta", 200),
            ("frugal", "alpha", 200),
        ]
        # /v1/stats can now group by it.
        stats = (await client.get("/v1/stats", params={"group_by": "policy"})).json()
        assert "coding" in str(stats)
        assert "frugal" in str(stats)


async def test_policy_refusals_are_400s_that_say_why() -> None:
    async with running_proxy(PROVIDERS + POLICIES) as started, http_client(started) as client:
        response = await post(client, **{"x-arbstr-policy": "turbo"})
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "unknown_policy"
        assert error["param"] == "x-arbstr-policy"
        assert "'turbo'" in error["message"]

        response = await post(client, chat_body(model="gpt-4o"), **{"x-arbstr-policy": "frugal"})
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "model_not_allowed"
        assert "'gpt-4o'" in error["message"]
        assert "'frugal'" in error["message"]

        # alpha's estimate for 10k completion tokens is 6 sats: over the 1 sat cap.
        body = chat_body(max_tokens=10_000)
        response = await post(client, body, **{"x-arbstr-policy": "frugal"})
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "policy_cost_cap"
        assert "max_cost_sats of 1" in error["message"]

        # The estimate endpoint routes the same way.
        response = await client.post(
            "/v1/cost", json=chat_body(), headers={"x-arbstr-policy": "frugal"}
        )
        assert response.status_code == 200
        estimate = response.json()
        assert estimate["policy"] == "frugal"
        assert [c["provider"] for c in estimate["candidates"]] == ["alpha"]

        assert sum(len(mock.received) for mock in started.mocks.values()) == 0
        await started.runtime.writer.flushed(3)
        # The log names the policy that refused; an unknown one names none.
        assert [(policy, status) for policy, _, status in policy_column(started)] == [
            (None, 400),
            ("frugal", 400),
            ("frugal", 400),
        ]


async def test_a_policy_hedges_on_its_own_delay() -> None:
    stall = {"x-mock-alpha": "stall_ms=10000", "x-arbstr-deadline-ms": "1500"}
    async with running_proxy(PROVIDERS + POLICIES) as started, http_client(started) as client:
        start = trio.current_time()
        response = await post(client, **stall, **{"x-arbstr-policy": "hedged"})
        assert response.status_code == 200
        assert response.headers["x-arbstr-provider"] == "beta"
        assert response.headers["x-arbstr-attempts"] == "alpha:hedge_lost, beta:ok"
        assert trio.current_time() - start < 1.0
        # Without the policy there is no hedge (none is configured globally): the
        # stalled provider holds the request to its deadline.
        response = await post(
            client, chat_body(), **{"x-mock-alpha": "stall_ms=10000", "x-arbstr-deadline-ms": "300"}
        )
        assert response.status_code == 504
        assert len(started.mocks["beta"].received) == 1


# --- chains ------------------------------------------------------------------------------


async def test_a_chain_is_a_model_served_by_its_entries_in_order() -> None:
    async with running_proxy(PROVIDERS + POLICIES) as started, http_client(started) as client:
        models = (await client.get("/v1/models")).json()["data"]
        [chain] = [model for model in models if model["id"] == "fast"]
        assert chain["owned_by"] == "arbstr-chain"
        assert chain["entries"][0] == {"provider": "beta", "model": "gpt-4o"}

        response = await post(client, chat_body(model="fast"))
        assert response.status_code == 200
        assert response.headers["x-arbstr-provider"] == "beta"
        assert started.mocks["beta"].received[-1].json()["model"] == "gpt-4o"

        # The first entry fails: the next answers, asked for its own model, at its price.
        response = await post(client, chat_body(model="fast"), **{"x-mock-beta": "status=503"})
        assert response.status_code == 200
        assert response.headers["x-arbstr-provider"] == "alpha"
        assert response.headers["x-arbstr-retries"] == "1/beta"
        assert started.mocks["alpha"].received[-1].json()["model"] == "gpt-4o-mini"
        usage = response.json()["usage"]
        alpha = started.config.provider("alpha")
        rates = Rates(alpha.input_rate, alpha.output_rate, alpha.base_fee)
        spent = cost_msat(rates, Usage(usage["prompt_tokens"], usage["completion_tokens"]))
        assert response.headers["x-arbstr-cost-sats"] == format_sats(spent)

        await started.runtime.writer.flushed(2)
        assert policy_column(started) == [("fast", "beta", 200), ("fast", "alpha", 200)]
