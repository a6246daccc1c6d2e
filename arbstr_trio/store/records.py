"""What the request log keeps of one client request and of each of its attempts.

A record is built once, when the request has ended whatever way it ended (answered,
refused, failed mid-stream, abandoned by its client), with its final values: a stream
is never inserted first and updated later. Times are Unix seconds; money is integer
millisatoshis, so the log and the ``x-arbstr-cost-sats`` header agree to the last msat.
"""

from __future__ import annotations

import attrs

__all__ = ["CLIENT_GONE_STATUS", "AttemptRow", "RequestRecord"]

CLIENT_GONE_STATUS = 499
"""The status recorded when the client left before its answer was complete (nginx's)."""


@attrs.frozen(kw_only=True)
class AttemptRow:
    provider: str
    started_at: float
    duration_ms: int | None
    outcome: str
    """``ok``, ``http_<status>``, ``connect_error``, ``timeout``, ``protocol_error``,
    ``internal_error``, ``hedge_lost`` or ``cancelled``."""
    status: int | None = None
    error: str | None = None
    hedge: bool = False


@attrs.frozen(kw_only=True)
class RequestRecord:
    request_id: str
    started_at: float
    finished_at: float
    model: str | None
    """The model the client asked for (None if its body could not be read)."""
    upstream_model: str | None = None
    provider: str | None = None
    """The provider that answered; None if none did."""
    tier: str | None = None
    policy: str | None = None
    streaming: bool = False
    status: int
    """The HTTP status the client got; 499 if it left first."""
    success: bool
    """A complete answer reached the client (a stream broken midway is not one)."""
    error_type: str | None = None
    """The error's ``code`` (``stream_truncated``, ``deadline_exceeded``...), if any."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_msat: int | None = None
    """None when the provider reported no usage: never a guess."""
    max_cost_msat: int | None = None
    """What the most expensive eligible candidate would have charged for the same tokens."""
    latency_ms: int
    """Arrival to the end of the answer (a stream's last byte)."""
    ttfb_ms: int | None = None
    """Arrival to the answering provider's response headers."""
    stream_ms: int | None = None
    """A stream's first byte to its last."""
    client_key: str | None = None
    """The name of the client's key, never the key."""
    budget_msat: int | None = None
    """What the request counted against its key's budget: its cost, or its whole
    reservation when the cost is unknown; None without a key or an answer."""
    attempts: tuple[AttemptRow, ...] = ()

    @property
    def usage_missing(self) -> bool:
        return self.provider is not None and self.cost_msat is None
