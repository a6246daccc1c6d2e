"""Counting a request's prompt tokens before it is sent: an estimate, and a bound.

The *estimate* ranks providers by what a request will cost; it only has to order them
correctly and be in the right range, since the cost charged and recorded always comes
from the provider's reported usage. A tokenizer per model family would be more exact
but costs milliseconds and a large dependency on the hot path; four characters per
token is the well-known average for English text with OpenAI's tokenizers, with the
per-message overhead they document.

The *bound* is what a spending budget holds before sending, so it must not be beaten:
a byte-level BPE tokenizer (OpenAI's, Llama 3's and most since) never makes a token of
less than one byte, so the UTF-8 length of the text caps its tokens, whatever language
it is in. Images are the exception no byte count bounds; they are counted at OpenAI's
largest high-detail charge for one image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

__all__ = ["estimate_prompt_tokens", "prompt_token_bound"]

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4  # role and separators around each message
_TOKENS_PER_REPLY = 3  # the assistant reply is primed with a few tokens
_TOKENS_PER_IMAGE = 85  # an image part at low detail, OpenAI's base charge
_MAX_TOKENS_PER_IMAGE = 1_445  # 85 + 170 per tile, 8 tiles: a 768x2048 image at high detail
_MAX_TOKENS_PER_MESSAGE = 8  # generous: chat templates wrap a message in a few special tokens


@attrs.define
class _PromptSize:
    chars: int = 0
    utf8_bytes: int = 0
    messages: int = 0
    images: int = 0

    def add(self, text: str) -> None:
        self.chars += len(text)
        self.utf8_bytes += len(text.encode())


def _measure(messages: Sequence[Any], declarations: Sequence[object]) -> _PromptSize:
    """One walk over everything of a request that a provider turns into prompt tokens.

    Content parts other than text and images (files, audio) are counted as the JSON
    they arrive as: no bound is known for them, and their bytes are the most a
    byte-level tokenizer could make of them, should the provider tokenize them so.
    """
    size = _PromptSize(messages=len(messages))
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            size.add(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    text = part.get("text")
                    if isinstance(text, str):
                        size.add(text)
                    elif part.get("type") == "image_url":
                        size.images += 1
                    else:
                        size.add(_json_text(part))
        for key in ("name", "tool_calls", "function_call"):
            value = message.get(key)
            if value is not None:
                size.add(value if isinstance(value, str) else _json_text(value))
    for declaration in declarations:
        size.add(_json_text(declaration))
    return size


def _json_text(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # not JSON-shaped: count what it prints as
        return str(value)


def estimate_prompt_tokens(messages: Sequence[Any], *declarations: object) -> int:
    """Prompt tokens for ``messages`` and the ``declarations`` beside them (tools,
    functions, a response schema)."""
    size = _measure(messages, declarations)
    overhead = _TOKENS_PER_REPLY + _TOKENS_PER_MESSAGE * size.messages
    return overhead + _TOKENS_PER_IMAGE * size.images + -(-size.chars // _CHARS_PER_TOKEN)


def prompt_token_bound(messages: Sequence[Any], *declarations: object) -> int:
    """The most prompt tokens ``messages`` and ``declarations`` can come to; see the module."""
    size = _measure(messages, declarations)
    overhead = _TOKENS_PER_REPLY + _MAX_TOKENS_PER_MESSAGE * size.messages
    return overhead + _MAX_TOKENS_PER_IMAGE * size.images + size.utf8_bytes
