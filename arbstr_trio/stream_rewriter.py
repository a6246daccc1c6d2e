"""What an OpenAI client sees of a relayed stream, decided event by event.

The proxy asks providers for a usage chunk on every stream (that is how a stream's
cost becomes known), but a client that did not ask for it must not receive it: the
usage chunk has an empty ``choices`` list, and the everyday loop
``for chunk in stream: chunk.choices[0].delta`` would break on it. So:

* content chunks pass through as the provider's own bytes, the moment they complete;
* the chunk that carries ``finish_reason`` is held back until the stream ends;
* the usage chunk is kept for a client that asked for it and dropped otherwise;
* at the end, the cost metadata is attached as an ``arbstr`` field to the last chunk
  the client receives (the usage chunk if it asked for usage, else the finish chunk),
  where any SDK exposes it as an extra field, followed by exactly one ``[DONE]``.

arbstr sent ``[DONE]``, then its metadata, then ``[DONE]`` again: SDKs stop at the first
and never saw the metadata. This module has no I/O and no clock: the relay feeds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from arbstr_trio.pricing import Usage, usage_from_json
from arbstr_trio.sse import SSEEvent

__all__ = ["DONE", "StreamRewriter", "error_event"]

DONE = b"data: [DONE]\n\n"


def error_event(error: Mapping[str, Any]) -> bytes:
    """An OpenAI-shaped in-stream error: what SDKs raise from when a stream fails."""
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


class _Held:
    __slots__ = ("chunk", "raw")

    def __init__(self, raw: bytes, chunk: dict[str, Any]) -> None:
        self.raw = raw
        self.chunk = chunk


class StreamRewriter:
    """Feed it decoded events; send what it returns; call :meth:`finish` at the end."""

    __slots__ = (
        "_finish_chunk",
        "_usage_chunk",
        "_wants_usage",
        "done",
        "finish_reason",
        "model",
        "upstream_error",
        "usage",
    )

    def __init__(self, *, client_wants_usage: bool) -> None:
        self._wants_usage = client_wants_usage
        self._finish_chunk: _Held | None = None
        self._usage_chunk: _Held | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.upstream_error: Mapping[str, Any] | None = None
        self.done = False
        """The provider sent ``[DONE]``: nothing after it matters."""

    @property
    def finished(self) -> bool:
        """The provider completed its answer (``[DONE]`` or a finish reason was seen)."""
        return self.done or self.finish_reason is not None

    def feed(self, events: Iterable[SSEEvent]) -> list[bytes]:
        """The bytes to send now for these events, in order (often the raw input itself)."""
        out: list[bytes] = []
        for event in events:
            if self.done:
                break
            data = event.data
            if data is None:
                out.append(event.raw)  # comments and keep-alives pass through
                continue
            if data == b"[DONE]":
                self.done = True
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict):
                out.append(event.raw)  # not ours to judge
                continue
            self._observe(chunk)
            choices = chunk.get("choices")
            if "error" in chunk and not choices:
                self.upstream_error = chunk["error"] if isinstance(chunk["error"], Mapping) else {}
                out.append(event.raw)
            elif not choices and chunk.get("usage") is not None:  # [] or, from some, absent
                if self._wants_usage:
                    self._usage_chunk = _Held(event.raw, chunk)
            elif isinstance(choices, list) and _has_finish_reason(choices):
                self._release_finish_chunk(out)
                self._finish_chunk = _Held(event.raw, chunk)
            else:
                self._release_finish_chunk(out)
                out.append(event.raw)
        return out

    def finish(self, metadata: Mapping[str, Any]) -> bytes:
        """The held chunks, the metadata on the last of them, and the one ``[DONE]``.

        A provider that ends with neither a finish chunk nor a usage chunk leaves no
        chunk to carry the metadata; it is then not sent (the headers still are), since
        a chunk of our own would have no choices and break the everyday client loop.
        """
        return self._flush_held(metadata) + DONE

    def fail(self, error: Mapping[str, Any]) -> bytes:
        """End a stream that broke: what was held, then an error event and no ``[DONE]``.

        If the provider sent its own error event, the client already has it: one is enough.
        """
        if self.upstream_error is not None:
            return self._flush_held(None)
        return self._flush_held(None) + error_event(error)

    def _flush_held(self, metadata: Mapping[str, Any] | None) -> bytes:
        last = self._usage_chunk or self._finish_chunk
        parts: list[bytes] = []
        for held in (self._finish_chunk, self._usage_chunk):
            if held is None:
                continue
            if held is last and metadata is not None:
                held.chunk["arbstr"] = metadata
                parts.append(b"data: " + orjson.dumps(held.chunk) + b"\n\n")
            else:
                parts.append(held.raw)
        self._finish_chunk = self._usage_chunk = None
        return b"".join(parts)

    def _release_finish_chunk(self, out: list[bytes]) -> None:
        # More content after a finish chunk (n > 1 choices): keep the order as sent.
        if self._finish_chunk is not None:
            out.append(self._finish_chunk.raw)
            self._finish_chunk = None

    def _observe(self, chunk: Mapping[str, Any]) -> None:
        usage = usage_from_json(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        model = chunk.get("model")
        if isinstance(model, str):
            self.model = model
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, Mapping) and isinstance(choice.get("finish_reason"), str):
                    self.finish_reason = choice["finish_reason"]


def _has_finish_reason(choices: list[Any]) -> bool:
    return any(isinstance(c, Mapping) and c.get("finish_reason") is not None for c in choices)
