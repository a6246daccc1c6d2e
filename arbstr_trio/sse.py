"""An incremental Server-Sent Events decoder that keeps every byte it was given.

Providers split a stream wherever their network stack likes, end lines with LF, CRLF
or a bare CR, write ``data:`` with or without the space, and send comments as
keep-alives. The decoder follows the WHATWG event-stream rules for all of it, and
returns each event together with the exact bytes it came from (``raw``), so the relay
can pass an event on untouched, and only re-encode the few it has to change.
Concatenating ``raw`` of every event returned, in order, gives back the input.
"""

from __future__ import annotations

__all__ = ["SSEDecoder", "SSEEvent"]

_LF = 0x0A
_COLON = 0x3A


class SSEEvent:
    """One dispatched event. ``data`` is ``None`` for a block with no data field
    (a comment or keep-alive), which a relay forwards as ``raw`` and otherwise ignores."""

    __slots__ = ("data", "event", "raw")

    def __init__(self, data: bytes | None, event: bytes | None, raw: bytes) -> None:
        self.data = data
        self.event = event
        self.raw = raw

    def __repr__(self) -> str:
        return f"SSEEvent(data={self.data!r}, event={self.event!r}, raw={self.raw!r})"


class SSEDecoder:
    """Feed it byte chunks as they arrive; it returns the events each chunk completed."""

    __slots__ = ("_data", "_event", "_pending", "_raw", "_skip_lf")

    def __init__(self) -> None:
        self._pending = b""  # an incomplete line, carried to the next feed
        self._raw: list[bytes] = []  # complete lines of the unfinished event
        self._data: list[bytes] | None = None
        self._event: bytes | None = None
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes that CRLF

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == _LF:
                self._raw.append(b"\n")
                chunk = chunk[1:]
        buffer = self._pending + chunk if self._pending else chunk
        self._pending = b""
        events: list[SSEEvent] = []
        size = len(buffer)
        has_cr = b"\r" in buffer
        position = 0
        event_start = 0
        while position < size:
            end = buffer.find(b"\n", position)
            terminator = 1
            if has_cr:
                cr = buffer.find(b"\r", position)
                if cr != -1 and (end == -1 or cr < end):
                    if cr + 1 < size:
                        terminator = 2 if buffer[cr + 1] == _LF else 1
                    else:
                        self._skip_lf = True
                    end = cr
            if end == -1:
                break
            line_end = end + terminator
            if end == position:
                raw = buffer[event_start:line_end]
                if self._raw:
                    self._raw.append(raw)
                    raw = b"".join(self._raw)
                    self._raw.clear()
                events.append(self._dispatch(raw))
                event_start = line_end
            else:
                self._field(buffer[position:end])
            position = line_end
        if event_start < position:
            self._raw.append(buffer[event_start:position])
        if position < size:
            self._pending = buffer[position:]
        return events

    def flush(self) -> list[SSEEvent]:
        """At end of stream: dispatch what is left, even without its closing blank line.

        The standard discards an unterminated event, but a provider that closes right
        after ``data: [DONE]\\n`` means it, so a complete data line is honoured.
        """
        if self._pending:
            self._field(self._pending)
            self._raw.append(self._pending)
            self._pending = b""
        if not self._raw:
            return []
        raw = b"".join(self._raw)
        self._raw.clear()
        return [self._dispatch(raw)]

    def _field(self, line: bytes) -> None:
        if line[0] == _COLON:
            return  # a comment
        colon = line.find(b":")
        if colon == -1:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif name == b"event":
            self._event = value
        # id, retry and unknown fields change nothing a relay needs to know.

    def _dispatch(self, raw: bytes) -> SSEEvent:
        data = self._data
        event = SSEEvent(
            None if data is None else data[0] if len(data) == 1 else b"\n".join(data),
            self._event,
            raw,
        )
        self._data = None
        self._event = None
        return event
