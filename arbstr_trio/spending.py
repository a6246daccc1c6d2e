"""Budgets in the running proxy: one request's hold, and the spend remembered on start.

The arithmetic is :mod:`arbstr_trio.budget`'s; this module connects it to the rest:
which limits a key has (read from the config in force, so a reload applies to the next
request), what a request may cost at worst, how a request's end settles its hold, and
how the request log restores what was spent before a restart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs

from arbstr_trio.budget import Budgets, Hold, Limits, Period, Refusal, sats_to_msat
from arbstr_trio.chat_request import ChatRequest
from arbstr_trio.config.models import Config
from arbstr_trio.errors import BudgetExceeded
from arbstr_trio.pricing import Usage, cost_msat
from arbstr_trio.recording import RequestTrail
from arbstr_trio.routing import Candidate
from arbstr_trio.store.reader import RequestLog

__all__ = ["BudgetHold", "bounded_for_budget", "limits_for", "load_budgets", "reserve_budget"]


async def load_budgets(request_log: RequestLog, now: float) -> Budgets:
    """Budgets seeded with each key's logged spend in the current UTC day and month."""
    budgets = Budgets()
    for period in Period:
        start = period.bounds(now)[0]
        budgets.load(period, start, await request_log.spent_since(start))
    return budgets


def limits_for(config: Config, key_name: str) -> Limits:
    for client in config.keys:
        if client.name == key_name:
            return Limits(
                per_day_msat=None
                if client.max_sats_per_day is None
                else sats_to_msat(client.max_sats_per_day),
                per_month_msat=None
                if client.max_sats_per_month is None
                else sats_to_msat(client.max_sats_per_month),
            )
    return Limits()  # a key removed since the request was admitted: nothing to enforce


@attrs.define
class BudgetHold:
    """One request's reservation, ended exactly once by :meth:`end`."""

    budgets: Budgets
    hold: Hold | None

    def end(self, trail: RequestTrail) -> None:
        """Settle by how the request ended: no answer releases the hold; an answer
        settles at its cost, or, with the cost unknown (no usage reported, or the
        client left mid-answer), keeps the whole hold as spent."""
        hold, self.hold = self.hold, None
        if hold is None:
            return
        if trail.answered_by is None:
            self.budgets.release(hold)
        else:
            trail.budget_msat = self.budgets.settle(hold, trail.cost_msat)


def bounded_for_budget(config: Config, key_name: str | None, request: ChatRequest) -> ChatRequest:
    """``request`` as it must go upstream for its key's budget to hold.

    A key with a limit cannot let an answer of unbounded length through: where the
    client set no ``max_tokens``, ``[routing] budget_completion_tokens`` is set for it.
    """
    if key_name is None or not limits_for(config, key_name).bounded:
        return request
    return request.capped(config.routing.budget_completion_tokens)


def reserve_budget(
    budgets: Budgets,
    config: Config,
    key_name: str | None,
    request: ChatRequest,
    candidates: Sequence[Candidate],
) -> BudgetHold:
    """Hold the request's worst case against its key, or raise :class:`BudgetExceeded`.

    The worst case is the most the dearest candidate can charge, not the first's
    estimate: fallback may land on any of them, the prompt is counted at its bound
    (:func:`arbstr_trio.tokens.prompt_token_bound`), and the completion at its limit
    (the client's, or :func:`bounded_for_budget`'s). Synchronous on purpose: nothing can
    run between the check and the hold.
    """
    if key_name is None or not candidates:
        return BudgetHold(budgets, None)
    completion = request.max_completion_tokens or config.routing.default_completion_tokens
    most = Usage(request.prompt_token_bound, completion * request.choices)
    worst = max(cost_msat(candidate.rates, most) for candidate in candidates)
    now = time.time()  # the request log's clock, so a restart sums the same periods
    reserved = budgets.reserve(key_name, limits_for(config, key_name), worst, now)
    if isinstance(reserved, Refusal):
        raise BudgetExceeded(
            reserved.message(),
            headers=[(b"retry-after", str(reserved.retry_after_s(now)).encode())],
        )
    return BudgetHold(budgets, reserved)
