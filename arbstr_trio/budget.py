"""Spending budgets per client key: the arithmetic, with no clock and no I/O of its own.

A key may have a daily and a monthly limit (UTC calendar days and months). Before a
request is sent, its *worst-case* cost is held against every period of its key; when it
ends, the hold becomes what it actually cost (or, if that is unknown, stays spent), or
disappears if it got no answer. Because a hold is taken in the same synchronous step as
the check, two requests can never both fit into the last bit of a budget: concurrency
cannot overspend, only be refused.

Spend is tracked for every named key, limits or not, so a limit added while running
(admin API, reload) starts from the true spend. Each period's tally remembers the
period it belongs to; the first use after midnight (or the 1st) starts a fresh one, and a
hold taken in a period that has since ended is settled into nothing, which is what the
request log's ``started_at`` sums will say after a restart, too.

All amounts are integer millisatoshis; times are Unix seconds passed in by the caller.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal

import attrs

from arbstr_trio.pricing import format_sats

__all__ = ["Budgets", "Hold", "Limits", "Period", "Refusal", "sats_to_msat"]

_UTC = dt.UTC


class Period(enum.Enum):
    DAY = "day"
    MONTH = "month"

    @property
    def adjective(self) -> str:
        return "daily" if self is Period.DAY else "monthly"

    def bounds(self, now: float) -> tuple[float, float]:
        """The (start, end) of the UTC calendar day or month holding ``now``."""
        moment = dt.datetime.fromtimestamp(now, _UTC)
        if self is Period.DAY:
            start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
            end = start + dt.timedelta(days=1)
        else:
            start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = (start + dt.timedelta(days=32)).replace(day=1)
        return start.timestamp(), end.timestamp()


def sats_to_msat(sats: Decimal) -> int:
    """A configured limit in whole msat, rounded down: a budget is never exceeded by rounding."""
    return int((sats * 1000).to_integral_value(rounding=ROUND_FLOOR))


@attrs.frozen(kw_only=True)
class Limits:
    """A key's limits in msat; None: no limit for that period."""

    per_day_msat: int | None = None
    per_month_msat: int | None = None

    @property
    def bounded(self) -> bool:
        """Whether any period has a limit: only then must a request's cost be bounded."""
        return self.per_day_msat is not None or self.per_month_msat is not None

    def for_period(self, period: Period) -> int | None:
        return self.per_day_msat if period is Period.DAY else self.per_month_msat


@attrs.frozen(kw_only=True)
class Hold:
    """A reservation: ``amount_msat`` held against ``key`` in the periods starting at ``starts``."""

    key: str
    amount_msat: int
    starts: tuple[tuple[Period, float], ...]


@attrs.frozen(kw_only=True)
class Refusal:
    """Why a reservation did not fit: the period whose limit it would pass."""

    key: str
    period: Period
    limit_msat: int
    left_msat: int
    """What is left of the limit (never below 0), holds in flight deducted."""
    needed_msat: int
    resets_at: float

    def retry_after_s(self, now: float) -> int:
        """Whole seconds until the period resets, at least 1 (a Retry-After value)."""
        return max(1, math.ceil(self.resets_at - now))

    def resets_at_iso(self) -> str:
        moment = dt.datetime.fromtimestamp(self.resets_at, _UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def message(self) -> str:
        return (
            f"key {self.key!r} has {format_sats(self.left_msat)} sats left of its "
            f"{format_sats(self.limit_msat)} sats {self.period.adjective} budget, and this "
            f"request may cost up to {format_sats(self.needed_msat)} sats; the budget resets "
            f"at {self.resets_at_iso()}"
        )


@attrs.define
class _Tally:
    start: float
    spent_msat: int = 0
    held_msat: int = 0


@attrs.define
class Budgets:
    """Spent and held msat per (key name, period); see the module docstring."""

    _tallies: dict[tuple[str, Period], _Tally] = attrs.field(factory=dict)

    def load(self, period: Period, start: float, spent: Mapping[str, int]) -> None:
        """Seed each key's spend in the period starting at ``start`` (from the request log)."""
        for key, msat in spent.items():
            self._tallies[(key, period)] = _Tally(start, spent_msat=msat)

    def reserve(self, key: str, limits: Limits, amount_msat: int, now: float) -> Hold | Refusal:
        """Hold ``amount_msat`` against every period of ``key``, or say which limit forbids it.

        Check and hold happen in this one call, with nothing in between that could let
        another request in: the caller must not await between deciding and holding.
        When several limits refuse, the one that resets last is reported, since
        retrying before then is pointless.
        """
        tallies = [(period, self._current(key, period, now)) for period in Period]
        refusals = []
        for period, tally in tallies:
            limit = limits.for_period(period)
            if limit is None:
                continue
            left = limit - tally.spent_msat - tally.held_msat
            if amount_msat > left:
                refusals.append(
                    Refusal(
                        key=key,
                        period=period,
                        limit_msat=limit,
                        left_msat=max(0, left),
                        needed_msat=amount_msat,
                        resets_at=period.bounds(now)[1],
                    )
                )
        if refusals:
            return max(refusals, key=lambda refusal: refusal.resets_at)
        for _period, tally in tallies:
            tally.held_msat += amount_msat
        return Hold(
            key=key,
            amount_msat=amount_msat,
            starts=tuple((period, tally.start) for period, tally in tallies),
        )

    def settle(self, hold: Hold, actual_msat: int | None) -> int:
        """Replace the hold by what the request cost; an unknown cost keeps the hold spent.

        (A provider that reported no usage still charged for something, and the hold
        is the most it could have been: counting it keeps the budget a real bound.)
        Returns what was counted as spent, for the request log to remember.
        """
        spent = hold.amount_msat if actual_msat is None else actual_msat
        for tally in self._tallies_of(hold):
            tally.held_msat -= hold.amount_msat
            tally.spent_msat += spent
        return spent

    def release(self, hold: Hold) -> None:
        """The request got no answer: nothing was spent, the whole hold is given back."""
        for tally in self._tallies_of(hold):
            tally.held_msat -= hold.amount_msat

    def spent_msat(self, key: str, period: Period, now: float) -> int:
        """Settled spend of ``key`` in the current ``period`` (holds not included)."""
        return self._current(key, period, now).spent_msat

    def held_msat(self, key: str, period: Period, now: float) -> int:
        """Held for requests of ``key`` still in flight in the current ``period``."""
        return self._current(key, period, now).held_msat

    def _current(self, key: str, period: Period, now: float) -> _Tally:
        start = period.bounds(now)[0]
        tally = self._tallies.get((key, period))
        if tally is None or tally.start != start:
            tally = self._tallies[(key, period)] = _Tally(start)
        return tally

    def _tallies_of(self, hold: Hold) -> list[_Tally]:
        """The tallies the hold went into that are still current; an ended period's
        tally has been replaced, and what was held there no longer matters."""
        tallies = []
        for period, start in hold.starts:
            tally = self._tallies.get((hold.key, period))
            if tally is not None and tally.start == start:
                tallies.append(tally)
        return tallies
