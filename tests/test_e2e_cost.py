"""``POST /v1/cost`` through the real server: the estimate routing would act on, unsent."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

import httpx

from arbstr_trio.mock.provider import MockProvider
from tests.conftest import TWO_PROVIDERS, chat_body, http_client, running_proxy

# gamma is the cheapest per token but charges 1 sat a request: it loses short requests
# and wins long ones. It knows gpt-4o-mini by another name.
THREE_PROVIDERS = (
    TWO_PROVIDERS
    + """
[[providers]]
name = "gamma"
url = "http://mock.invalid/v1"
model_map = { "gpt-4o-mini" = "mini-latest" }
input_rate = 100
output_rate = 400
base_fee = 1.5
"""
)

RATES = {"alpha": (150, 600, 0), "beta": (300, 1200, 0), "gamma": (100, 400, 1.5)}


def expected_msat(provider: str, prompt: int, completion: int) -> int:
    """The documented formula, worked out here rather than taken from the code under test."""
    input_rate, output_rate, base_fee = RATES[provider]
    sats = Decimal(prompt * input_rate + completion * output_rate) / 1_000_000 + Decimal(
        str(base_fee)
    )
    return int((sats * 1000).to_integral_value(rounding=ROUND_HALF_UP))


def assert_no_upstream_call(mocks: Mapping[str, MockProvider]) -> None:
    for name, mock in mocks.items():
        assert not mock.received, f"{name} was called"


async def test_cost_ranks_every_candidate_and_sends_nothing() -> None:
    async with running_proxy(THREE_PROVIDERS) as started, http_client(started) as client:
        short = await client.post("/v1/cost", json=chat_body(max_tokens=10))
        assert short.status_code == 200, short.text
        estimate = short.json()
        prompt = estimate["tokens"]["prompt"]
        assert prompt > 0
        assert estimate["tokens"]["completion"] == 10
        assert estimate["object"] == "cost_estimate"
        assert estimate["model"] == "gpt-4o-mini"
        assert estimate["provider"] == "alpha"
        assert [c["provider"] for c in estimate["candidates"]] == ["alpha", "beta", "gamma"]
        for candidate in estimate["candidates"]:
            msat = expected_msat(candidate["provider"], prompt, 10)
            assert candidate["estimated_cost_msat"] == msat
            assert candidate["estimated_cost_sats"] == msat / 1000
        assert estimate["candidates"][2] == {
            "provider": "gamma",
            "upstream_model": "mini-latest",
            "estimated_cost_sats": expected_msat("gamma", prompt, 10) / 1000,
            "estimated_cost_msat": expected_msat("gamma", prompt, 10),
            "rates": {"input_rate": 100, "output_rate": 400, "base_fee": 1.5},
        }
        assert estimate["candidates"][0]["upstream_model"] == "gpt-4o-mini"

        # A long answer (n=2 of max_completion_tokens) makes the fee worth paying.
        long = await client.post(
            "/v1/cost", json=chat_body(max_completion_tokens=5000, n=2, max_tokens=1)
        )
        estimate = long.json()
        assert estimate["tokens"]["completion"] == 10_000
        assert estimate["provider"] == "gamma"
        assert [c["provider"] for c in estimate["candidates"]] == ["gamma", "alpha", "beta"]

        # No max_tokens: [routing] default_completion_tokens (256 by default).
        default = (await client.post("/v1/cost", json=chat_body())).json()
        assert default["tokens"]["completion"] == 256

        assert_no_upstream_call(started.mocks)


def assert_envelope(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert "x-arbstr-request-id" in response.headers


async def test_cost_rejects_what_chat_rejects_without_calling_upstream() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        missing_messages = await client.post("/v1/cost", json={"model": "gpt-4o-mini"})
        assert_envelope(missing_messages, 400, "invalid_request", "messages")
        bad_max = await client.post("/v1/cost", json=chat_body(max_tokens=0))
        assert_envelope(bad_max, 400, "invalid_request", "max_tokens")
        not_json = await client.post("/v1/cost", content=b"{nope")
        assert_envelope(not_json, 400, "invalid_json", None)
        unknown = await client.post("/v1/cost", json=chat_body(model="no-such-model"))
        assert_envelope(unknown, 404, "model_not_found", "model")
        assert "no-such-model" in unknown.json()["error"]["message"]
        wrong_method = await client.get("/v1/cost")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"
        assert_no_upstream_call(started.mocks)


async def test_cost_has_the_chat_body_limit() -> None:
    config = TWO_PROVIDERS.replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nmax_body_bytes = 1024'
    )
    async with running_proxy(config) as started, http_client(started) as client:
        response = await client.post("/v1/cost", json=chat_body(content="x" * 2000))
        assert response.status_code == 413
        assert_no_upstream_call(started.mocks)
