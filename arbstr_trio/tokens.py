"""Estimating a request's tokens before it is sent, to rank providers by what it will cost.

The estimate only has to order providers correctly and be in the right range; the
cost that is charged and recorded always comes from the provider's reported usage.
A tokenizer per model family would be more exact but costs milliseconds and a large
dependency on the hot path; four characters per token is the well-known average for
English text with OpenAI's tokenizers, with the per-message overhead they document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["estimate_prompt_tokens"]

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4  # role and separators around each message
_TOKENS_PER_REPLY = 3  # the assistant reply is primed with a few tokens
_TOKENS_PER_IMAGE = 85  # an image part at low detail, OpenAI's base charge


def estimate_prompt_tokens(messages: Sequence[Any], tools: object = None) -> int:
    """Prompt tokens for ``messages`` (and ``tools``, when the request declares any)."""
    chars = 0
    extra = _TOKENS_PER_REPLY
    for message in messages:
        extra += _TOKENS_PER_MESSAGE
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    text = part.get("text")
                    if isinstance(text, str):
                        chars += len(text)
                    elif part.get("type") == "image_url":
                        extra += _TOKENS_PER_IMAGE
        for key in ("name", "tool_calls", "function_call"):
            value = message.get(key)
            if value is not None:
                chars += len(str(value))
    if tools is not None:
        chars += len(str(tools))
    return extra + -(-chars // _CHARS_PER_TOKEN)
