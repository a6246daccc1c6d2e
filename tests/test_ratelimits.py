"""Rate-limit knowledge: header parsing, 429 cooldowns, proactive skips, manual limits.

Every time here is a plain float on a fake clock, so each "blocked until" is exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr_trio.health.ratelimits import (
    ManualLimits,
    ModelLimits,
    WindowCounter,
    parse_reset,
    parse_retry_after,
)

DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE_EPOCH = 1445412480.0
WALL = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, WALL) == expected


def test_retry_after_http_date_is_relative_to_the_wall_clock() -> None:
    assert parse_retry_after(DATE, DATE_EPOCH - 90.0) == 90.0
    assert parse_retry_after(DATE, DATE_EPOCH + 5.0) == 0.0  # already past: go now


@pytest.fixture
def local_time_is_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "EST5")  # POSIX form: needs no zoneinfo database
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_is_not_utc")
def test_retry_after_http_date_without_zone_is_gmt() -> None:
    """``-0000`` parses to a naive datetime; it must not be read as local time."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", DATE_EPOCH - 90.0) == 90.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("1s", 1.0),
        ("1.5", 1.5),
        ("30", 30.0),
        (str(int(WALL) + 60), 60.0),  # epoch seconds
        (str(int(WALL) * 1000 + 60_000), 60.0),  # epoch milliseconds
        (str(int(WALL) - 60), 0.0),  # an epoch in the past
        ("6 m", None),
        ("6m0", None),
        ("m", None),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_reset(value: str | None, expected: float | None) -> None:
    assert parse_reset(value, WALL) == expected


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_parse_reset_sums_any_duration_up_to_a_day(h: int, m: int, s: int) -> None:
    assert parse_reset(f"{h}h{m}m{s}s", WALL) == min(h * 3600 + m * 60 + s, 86_400)


def test_no_header_shuts_a_provider_for_more_than_a_day() -> None:
    assert parse_retry_after("1e300", WALL) == 86_400
    assert parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", WALL) == 86_400
    assert parse_reset("9999h", WALL) == 86_400


@given(st.text(), st.floats(0, 4e9))
def test_header_parsers_never_raise_and_never_return_nonsense(text: str, wall: float) -> None:
    for parsed in (parse_reset(text, wall), parse_retry_after(text, wall)):
        assert parsed is None or 0.0 <= parsed < math.inf


HEADER_NAMES = [
    "retry-after",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
]
HEADER_VALUES = st.one_of(st.text(), st.sampled_from(["inf", "-inf", "nan", "1e400", "-3", "0"]))


@given(st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES))
def test_model_limits_take_any_headers(headers: dict[str, str]) -> None:
    """A provider's headers are untrusted input: ``inf`` once raised OverflowError here."""
    limits = ModelLimits()
    delay = limits.rate_limited(headers, 100.0, WALL, 30.0)
    assert 0.0 <= delay < math.inf
    assert limits.cooldown_until == 100.0 + delay


# -- ModelLimits: 429 cooldowns --------------------------------------------------------


def test_429_cooldown_from_retry_after() -> None:
    limits = ModelLimits()
    headers = {"retry-after": "7", "x-ratelimit-reset-requests": "6m0s"}
    assert limits.rate_limited(headers, 100.0, WALL, 30.0) == 7.0
    assert limits.blocked_until(106.5, 1) == 107.0
    assert limits.cooling_down(106.5)
    assert limits.blocked_until(107.0, 1) is None
    assert not limits.cooling_down(107.0)


def test_429_cooldown_from_retry_after_date() -> None:
    limits = ModelLimits()
    assert limits.rate_limited({"retry-after": DATE}, 100.0, DATE_EPOCH - 12.0, 30.0) == 12.0
    assert limits.cooldown_until == 112.0


