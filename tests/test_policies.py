"""Choosing a policy (header, keywords) and what a policy leaves of the candidates."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from arbstr_trio.chat_request import parse_chat_request
from arbstr_trio.config.models import PoliciesConfig, PolicyRule, ProviderConfig, Rate
from arbstr_trio.errors import ClientError
from arbstr_trio.policies import apply_policy, choose_policy, user_text
from arbstr_trio.routing import Candidate, eligible_candidates
from tests.conftest import config_from

POLICIES = PoliciesConfig(
    rules=(
        PolicyRule(name="coding", keywords=("code", "c++", "unit test")),
        PolicyRule(name="chat", keywords=("hello",)),
        PolicyRule(name="quiet"),
    )
)


def body(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages)}


def user(content: object) -> dict[str, Any]:
    return {"role": "user", "content": content}


def chosen(header: str | None, *messages: dict[str, Any]) -> str | None:
    rule = choose_policy(POLICIES, header, body(*messages))
    return None if rule is None else rule.name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("please CODE this", "coding"),
        ("Code.", "coding"),
        ("(code)", "coding"),
        ("decode this", None),
        ("codex and encoder", None),
        ("write it in C++ please", "coding"),
        ("write a Unit   Test", "coding"),
        ("unit testing", None),
        ("hello there", "chat"),
        ("othello", None),
    ],
)
def test_keywords_match_whole_words_in_any_case(text: str, expected: str | None) -> None:
    assert chosen(None, user(text)) == expected


def test_the_first_matching_rule_in_config_order_wins() -> None:
    assert chosen(None, user("hello, code this")) == "coding"


def test_every_text_part_of_every_user_message_counts() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "http://x/code.png"}},
        {"type": "text", "text": "and now"},
        {"type": "text", "text": "some code"},
    ]
    assert chosen(None, user("nothing"), user(parts)) == "coding"
    assert list(user_text(body(user("a"), user(parts))["messages"])) == [
        "a",
        "and now",
        "some code",
    ]


def test_only_user_messages_choose_a_policy() -> None:
    system = {"role": "system", "content": "you write code"}
    assistant = {"role": "assistant", "content": "hello"}
    assert chosen(None, system, assistant, user("what is a sat?")) is None


def test_the_header_wins_over_keywords() -> None:
    assert chosen("quiet", user("code")) == "quiet"
    assert chosen(" chat ", user("code")) == "chat"


def test_an_unknown_header_policy_is_a_400_naming_it() -> None:
    with pytest.raises(ClientError) as caught:
        chosen("fastest", user("code"))
    error = caught.value
    assert error.status_code() == 400
    assert error.code == "unknown_policy"
    assert error.param == "x-arbstr-policy"
    assert "'fastest'" in error.message
    assert "'coding'" in error.message  # and says which exist


def test_no_rules_no_policy() -> None:
    assert choose_policy(PoliciesConfig(), None, body(user("code"))) is None


# --- constraints ---------------------------------------------------------------------------

PROVIDERS = config_from(
    """
[[providers]]
name = "cheap"
url = "http://a.invalid/v1"
models = ["small", "big"]
input_rate = 100
output_rate = 400

[[providers]]
name = "dear"
url = "http://b.invalid/v1"
models = ["small", "big"]
input_rate = 1000
output_rate = 4000
base_fee = 2
"""
).providers


def candidates(providers: tuple[ProviderConfig, ...], **body_fields: Any) -> list[Candidate]:
    request = parse_chat_request(
        b'{"model": "small", "messages": [{"role": "user", "content": "hi"}]'
        + b"".join(f', "{k}": {v}'.encode() for k, v in body_fields.items())
        + b"}"
    )
    return eligible_candidates(providers, request, default_completion_tokens=1000)


def names(kept: list[Candidate]) -> list[str]:
    return [candidate.name for candidate in kept]


def test_a_model_the_policy_does_not_allow_is_a_400_naming_model_and_policy() -> None:
    rule = PolicyRule(name="cheap-only", allowed_models=("small",))
    assert names(apply_policy(rule, "small", candidates(PROVIDERS))) == ["cheap", "dear"]
    with pytest.raises(ClientError) as caught:
        apply_policy(rule, "big", candidates(PROVIDERS))
    assert caught.value.code == "model_not_allowed"
    assert "'big'" in caught.value.message
    assert "'cheap-only'" in caught.value.message


def test_the_output_rate_cap_drops_dearer_candidates() -> None:
    rule = PolicyRule(name="capped", max_sats_per_1m_output=Rate(Decimal(400)))
    assert names(apply_policy(rule, "small", candidates(PROVIDERS))) == ["cheap"]
    too_low = PolicyRule(name="capped", max_sats_per_1m_output=Rate(Decimal("399.5")))
    with pytest.raises(ClientError) as caught:
        apply_policy(too_low, "small", candidates(PROVIDERS))
    assert caught.value.status_code() == 400
    assert caught.value.code == "policy_price_cap"
    assert "399.5" in caught.value.message
    assert "400" in caught.value.message


def test_the_cost_cap_uses_the_estimate_for_this_request() -> None:
    # 1000 completion tokens: cheap costs 0.4 sats and a little; dear 4 + 2 sats and more.
    rule = PolicyRule(name="pennies", max_cost_sats=Rate(Decimal(1)))
    assert names(apply_policy(rule, "small", candidates(PROVIDERS))) == ["cheap"]
    with pytest.raises(ClientError) as caught:
        apply_policy(rule, "small", candidates(PROVIDERS, max_tokens=10_000))
    assert caught.value.code == "policy_cost_cap"
    assert "'pennies'" in caught.value.message
    assert "max_cost_sats of 1" in caught.value.message
