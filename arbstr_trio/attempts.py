"""What one attempt on one provider did: the line each attempt adds to a request's story.

The engine writes these as attempts start and end; the response headers
(``x-arbstr-retries``, ``x-arbstr-attempts``), error details, and the request log read
them. Times are on trio's clock, like the rest of a request's timeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["UNSETTLED", "AttemptRecord", "attempts_header", "retries_header"]

UNSETTLED = "pending"
_NOT_FAILURES = frozenset({"ok", UNSETTLED, "hedge_lost", "cancelled"})


@attrs.define
class AttemptRecord:
    provider: str
    started_at: float
    hedge: bool = False
    outcome: str = UNSETTLED
    """``ok``, ``http_<status>``, ``connect_error``, ``timeout``, ``protocol_error``,
    ``internal_error``, ``hedge_lost`` or ``cancelled``."""
    status: int | None = None
    ended_at: float | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.outcome not in _NOT_FAILURES

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "outcome": self.outcome,
            "status": self.status,
            "hedge": self.hedge,
            "duration_ms": None
            if self.ended_at is None
            else round((self.ended_at - self.started_at) * 1000),
        }


def retries_header(records: Sequence[AttemptRecord]) -> str | None:
    """``"2/alpha, 1/beta"``: failed attempts per provider, in the order they were tried."""
    failed = Counter(record.provider for record in records if record.failed)
    if not failed:
        return None
    return ", ".join(f"{count}/{provider}" for provider, count in failed.items())


def attempts_header(records: Sequence[AttemptRecord]) -> str | None:
    """``"alpha:http_503, beta:ok"``: every attempt, hedges and losers included."""
    if len(records) < 2:
        return None
    return ", ".join(f"{record.provider}:{record.outcome}" for record in records)
