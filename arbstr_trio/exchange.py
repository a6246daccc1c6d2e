"""One client request's identity and timeline, as the proxy sees it from arrival to end."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence

import attrs
import trio

from arbstr_trio.attempts import AttemptRecord

__all__ = ["Exchange", "request_id_from_headers"]

Header = tuple[bytes, bytes]

_MAX_CLIENT_ID_LENGTH = 128
_CLIENT_ID_HEADERS = (b"x-request-id", b"x-correlation-id")


@attrs.define
class Exchange:
    request_id: str
    client_headers: Sequence[Header] = attrs.field(repr=False)  # credentials among them
    started_at: float = attrs.field(factory=trio.current_time)
    started_wall: float = attrs.field(factory=time.time)
    """The same moment on the wall clock, for the request log."""
    idempotency_key: str = ""
    deadline: float = math.inf
    """Monotonic time by which a provider must have answered."""
    client_gone: bool = False
    """The client disconnected before the answer was complete."""
    attempts: list[AttemptRecord] = attrs.field(factory=list)
    """Every attempt made for this request, in order, as the engine records them."""
    client_key: str | None = None
    """The *name* of the client key the request was admitted with (None: no keys configured
    or a public endpoint); the key itself is never kept here."""

    def __attrs_post_init__(self) -> None:
        if not self.idempotency_key:
            self.idempotency_key = _client_idempotency_key(self.client_headers) or (
                f"arbstr-{self.request_id}"
            )

    def timeout_ms(self) -> int:
        """The request's whole allowance, from arrival to its deadline."""
        return round((self.deadline - self.started_at) * 1000)

    def wall_time(self, at: float) -> float:
        """``at`` on trio's clock, as a Unix time."""
        return self.started_wall + (at - self.started_at)

    def elapsed_ms(self) -> int:
        return round((trio.current_time() - self.started_at) * 1000)


def request_id_from_headers(headers: Sequence[Header]) -> str:
    """The client's own id (``x-request-id`` or ``x-correlation-id``) if usable, else a new one.

    Echoing the client's id lets it find our log lines and records under its own
    name; one that is too long or unprintable is replaced rather than trusted.
    """
    for name, value in headers:
        if name in _CLIENT_ID_HEADERS and 0 < len(value) <= _MAX_CLIENT_ID_LENGTH:
            text = value.decode("latin-1")
            if text.isascii() and text.isprintable():
                return text
    return uuid.uuid4().hex


def _client_idempotency_key(headers: Sequence[Header]) -> str | None:
    # A client's own key survives the client's retries: keep it rather than mint ours.
    for name, value in headers:
        if name == b"idempotency-key" and 0 < len(value) <= 256:
            text = value.decode("latin-1")
            if text.isascii() and text.isprintable():
                return text
    return None
