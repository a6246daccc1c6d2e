"""Budget arithmetic: holds, settling, releasing and UTC rollover, with the clock passed in."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from arbstr_trio.budget import Budgets, Hold, Limits, Period, Refusal, sats_to_msat
from arbstr_trio.config.load import ConfigError
from arbstr_trio.spending import limits_for
from tests.conftest import config_from


def at(text: str) -> float:
    """A UTC time written as ``2026-03-31T23:59:59``, as Unix seconds."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


NOON = at("2026-03-15T12:00:00")
DAILY_10 = Limits(per_day_msat=10_000)


def hold(budgets: Budgets, amount: int, now: float = NOON, limits: Limits = DAILY_10) -> Hold:
    reserved = budgets.reserve("team", limits, amount, now)
    assert isinstance(reserved, Hold), reserved
    return reserved


def refusal(budgets: Budgets, amount: int, now: float = NOON, limits: Limits = DAILY_10) -> Refusal:
    reserved = budgets.reserve("team", limits, amount, now)
    assert isinstance(reserved, Refusal), reserved
    return reserved


def test_holds_fill_the_budget_to_the_last_msat_and_no_further() -> None:
    budgets = Budgets()
    hold(budgets, 4_000)
    hold(budgets, 6_000)
    refused = refusal(budgets, 1)
    assert (refused.left_msat, refused.needed_msat, refused.limit_msat) == (0, 1, 10_000)
    assert budgets.held_msat("team", Period.DAY, NOON) == 10_000
    assert budgets.spent_msat("team", Period.DAY, NOON) == 0


def test_settling_replaces_the_hold_by_the_actual_cost() -> None:
    budgets = Budgets()
    first = hold(budgets, 6_000)
    refusal(budgets, 4_001)
    budgets.settle(first, 1_234)
    assert budgets.spent_msat("team", Period.DAY, NOON) == 1_234
    assert budgets.held_msat("team", Period.DAY, NOON) == 0
    hold(budgets, 8_766)  # exactly what is left
    refused = refusal(budgets, 1)
    assert refused.left_msat == 0


def test_an_unknown_cost_keeps_the_whole_hold_spent() -> None:
    budgets = Budgets()
    budgets.settle(hold(budgets, 6_000), None)
    assert budgets.spent_msat("team", Period.DAY, NOON) == 6_000
    assert refusal(budgets, 4_001).left_msat == 4_000


def test_release_gives_everything_back() -> None:
    budgets = Budgets()
    budgets.release(hold(budgets, 10_000))
    assert budgets.held_msat("team", Period.DAY, NOON) == 0
    assert budgets.spent_msat("team", Period.DAY, NOON) == 0
    hold(budgets, 10_000)


def test_keys_have_separate_budgets() -> None:
    budgets = Budgets()
    hold(budgets, 10_000)
    assert isinstance(budgets.reserve("other", DAILY_10, 10_000, NOON), Hold)


def test_a_key_without_limits_is_tracked_but_never_refused() -> None:
    budgets = Budgets()
    budgets.settle(hold(budgets, 10**12, limits=Limits()), 10**12)
    assert budgets.spent_msat("team", Period.MONTH, NOON) == 10**12
    # A limit set later (a reload) starts from the true spend.
    assert refusal(budgets, 1, limits=Limits(per_month_msat=10**12)).left_msat == 0


def test_a_new_utc_day_starts_a_fresh_daily_budget() -> None:
    budgets = Budgets()
    before = at("2026-03-15T23:59:59.999")
    budgets.settle(hold(budgets, 10_000, before), 10_000)
    refused = refusal(budgets, 1, before)
    assert refused.period is Period.DAY
    assert refused.resets_at == at("2026-03-16T00:00:00")
    assert refused.resets_at_iso() == "2026-03-16T00:00:00Z"
    assert refused.retry_after_s(before) == 1
    hold(budgets, 10_000, at("2026-03-16T00:00:00"))


