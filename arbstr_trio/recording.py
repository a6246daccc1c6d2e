"""Gathering what one chat request came to, as it happens, into its one record.

The handler fills a :class:`RequestTrail` as the request goes (the parsed request, its
candidates, the answer chosen, how the relay ended, or the error it got) and turns it
into a :class:`~arbstr_trio.store.records.RequestRecord` exactly once, at the end,
whatever the end was. No I/O here: the handler hands the record to the writer.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio

from arbstr_trio.attempts import AttemptRecord
from arbstr_trio.chat_request import ChatRequest
from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import Usage, cost_msat
from arbstr_trio.routing import Candidate
from arbstr_trio.store.records import CLIENT_GONE_STATUS, AttemptRow, RequestRecord

__all__ = ["RequestTrail"]


@attrs.define
class RequestTrail:
    exchange: Exchange
    request: ChatRequest | None = None
    candidates: Sequence[Candidate] = ()
    answered_by: Candidate | None = None
    headers_at: float | None = None
    """When the answering provider's response headers arrived (trio's clock)."""
    usage: Usage | None = None
    cost_msat: int | None = None
    status: int | None = None
    success: bool = False
    error_type: str | None = None
    policy: str | None = None
    """The policy the request ran under, else the chain it asked for."""
    budget_msat: int | None = None
    """What the request counted against its key's budget, once settled."""

    def answered(self, candidate: Candidate, headers_at: float) -> None:
        self.answered_by = candidate
        self.headers_at = headers_at
        self.status = 200

    def relayed(self, *, usage: Usage | None, cost: int | None, error: str | None) -> None:
        """How the relay ended: whole (``error`` None) or broken after it began."""
        self.usage = usage
        self.cost_msat = cost
        self.success = error is None
        self.error_type = error

    def failed(self, status: int, code: str | None) -> None:
        """The request ended in an error response (or, after a stream began, an event)."""
        if self.status is None:
            self.status = status
        self.success = False
        self.error_type = code

    def client_left(self) -> None:
        self.status = CLIENT_GONE_STATUS
        self.success = False
        self.error_type = "client_disconnected"

    def record(self) -> RequestRecord:
        """The record, as of now (the end of the request)."""
        exchange = self.exchange
        now = trio.current_time()
        answered = self.answered_by
        streaming = self.request is not None and self.request.stream
        return RequestRecord(
            request_id=exchange.request_id,
            started_at=exchange.started_wall,
            finished_at=exchange.wall_time(now),
            model=None if self.request is None else self.request.model,
            upstream_model=None if answered is None else answered.upstream_model,
            provider=None if answered is None else answered.name,
            tier=None if answered is None else answered.provider.tier.value,
            policy=self.policy,
            streaming=streaming,
            status=500 if self.status is None else self.status,
            success=self.success,
            error_type=self.error_type,
            prompt_tokens=None if self.usage is None else self.usage.prompt_tokens,
            completion_tokens=None if self.usage is None else self.usage.completion_tokens,
            cost_msat=self.cost_msat,
            max_cost_msat=self._dearest_cost(),
            latency_ms=_ms(now - exchange.started_at),
            ttfb_ms=None if self.headers_at is None else _ms(self.headers_at - exchange.started_at),
            stream_ms=_ms(now - self.headers_at)
            if streaming and self.headers_at is not None
            else None,
            attempts=tuple(_row(exchange, attempt) for attempt in exchange.attempts),
            client_key=exchange.client_key,
            budget_msat=self.budget_msat,
        )

    def _dearest_cost(self) -> int | None:
        """What the priciest eligible candidate would have charged for the same tokens."""
        if self.usage is None or not self.candidates:
            return None
        usage = self.usage
        return max(cost_msat(candidate.rates, usage) for candidate in self.candidates)


def _row(exchange: Exchange, attempt: AttemptRecord) -> AttemptRow:
    return AttemptRow(
        provider=attempt.provider,
        started_at=exchange.wall_time(attempt.started_at),
        duration_ms=None
        if attempt.ended_at is None
        else _ms(attempt.ended_at - attempt.started_at),
        outcome=attempt.outcome,
        status=attempt.status,
        error=attempt.error,
        hedge=attempt.hedge,
    )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
