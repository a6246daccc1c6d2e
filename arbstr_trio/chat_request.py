"""A client's chat-completion request: checked once, parsed once, forwarded untouched.

The body is parsed a single time to read the handful of fields routing needs. What
goes upstream is the client's own bytes, unless something has to change (the model
name under a mapping, ``stream_options`` to ask for usage, or a completion cap that a
budget needs): only then is the body serialised again, with every field the client
sent, known to us or not, kept.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from arbstr_trio.config.models import CompletionLimitField
from arbstr_trio.errors import ClientError
from arbstr_trio.tokens import estimate_prompt_tokens, prompt_token_bound

__all__ = ["ChatRequest", "parse_chat_request"]


@attrs.frozen
class ChatRequest:
    raw: bytes
    body: Mapping[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    """The client asked for the usage chunk (``stream_options.include_usage: true``)."""
    usage_declined: bool
    """The client explicitly set ``include_usage: false``: we must not ask on its behalf."""
    max_completion_tokens: int | None
    choices: int
    completion_cap: int | None = None
    """A limit the proxy sets because the client set none (see :meth:`capped`)."""

    def capped(self, completion_tokens: int) -> ChatRequest:
        """This request with a completion limit every provider will read: the client's
        own (the larger, if it sent both fields), else ``completion_tokens``.

        A budget holds the most a request can cost, and an answer with no limit has no
        most. The limit goes upstream in the field each provider reads, where the
        client's body does not already set that field.
        """
        limit = self.max_completion_tokens or completion_tokens
        return attrs.evolve(self, max_completion_tokens=limit, completion_cap=limit)

    def upstream_body(
        self,
        upstream_model: str,
        limit_field: CompletionLimitField = CompletionLimitField.MAX_TOKENS,
    ) -> bytes:
        """The body to send to a provider that knows the model as ``upstream_model``."""
        ask_for_usage = self.stream and not self.client_wants_usage and not self.usage_declined
        set_cap = self.completion_cap is not None and limit_field.value not in self.body
        if upstream_model == self.model and not ask_for_usage and not set_cap:
            return self.raw
        body = dict(self.body)
        body["model"] = upstream_model
        if set_cap:
            body[limit_field.value] = self.completion_cap
        if ask_for_usage:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, Mapping) else {}
            options["include_usage"] = True
            body["stream_options"] = options
        return orjson.dumps(body)

    @functools.cached_property
    def prompt_tokens(self) -> int:
        """The prompt's estimated tokens: counted once, asked for by routing and the engine."""
        return estimate_prompt_tokens(self.body["messages"], *self._declarations())

    def _declarations(self) -> list[object]:
        """What else of the body a provider puts in the prompt: tools, functions, a schema."""
        return [
            value
            for key in ("tools", "functions", "response_format")
            if (value := self.body.get(key)) is not None
        ]

    @functools.cached_property
    def prompt_token_bound(self) -> int:
        """The most prompt tokens this request can be charged for: what a budget holds."""
        return prompt_token_bound(self.body["messages"], *self._declarations())

    def expected_tokens(self, default_completion_tokens: int) -> tuple[int, int]:
        """(prompt, completion) tokens this request is expected to use, for ranking."""
        completion = self.max_completion_tokens or default_completion_tokens
        return self.prompt_tokens, completion * self.choices


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Check the fields the proxy relies on; anything else is the provider's to judge."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object", code="invalid_json")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        problem = "is missing" if model is None else "must be a non-empty string"
        raise ClientError(f"'model' {problem}", param="model")

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problem = "is missing" if messages is None else "must be a non-empty array"
        raise ClientError(f"'messages' {problem}", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ClientError(f"'messages[{index}]' must be an object", param=f"messages[{index}]")
        if not isinstance(message.get("role"), str):
            raise ClientError(
                f"'messages[{index}].role' must be a string", param=f"messages[{index}].role"
            )

    stream = _optional(body, "stream", bool, "a boolean") or False
    options = _optional(body, "stream_options", dict, "an object") or {}
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise ClientError(
            "'stream_options.include_usage' must be a boolean", param="stream_options.include_usage"
        )
    # Both may be sent, and a provider may honour either: expect the larger.
    limits = [
        count
        for count in (
            _optional_count(body, "max_completion_tokens"),
            _optional_count(body, "max_tokens"),
        )
        if count is not None
    ]
    max_tokens = max(limits) if limits else None
    choices = _optional_count(body, "n") or 1

    return ChatRequest(
        raw=raw,
        body=body,
        model=model,
        stream=stream,
        client_wants_usage=include_usage is True,
        usage_declined=include_usage is False,
        max_completion_tokens=max_tokens,
        choices=choices,
    )


def _optional(body: Mapping[str, Any], key: str, kind: type, label: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise ClientError(f"'{key}' must be {label}", param=key)
    return value


def _optional_count(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClientError(f"'{key}' must be an integer >= 1", param=key)
    return value
