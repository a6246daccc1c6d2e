"""What the live feed says, field by field: the one place its event shapes are written.

Every event is a JSON object ``{"type": ..., "ts": <Unix seconds>, ...}``; the types
and their fields are the contract the dashboard and ``arbstr-trio tail`` read (see the
README's ``/v1/live``). Building them is pure, so the shapes are tested without a
socket; :class:`~arbstr_trio.live.hub.LiveHub` adds ``type`` and ``ts``.
"""

from __future__ import annotations

from typing import Any

from arbstr_trio.attempts import AttemptRecord
from arbstr_trio.pricing import format_sats
from arbstr_trio.store.records import RequestRecord

__all__ = ["NOT_FAILURES", "attempt_failed_fields", "request_fields"]

NOT_FAILURES = frozenset({"ok", "pending", "hedge_lost", "cancelled"})
"""Attempt outcomes that are no failure, as ``x-arbstr-retries`` counts them
(:attr:`arbstr_trio.attempts.AttemptRecord.failed`)."""


def request_fields(record: RequestRecord) -> dict[str, Any]:
    """A ``request`` event from the record the request log writes, so the two agree.

    ``client_key`` is the key's name (the record never holds the key); ``cost_sats`` is
    the ``x-arbstr-cost-sats`` text, exact, or None when the provider reported no usage.
    """
    return {
        "id": record.request_id,
        "model": record.model,
        "upstream_model": record.upstream_model,
        "provider": record.provider,
        "status": record.status,
        "success": record.success,
        "streaming": record.streaming,
        "error_type": record.error_type,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_msat": record.cost_msat,
        "cost_sats": None if record.cost_msat is None else format_sats(record.cost_msat),
        "latency_ms": record.latency_ms,
        "ttfb_ms": record.ttfb_ms,
        "policy": record.policy,
        "client_key": record.client_key,
        "attempts": len(record.attempts),
        "retries": sum(attempt.outcome not in NOT_FAILURES for attempt in record.attempts),
    }


def attempt_failed_fields(request_id: str, model: str, attempt: AttemptRecord) -> dict[str, Any]:
    """An ``attempt_failed`` event: ``model`` as the provider was asked for it (its
    upstream name, the one its cooldowns are kept under)."""
    return {
        "request_id": request_id,
        "provider": attempt.provider,
        "model": model,
        "status": attempt.status,
        "error": attempt.error,
        "outcome": attempt.outcome,
        "hedge": attempt.hedge,
    }
