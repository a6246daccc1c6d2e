"""When to try again: which failures are worth another attempt, how long to wait, and
how many retries the process can afford at once.

Pure functions and counters; the engine supplies the clock and the randomness.
"""

from __future__ import annotations

import enum
import random

import attrs

__all__ = ["Failure", "RetryBudget", "backoff_s", "classify_status"]


class Failure(enum.Enum):
    """What an attempt's failure means for what happens next."""

    RETRY = "retry"
    """The provider stumbled (5xx, 408, reset, timeout): the same provider may be retried."""
    NEXT_PROVIDER = "next_provider"
    """This provider cannot serve it now (429, refused key): move on, do not retry it."""
    CLIENT = "client"
    """The request itself is wrong (other 4xx): no provider will do better; answer now."""
    OURS = "ours"
    """A bug in the proxy: no provider is to blame and none would do better; answer now."""


def classify_status(status: int) -> Failure:
    if status == 429 or status in (401, 403, 407):
        return Failure.NEXT_PROVIDER
    if status in (408, 500, 502, 503, 504) or status >= 500:
        return Failure.RETRY
    if 400 <= status < 500:
        return Failure.CLIENT
    return Failure.RETRY  # 1xx/3xx where an answer was expected: the provider misbehaved


def backoff_s(retry: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter before the ``retry``-th retry (1 = the first).

    Full jitter (a uniform draw up to the exponential cap) spreads the retries of many
    requests that failed together, rather than sending them back in one wave.
    """
    # 2.0**1024 overflows; every cap is reached long before.
    cap = min(max_s, base_s * 2.0 ** min(retry - 1, 1023))
    return rng.uniform(0.0, cap)


@attrs.define
class RetryBudget:
    """Envoy's retry budget: retries in flight at most ``percent`` of active requests.

    It bounds what retries can add to a provider that is already failing: when many
    requests fail at once, most of them give up instead of multiplying the load.
    ``min_concurrency`` retries are always allowed, so a quiet proxy still retries.
    A retry here is a further attempt on the *same* provider; moving on to another
    provider is a first attempt there and is not counted.
    """

    percent: float
    min_concurrency: int
    active_requests: int = 0
    active_retries: int = 0

    def allows_retry(self) -> bool:
        limit = max(self.min_concurrency, int(self.active_requests * self.percent / 100))
        return self.active_retries < limit
