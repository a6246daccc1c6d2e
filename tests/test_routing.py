"""Ranking: the cheapest provider for *this* request, fee included, ties by name."""

from __future__ import annotations

import orjson
import pytest

from arbstr_trio.chat_request import parse_chat_request
from arbstr_trio.config.load import parse_config
from arbstr_trio.errors import ModelNotFound
from arbstr_trio.routing import rank_candidates
from arbstr_trio.tokens import estimate_prompt_tokens

PROVIDERS = """
[[providers]]
name = "per-token"
url = "http://a.example/v1"
models = ["m"]
input_rate = 150
output_rate = 600

[[providers]]
name = "with-fee"
url = "http://b.example/v1"
models = ["m"]
input_rate = 100
output_rate = 400
base_fee = 1

[[providers]]
name = "anything"
url = "http://c.example/v1"
input_rate = 1000
output_rate = 4000

[[providers]]
name = "mapped"
url = "http://d.example/v1"
model_map = { "m" = "vendor/m-large" }
input_rate = 150
output_rate = 600
"""


def rank(max_tokens: int | None = None, model: str = "m") -> list[tuple[str, str, int]]:
    config = parse_config(PROVIDERS).config
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    request = parse_chat_request(orjson.dumps(body))
    return [
        (c.name, c.upstream_model, c.estimated_cost_msat)
        for c in rank_candidates(config.providers, request, default_completion_tokens=256)
    ]


def test_short_request_avoids_the_base_fee() -> None:
    ranked = rank(max_tokens=100)
    assert [name for name, _, _ in ranked] == ["mapped", "per-token", "anything", "with-fee"]


def test_long_request_pays_the_fee_for_lower_rates() -> None:
    # 100k completion tokens: 60 sats per-token vs 40 + 1 sats with the fee.
    ranked = rank(max_tokens=100_000)
    assert ranked[0][0] == "with-fee"


def test_ties_are_broken_by_name() -> None:
    ranked = rank()
    assert [name for name, _, _ in ranked[:2]] == ["mapped", "per-token"]
    assert ranked[0][2] == ranked[1][2]


def test_estimated_cost_uses_the_full_formula() -> None:
    prompt = estimate_prompt_tokens([{"role": "user", "content": "hi"}])
    costs = {name: cost for name, _, cost in rank(max_tokens=1000)}
    assert costs["with-fee"] == round((prompt * 100 + 1000 * 400) / 1000) + 1000


def test_model_map_gives_the_upstream_name() -> None:
    upstream = {name: model for name, model, _ in rank()}
    assert upstream == {
        "mapped": "vendor/m-large",
        "per-token": "m",
        "with-fee": "m",
        "anything": "m",
    }


def test_provider_with_no_models_serves_any_model() -> None:
    assert [name for name, _, _ in rank(model="unlisted")] == ["anything"]


def test_unknown_model() -> None:
    config = parse_config(
        PROVIDERS.replace('name = "anything"', 'name = "anything"\nmodels = ["z"]')
    ).config
    request = parse_chat_request(
        b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}'
    )
    with pytest.raises(ModelNotFound) as caught:
        rank_candidates(config.providers, request, default_completion_tokens=256)
    assert caught.value.status == 404
    assert caught.value.param == "model"


def test_prompt_estimate_grows_with_content() -> None:
    short = estimate_prompt_tokens([{"role": "user", "content": "x" * 40}])
    long = estimate_prompt_tokens([{"role": "user", "content": "x" * 4000}])
    parts = estimate_prompt_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "x" * 4000}, {"type": "image_url"}]}]
    )
    assert long - short == 990
    assert parts == long + 85


PER_MODEL = """
[[providers]]
name = "flat"
url = "http://a.example/v1"
models = ["small", "large"]
input_rate = 500
output_rate = 500

[[providers]]
name = "tiered"
url = "http://b.example/v1"
models = ["small", "large"]
input_rate = 100
output_rate = 100
model_rates = { large = { input_rate = 5000, output_rate = 20000 } }
"""


def test_a_provider_that_prices_models_differently_is_ranked_per_model() -> None:
    config = parse_config(PER_MODEL).config

    def ranked(model: str) -> list[tuple[str, int, int]]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        request = parse_chat_request(orjson.dumps(body))
        candidates = rank_candidates(config.providers, request, default_completion_tokens=256)
        return [(c.name, int(c.rates.input_rate), int(c.rates.output_rate)) for c in candidates]

    assert ranked("small") == [("tiered", 100, 100), ("flat", 500, 500)]
    assert ranked("large") == [("flat", 500, 500), ("tiered", 5000, 20000)]
