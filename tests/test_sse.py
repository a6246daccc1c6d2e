"""The SSE decoder: any split of the same bytes gives the same events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from arbstr_trio.sse import SSEDecoder, SSEEvent


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


def data_of(events: list[SSEEvent]) -> list[bytes]:
    return [event.data for event in events if event.data is not None]


def test_lf_crlf_and_cr_line_endings() -> None:
    for newline in (b"\n", b"\r\n", b"\r"):
        stream = newline.join([b"data: a", b"", b"data:b", b"", b""])
        assert data_of(decode(stream)) == [b"a", b"b"]


def test_multiline_data_comments_and_fields() -> None:
    stream = b": keep-alive\n\nevent: delta\nid: 7\nretry: 100\ndata: one\ndata:  two\n\n"
    events = decode(stream)
    assert [(e.data, e.event) for e in events] == [(None, None), (b"one\n two", b"delta")]


def test_field_without_colon_and_unknown_fields() -> None:
    assert data_of(decode(b"data\nfoo: bar\n\n")) == [b""]


def test_raw_bytes_are_kept_exactly() -> None:
    stream = b"data: a\r\n\r\n: c\n\ndata: b\n\n"
    events = decode(stream[:5], stream[5:11], stream[11:])
    assert b"".join(e.raw for e in events) == stream
    assert [e.raw for e in events] == [b"data: a\r\n\r\n", b": c\n\n", b"data: b\n\n"]


def test_chunk_that_is_one_event_is_returned_as_the_same_object() -> None:
    chunk = b'data: {"x": 1}\n\n'
    [event] = SSEDecoder().feed(chunk)
    assert event.raw is chunk


def test_cr_at_chunk_end_then_lf() -> None:
    assert data_of(decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n")) == [b"a", b"b"]


def test_unterminated_last_event_is_flushed() -> None:
    assert data_of(decode(b"data: x\n\ndata: [DONE]\n")) == [b"x", b"[DONE]"]
    assert data_of(decode(b"data: [DONE]")) == [b"[DONE]"]


# --- any split, any line ending ---------------------------------------------------------

_text = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=30
)
_event = st.tuples(
    st.lists(_text, min_size=1, max_size=3),  # data lines
    st.one_of(st.none(), _text.filter(lambda t: t != "")),  # event name
    st.booleans(),  # a comment before it
)


def _encode(events: list[tuple[list[str], str | None, bool]], newline: bytes, space: bool) -> bytes:
    out = b""
    for lines, name, comment in events:
        if comment:
            out += b": ping" + newline
        if name is not None:
            out += b"event: " + name.encode() + newline
        for line in lines:
            # A line starting with a space keeps it only after the optional one is stripped.
            out += (
                (b"data: " if space or line.startswith(" ") else b"data:") + line.encode() + newline
            )
        out += newline
    return out


@given(
    events=st.lists(_event, max_size=8),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    space=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_split_yields_the_same_events(
    events: list[tuple[list[str], str | None, bool]], newline: bytes, space: bool, cuts: list[int]
) -> None:
    stream = _encode(events, newline, space)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]

    decoded = decode(*chunks)

    with_data = [e for e in decoded if e.data is not None]
    assert [e.data for e in with_data] == ["\n".join(lines).encode() for lines, _, _ in events]
    assert [e.event for e in with_data] == [
        None if name is None else name.encode() for _, name, _ in events
    ]
    assert b"".join(e.raw for e in decoded) == stream
    assert data_of(decode(stream)) == data_of(decoded)
