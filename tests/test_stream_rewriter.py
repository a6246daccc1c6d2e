"""What an OpenAI client receives of a relayed stream."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from arbstr_trio.pricing import Usage
from arbstr_trio.sse import SSEDecoder
from arbstr_trio.stream_rewriter import StreamRewriter

USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
META = {"request_id": "r1", "provider": "alpha", "cost_sats": 0.002}


def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": choices,
        **extra,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def delta(content: str, reason: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": reason}]


def upstream_stream(*, with_usage: bool = True, newline: bytes = b"\n") -> bytes:
    parts = [chunk(delta("Hel")), chunk(delta("lo")), chunk(delta("", "stop"))]
    if with_usage:
        parts.append(chunk([], usage=USAGE))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts).replace(b"\n", newline)


def run(
    stream: bytes, *, wants_usage: bool, chunks: list[bytes] | None = None
) -> tuple[StreamRewriter, bytes]:
    decoder = SSEDecoder()
    rewriter = StreamRewriter(client_wants_usage=wants_usage)
    out = b""
    for piece in chunks or [stream]:
        out += b"".join(rewriter.feed(decoder.feed(piece)))
    out += b"".join(rewriter.feed(decoder.flush()))
    return rewriter, out + rewriter.finish(META)


def client_chunks(out: bytes) -> list[Any]:
    events = SSEDecoder().feed(out)
    return [orjson.loads(e.data) if e.data != b"[DONE]" else "[DONE]" for e in events if e.data]


def test_client_without_usage_gets_no_usage_chunk_and_metadata_on_the_finish_chunk() -> None:
    rewriter, out = run(upstream_stream(), wants_usage=False)
    received = client_chunks(out)
    assert received[-1] == "[DONE]"
    assert received.count("[DONE]") == 1
    assert all(c["choices"] for c in received[:-1])  # chunk.choices[0] never breaks
    assert received[-2]["choices"][0]["finish_reason"] == "stop"
    assert received[-2]["arbstr"] == META
    assert rewriter.usage == Usage(11, 3)


def test_client_with_usage_gets_it_with_the_metadata() -> None:
    rewriter, out = run(upstream_stream(), wants_usage=True)
    received = client_chunks(out)
    assert received[-2]["choices"] == []
    assert received[-2]["usage"] == USAGE
    assert received[-2]["arbstr"] == META
    assert "arbstr" not in received[-3]
    assert rewriter.usage == Usage(11, 3)


def test_content_chunks_pass_through_as_the_providers_bytes() -> None:
    decoder = SSEDecoder()
    rewriter = StreamRewriter(client_wants_usage=False)
    first = chunk(delta("Hel"))
    assert rewriter.feed(decoder.feed(first)) == [first]


def test_provider_without_usage_still_gets_metadata() -> None:
    rewriter, out = run(upstream_stream(with_usage=False), wants_usage=True)
    received = client_chunks(out)
    assert received[-2]["arbstr"] == META
    assert rewriter.usage is None


def test_one_done_even_if_the_provider_sends_two() -> None:
    _, out = run(upstream_stream() + b"data: [DONE]\n\n", wants_usage=False)
    assert out.count(b"[DONE]") == 1


def test_missing_done_is_completed_when_the_answer_finished() -> None:
    stream = upstream_stream().replace(b"data: [DONE]\n\n", b"")
    rewriter, out = run(stream, wants_usage=False)
    assert rewriter.finished
    assert out.endswith(b"data: [DONE]\n\n")


def test_failure_ends_with_an_error_event_and_no_done() -> None:
    decoder = SSEDecoder()
    rewriter = StreamRewriter(client_wants_usage=False)
    rewriter.feed(decoder.feed(chunk(delta("Hel"))))
    tail = rewriter.fail({"message": "boom", "type": "upstream_error", "param": None, "code": "x"})
    assert b"[DONE]" not in tail
    assert orjson.loads(SSEDecoder().feed(tail)[-1].data or b"") == {
        "error": {"message": "boom", "type": "upstream_error", "param": None, "code": "x"}
    }
    assert not rewriter.finished


def test_usage_chunk_without_a_choices_key_is_still_the_usage_chunk() -> None:
    stream = upstream_stream().replace(
        chunk([], usage=USAGE), b"data: " + orjson.dumps({"id": "c1", "usage": USAGE}) + b"\n\n"
    )
    rewriter, out = run(stream, wants_usage=False)
    assert rewriter.usage == Usage(11, 3)
    assert all("usage" not in c for c in client_chunks(out) if c != "[DONE]")


def test_the_providers_own_error_event_is_not_doubled() -> None:
    decoder = SSEDecoder()
    rewriter = StreamRewriter(client_wants_usage=False)
    sent = rewriter.feed(
        decoder.feed(chunk(delta("Hel")) + b'data: {"error": {"message": "overloaded"}}\n\n')
    )
    assert rewriter.upstream_error == {"message": "overloaded"}
    tail = rewriter.fail({"message": "x", "type": "upstream_error", "param": None, "code": "x"})
    assert b"".join(sent).count(b'"error"') == 1
    assert b"error" not in tail
    assert b"[DONE]" not in tail


def test_several_choices_keep_their_order() -> None:
    two = [
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        chunk([{"index": 1, "delta": {"content": "x"}, "finish_reason": None}]),
        chunk([{"index": 1, "delta": {}, "finish_reason": "length"}]),
        b"data: [DONE]\n\n",
    ]
    _, out = run(b"".join(two), wants_usage=False)
    received = client_chunks(out)
    assert [c["choices"][0]["index"] for c in received[:-1]] == [0, 1, 1]
    assert received[-2]["arbstr"] == META


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    wants_usage=st.booleans(),
)
def test_any_split_gives_the_same_usage_and_the_same_client_view(
    cuts: list[int], newline: bytes, wants_usage: bool
) -> None:
    stream = upstream_stream(newline=newline)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    whole_rewriter, whole = run(stream, wants_usage=wants_usage)
    split_rewriter, split = run(stream, wants_usage=wants_usage, chunks=pieces)
    assert split_rewriter.usage == whole_rewriter.usage == Usage(11, 3)
    assert client_chunks(split) == client_chunks(whole)