def test_429_cooldown_from_the_longest_reset_header() -> None:
    limits = ModelLimits()
    headers = {"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "500ms"}
    assert limits.rate_limited(headers, 100.0, WALL, 30.0) == 2.0
    assert limits.cooldown_until == 102.0


def test_429_cooldown_default_when_nothing_says() -> None:
    limits = ModelLimits()
    assert limits.rate_limited({"retry-after": "garbage"}, 100.0, WALL, 30.0) == 30.0
    assert limits.cooldown_until == 130.0


def test_a_shorter_429_does_not_shorten_a_cooldown() -> None:
    limits = ModelLimits()
    limits.rate_limited({"retry-after": "100"}, 0.0, WALL, 30.0)
    limits.rate_limited({"retry-after": "1"}, 10.0, WALL, 30.0)
    assert limits.cooldown_until == 100.0


# -- ModelLimits: proactive remaining-* tracking ----------------------------------------


def test_no_requests_left_blocks_until_their_reset() -> None:
    limits = ModelLimits()
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
    limits.observe(headers, 50.0, WALL)
    assert limits.blocked_until(50.0, 1) == 51.0
    assert not limits.cooling_down(50.0)  # a proactive skip, not a 429 cooldown
    assert limits.blocked_until(51.0, 1) is None


def test_one_request_left_is_spent_by_sending() -> None:
    limits = ModelLimits()
    headers = {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "6m0s"}
    limits.observe(headers, 0.0, WALL)
    assert limits.blocked_until(0.0, 1) is None
    limits.sent(0.0, 1)
    assert limits.blocked_until(0.0, 1) == 360.0


def test_too_few_tokens_left_blocks_only_a_bigger_request() -> None:
    limits = ModelLimits()
    headers = {"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "20ms"}
    limits.observe(headers, 50.0, WALL)
    assert limits.blocked_until(50.0, 101) == 50.02
    assert limits.blocked_until(50.0, 100) is None
    assert limits.blocked_until(50.02, 101) is None


def test_remaining_without_reset_assumes_a_minute() -> None:
    limits = ModelLimits()
    limits.observe({"x-ratelimit-remaining-requests": "0"}, 5.0, WALL)
    assert limits.blocked_until(5.0, 1) == 65.0


# -- WindowCounter ---------------------------------------------------------------------


def test_window_counter_expires_whole_buckets() -> None:
    counter = WindowCounter(60.0)  # 60 buckets of 1 s
    counter.add(0.5, 3)
    counter.add(30.0, 2)
    assert counter.total(59.9) == 5
    assert counter.total(60.0) == 2
    assert counter.total(90.0) == 0


def test_window_counter_frees_at() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.5, 3)
    counter.add(30.0, 2)
    assert counter.frees_at(59.0, needed=1, limit=6) is None
    assert counter.frees_at(59.0, needed=3, limit=5) == 60.0
    assert counter.frees_at(59.0, needed=4, limit=5) == 90.0
    # More than the whole limit waits for an empty window, then goes alone.
    assert counter.frees_at(59.0, needed=6, limit=5) == 90.0
    assert counter.frees_at(90.0, needed=6, limit=5) is None


# -- ManualLimits ------------------------------------------------------------------------


def test_requests_per_minute() -> None:
    limits = ManualLimits(requests_per_minute=2)
    limits.acquire(0.0, 1)
    limits.acquire(10.0, 1)
    limits.release(11.0, 1, None, acquired_at=0.0)  # finishing does not refund the minute
    assert limits.blocked_until(20.0, 1) == 60.0
    assert limits.blocked_until(60.0, 1) is None


def test_requests_per_day() -> None:
    limits = ManualLimits(requests_per_day=2)  # 96 buckets of 900 s
    limits.acquire(100.0, 1)
    limits.acquire(1000.0, 1)
    assert limits.blocked_until(2000.0, 1) == 86_400.0
    assert limits.blocked_until(86_400.0, 1) is None


def test_tokens_per_minute() -> None:
    limits = ManualLimits(tokens_per_minute=1000)
    limits.acquire(0.0, 600)
    assert limits.blocked_until(1.0, 400) is None
    assert limits.blocked_until(1.0, 401) == 60.0


def test_max_concurrent_blocks_until_a_release() -> None:
    limits = ManualLimits(max_concurrent=1)
    limits.acquire(0.0, 1)
    assert limits.in_flight == 1
    assert limits.blocked_until(0.0, 1) == math.inf
    limits.release(1.0, 1, None, acquired_at=0.0)
    assert limits.in_flight == 0
    assert limits.blocked_until(1.0, 1) is None


def test_release_refunds_an_overestimate() -> None:
    limits = ManualLimits(tokens_per_minute=1000)
    limits.acquire(0.0, 900)
    limits.release(5.0, 900, 100, acquired_at=0.0)
    assert limits.blocked_until(6.0, 900) is None
    assert limits.blocked_until(6.0, 901) == 60.0


def test_release_charges_an_underestimate() -> None:
    limits = ManualLimits(tokens_per_minute=1000)
    limits.acquire(0.0, 100)
    limits.release(1.0, 100, 700, acquired_at=0.0)
    assert limits.blocked_until(2.0, 300) is None
    assert limits.blocked_until(2.0, 301) == 60.0


def test_a_refund_leaves_the_window_with_what_it_refunds() -> None:
    """The refund once went in the release's bucket, outliving the tokens it refunded by
    the request's duration: the window then held -800 and let 1800 tokens through."""
    limits = ManualLimits(tokens_per_minute=1000)
    limits.acquire(0.0, 900)
    limits.release(5.0, 900, 100, acquired_at=0.0)
    limits.acquire(61.0, 1000)
    assert limits.blocked_until(62.0, 1) == 121.0


def test_a_refund_after_the_window_passed_is_dropped() -> None:
    limits = ManualLimits(tokens_per_minute=1000)
    limits.acquire(0.0, 900)
    limits.release(70.0, 900, 100, acquired_at=0.0)
    limits.acquire(70.0, 1000)
    assert limits.blocked_until(71.0, 1) == 130.0