def test_a_hold_from_a_day_that_ended_settles_into_nothing() -> None:
    budgets = Budgets()
    late = hold(budgets, 7_000, at("2026-03-15T23:59:59"))
    midnight = at("2026-03-16T00:00:01")
    hold(budgets, 10_000, midnight)  # yesterday's hold does not count today
    budgets.settle(late, 7_000)  # nor does its cost (the log files it under yesterday)
    assert budgets.spent_msat("team", Period.DAY, midnight) == 0
    assert budgets.held_msat("team", Period.DAY, midnight) == 10_000


def test_the_monthly_budget_rolls_over_on_the_first_and_outlasts_days() -> None:
    budgets = Budgets()
    monthly = Limits(per_day_msat=5_000, per_month_msat=8_000)
    budgets.settle(hold(budgets, 5_000, at("2026-02-27T10:00:00"), monthly), 5_000)
    next_day = at("2026-02-28T10:00:00")
    refused = refusal(budgets, 3_001, next_day, monthly)
    assert refused.period is Period.MONTH  # the day has room; the month does not
    assert refused.left_msat == 3_000
    assert refused.resets_at_iso() == "2026-03-01T00:00:00Z"
    assert refused.retry_after_s(next_day) == 14 * 3600
    hold(budgets, 5_000, at("2026-03-01T00:00:00"), monthly)


def test_when_both_limits_refuse_the_later_reset_is_reported() -> None:
    budgets = Budgets()
    limits = Limits(per_day_msat=1_000, per_month_msat=1_000)
    refused = refusal(budgets, 1_001, at("2026-12-30T08:00:00"), limits)
    assert refused.period is Period.MONTH
    assert refused.resets_at_iso() == "2027-01-01T00:00:00Z"  # December rolls into a new year


def test_loaded_spend_counts_only_in_its_own_period() -> None:
    budgets = Budgets()
    day_start, _ = Period.DAY.bounds(NOON)
    month_start, _ = Period.MONTH.bounds(NOON)
    budgets.load(Period.DAY, day_start, {"team": 9_000})
    budgets.load(Period.MONTH, month_start, {"team": 9_500})
    assert refusal(budgets, 1_001).left_msat == 1_000
    tomorrow = at("2026-03-16T12:00:00")
    assert budgets.spent_msat("team", Period.DAY, tomorrow) == 0
    assert budgets.spent_msat("team", Period.MONTH, tomorrow) == 9_500


def test_the_refusal_message_says_what_is_left_and_when_it_resets() -> None:
    budgets = Budgets()
    budgets.settle(hold(budgets, 9_000), 8_766)
    assert refusal(budgets, 1_500).message() == (
        "key 'team' has 1.234 sats left of its 10.000 sats daily budget, and this request "
        "may cost up to 1.500 sats; the budget resets at 2026-03-16T00:00:00Z"
    )


def test_configured_sats_become_msat_rounded_down() -> None:
    assert sats_to_msat(Decimal("42")) == 42_000
    assert sats_to_msat(Decimal("0.0015")) == 1
    assert sats_to_msat(Decimal("12.3456")) == 12_345
    assert sats_to_msat(Decimal(0)) == 0


def test_limits_are_read_per_key_in_sats_and_checked() -> None:
    text = """
[[keys]]
name = "team"
key = "team-0123456789abcdef"
max_sats_per_day = 12.3456
max_sats_per_month = 1000

[[keys]]
name = "open"
key = "open-0123456789abcdef"
"""
    config = config_from(text)
    assert limits_for(config, "team") == Limits(per_day_msat=12_345, per_month_msat=1_000_000)
    assert limits_for(config, "open") == Limits()
    with pytest.raises(ConfigError) as caught:
        config_from(text.replace("1000", "-1"))
    assert caught.value.problems == ["$.keys[0].max_sats_per_month: must be >= 0"]
