"""Retry policy: which statuses are retried where, backoff growth and cap, the budget."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr_trio.retry import Failure, RetryBudget, backoff_s, classify_status


class TopRandom(random.Random):
    """Full jitter at its ceiling: ``uniform`` returns the upper bound, so the cap shows."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, Failure.RETRY),
        (500, Failure.RETRY),
        (502, Failure.RETRY),
        (503, Failure.RETRY),
        (504, Failure.RETRY),
        (599, Failure.RETRY),
        (429, Failure.NEXT_PROVIDER),
        (401, Failure.NEXT_PROVIDER),
        (403, Failure.NEXT_PROVIDER),
        (407, Failure.NEXT_PROVIDER),
        (400, Failure.CLIENT),
        (404, Failure.CLIENT),
        (413, Failure.CLIENT),
        (422, Failure.CLIENT),
        (302, Failure.RETRY),  # not an answer a chat completion should get
    ],
)
def test_classify_status(status: int, expected: Failure) -> None:
    assert classify_status(status) is expected


def test_backoff_doubles_up_to_the_cap() -> None:
    rng = TopRandom()
    assert [backoff_s(retry, 0.1, 2.0, rng) for retry in range(1, 8)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        2.0,
        2.0,
    ]


def test_backoff_is_full_jitter_from_zero() -> None:
    calls: list[tuple[float, float]] = []

    class Recording(random.Random):
        def uniform(self, a: float, b: float) -> float:
            calls.append((a, b))
            return a

    assert backoff_s(3, 0.1, 2.0, Recording()) == 0.0
    assert calls == [(0.0, 0.4)]


def test_backoff_of_a_huge_retry_is_the_cap() -> None:
    """``2 ** 1100`` cannot become a float: this once raised OverflowError."""
    assert backoff_s(1100, 0.1, 2.0, TopRandom()) == 2.0
    assert backoff_s(1100, 0.0, 2.0, TopRandom()) == 0.0  # no backoff configured: none


@given(
    st.integers(1, 5000),
    st.floats(0, 10),
    st.floats(0, 60),
    st.integers(0, 2**32),
)
def test_backoff_stays_within_its_cap(retry: int, base: float, top: float, seed: int) -> None:
    delay = backoff_s(retry, base, top, random.Random(seed))
    assert 0.0 <= delay <= top
    if retry <= 64:
        assert delay <= base * 2 ** (retry - 1)


def test_budget_floor_allows_min_concurrency_retries_when_quiet() -> None:
    budget = RetryBudget(percent=20.0, min_concurrency=3, active_requests=1)
    allowed = []
    for retries in range(5):
        budget.active_retries = retries
        allowed.append(budget.allows_retry())
    assert allowed == [True, True, True, False, False]


def test_budget_is_a_percentage_of_active_requests() -> None:
    budget = RetryBudget(percent=20.0, min_concurrency=3, active_requests=100)
    budget.active_retries = 19
    assert budget.allows_retry()
    budget.active_retries = 20
    assert not budget.allows_retry()
    budget.active_requests = 14  # 20% is 2.8: the floor of 3 wins
    budget.active_retries = 2
    assert budget.allows_retry()
    budget.active_retries = 3
    assert not budget.allows_retry()


def test_budget_of_zero_allows_no_retries() -> None:
    assert not RetryBudget(percent=0.0, min_concurrency=0, active_requests=50).allows_retry()
