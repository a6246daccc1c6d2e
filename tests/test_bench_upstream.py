"""The benchmark's fast upstream frames its answers as HTTP/1.1 and OpenAI clients expect.

Its answers are canned bytes written by hand for speed, so nothing else checks that a
stream is valid chunked encoding with the right events, or that the JSON parses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from fast_upstream import parse_behaviour, render_json, render_stream


def _dechunk(frames: bytes) -> tuple[bytes, bool]:
    """The body of a chunked transfer, and whether it ended with the zero-size chunk."""
    body, rest = b"", frames
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return body, rest == b"\r\n"
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    return body, False


def test_stream_is_chunked_sse_with_content_finish_usage_and_done() -> None:
    body, terminated = _dechunk(b"".join(render_stream(5)))
    assert terminated
    events = [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert contents == ["", " t0", " t1", " t2", " t3", " t4", None]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def test_json_answer_reports_its_tokens() -> None:
    answer = json.loads(render_json(16))
    assert answer["usage"]["completion_tokens"] == 16
    assert answer["choices"][0]["message"]["content"].count("tok") == 16


def test_behaviour_spec_is_read_from_any_separator() -> None:
    behaviour = parse_behaviour(b"chunks=100,delay=10&fail=20;junk=x")
    assert (behaviour.chunks, behaviour.delay_ms, behaviour.fail_percent) == (100, 10.0, 20.0)
    assert parse_behaviour(b"chunks=oops").chunks == 16
