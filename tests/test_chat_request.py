"""The client's body: checked once, forwarded as its own bytes unless it must change."""

from __future__ import annotations

import orjson
import pytest

from arbstr_trio.chat_request import parse_chat_request
from arbstr_trio.config.models import CompletionLimitField
from arbstr_trio.errors import ClientError


def raw(**fields: object) -> bytes:
    body: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (raw(model=...), "model", "'model' is missing"),
        (raw(model=5), "model", "'model' must be a non-empty string"),
        (raw(model=""), "model", "'model' must be a non-empty string"),
        (raw(messages=...), "messages", "'messages' is missing"),
        (raw(messages="hi"), "messages", "'messages' must be a non-empty array"),
        (raw(messages=[]), "messages", "'messages' must be a non-empty array"),
        (raw(messages=["hi"]), "messages[0]", "'messages[0]' must be an object"),
        (
            raw(messages=[{"content": "x"}]),
            "messages[0].role",
            "'messages[0].role' must be a string",
        ),
        (raw(stream="yes"), "stream", "'stream' must be a boolean"),
        (raw(stream_options=[1]), "stream_options", "'stream_options' must be an object"),
        (
            raw(stream_options={"include_usage": "y"}),
            "stream_options.include_usage",
            "must be a boolean",
        ),
        (raw(max_tokens=0), "max_tokens", "'max_tokens' must be an integer >= 1"),
        (raw(max_tokens=1.5), "max_tokens", "'max_tokens' must be an integer >= 1"),
        (raw(n=True), "n", "'n' must be an integer >= 1"),
    ],
)
def test_invalid_bodies_name_the_field(body: bytes, param: str | None, fragment: str) -> None:
    with pytest.raises(ClientError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_unchanged_body_is_forwarded_as_the_same_bytes() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x_vendor_field":[1,2]}'
    request = parse_chat_request(body)
    assert request.upstream_body("m") is body


def test_model_mapping_rewrites_only_the_model() -> None:
    request = parse_chat_request(raw(temperature=0.2, x_vendor_field={"a": 1}))
    forwarded = orjson.loads(request.upstream_body("vendor/m"))
    assert forwarded == {**orjson.loads(request.raw), "model": "vendor/m"}


def test_stream_asks_for_usage_keeping_other_stream_options() -> None:
    request = parse_chat_request(raw(stream=True, stream_options={"continuous_usage_stats": True}))
    assert not request.client_wants_usage
    forwarded = orjson.loads(request.upstream_body("m"))
    assert forwarded["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}


def test_stream_that_asked_for_usage_is_forwarded_unchanged() -> None:
    request = parse_chat_request(raw(stream=True, stream_options={"include_usage": True}))
    assert request.client_wants_usage
    assert request.upstream_body("m") is request.raw


def test_explicit_no_usage_is_respected() -> None:
    request = parse_chat_request(raw(stream=True, stream_options={"include_usage": False}))
    assert request.usage_declined
    assert request.upstream_body("m") is request.raw


def test_expected_tokens() -> None:
    request = parse_chat_request(raw(max_completion_tokens=50, max_tokens=999, n=2))
    prompt, completion = request.expected_tokens(256)
    assert completion == 999 * 2  # the larger limit, for each of n choices
    assert prompt > 0
    assert parse_chat_request(raw()).expected_tokens(256)[1] == 256


def test_with_both_token_limits_the_larger_is_expected() -> None:
    """A provider may honour either: budgets and ranking must not count on the smaller."""
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 1,
        "max_tokens": 5000,
    }
    request = parse_chat_request(orjson.dumps(body))
    assert request.expected_tokens(256)[1] == 5000


def test_a_completion_cap_applies_only_where_the_client_set_no_limit() -> None:
    bare = parse_chat_request(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":1}')
    capped = bare.capped(64)
    assert capped.max_completion_tokens == 64
    sent = orjson.loads(capped.upstream_body("m"))
    assert (sent["max_tokens"], sent["x"]) == (64, 1)
    sent = orjson.loads(capped.upstream_body("m", CompletionLimitField.MAX_COMPLETION_TOKENS))
    assert sent["max_completion_tokens"] == 64
    assert "max_tokens" not in sent
    own = parse_chat_request(
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":9}'
    )
    assert own.capped(64).max_completion_tokens == 9
    assert own.capped(64).upstream_body("m") == own.raw  # the client's bytes, untouched
    # The client's limit in a field this provider does not read: mirrored into its own.
    sent = orjson.loads(
        own.capped(64).upstream_body("m", CompletionLimitField.MAX_COMPLETION_TOKENS)
    )
    assert (sent["max_tokens"], sent["max_completion_tokens"]) == (9, 9)
