"""Knowing when a provider will refuse us, before it does: cooldowns, headers, limits.

Three sources, each turned into "blocked until" on the monotonic clock passed in:

* a 429 starts a *cooldown* for that (provider, model): ``Retry-After`` in seconds or
  as an HTTP-date (429chain ignored the date form), else the provider's
  ``x-ratelimit-reset-*``, else a configured default;
* *proactive* tracking of ``x-ratelimit-remaining-{requests,tokens}`` and their resets
  (OpenAI's ``6m0s`` and ``20ms`` durations, plain seconds, or epoch times): a
  candidate whose remaining requests are 0, or whose remaining tokens are below this
  request's estimate, is skipped until the reset (429chain only acted on exactly 0);
* *manual* limits from the config (requests per minute and per day, tokens per minute,
  concurrent requests), all enforced, in sliding windows of bounded memory.

Wall-clock times (HTTP-dates, epochs) are converted to delays when the header is read;
after that only the monotonic clock counts.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
from collections.abc import Mapping

import attrs

__all__ = [
    "ManualLimits",
    "ModelLimits",
    "WindowCounter",
    "parse_reset",
    "parse_retry_after",
]

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(h|ms|m|s))")
_EPOCH_SECONDS_AFTER = 1e9  # larger plain numbers are timestamps, not durations
_EPOCH_MS_AFTER = 1e12


_LONGEST_WAIT_S = 86_400.0
"""A provider's word is believed for a day at most: a typo'd or hostile header must not
shut a provider for good."""


def _at_most_a_day(seconds: float | None) -> float | None:
    return None if seconds is None else min(seconds, _LONGEST_WAIT_S)


def parse_retry_after(value: str | None, wall_now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delay-seconds or HTTP-date); ``None`` if unusable."""
    return _at_most_a_day(_parse_retry_after(value, wall_now))


def parse_reset(value: str | None, wall_now: float) -> float | None:
    """Seconds until an ``x-ratelimit-reset-*`` value: ``6m0s``, ``20ms``, ``1.5``, or an epoch."""
    return _at_most_a_day(_parse_reset(value, wall_now))


def _parse_retry_after(value: str | None, wall_now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - older Pythons returned None
            return None
        if when.tzinfo is None:  # "-0000" or no zone: HTTP-dates are GMT, not local time
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - wall_now)
    return seconds if 0 <= seconds < math.inf else None  # not negative, inf or nan


def _parse_reset(value: str | None, wall_now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(a + u for a, u in parts) != value:
            return None
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        total = sum(float(amount) * scale[unit] for amount, unit in parts)
        return total if total < math.inf else None
    if not 0 <= number < math.inf:  # negative, inf or nan
        return None
    if number >= _EPOCH_MS_AFTER:
        return max(0.0, number / 1000 - wall_now)
    if number >= _EPOCH_SECONDS_AFTER:
        return max(0.0, number - wall_now)
    return number


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value.strip())))
    except (ValueError, OverflowError):  # OverflowError: "inf"
        return None


@attrs.define
class ModelLimits:
    """What one (provider, model) has told us about its limits."""

    cooldown_until: float = 0.0
    remaining_requests: int | None = None
    requests_reset_at: float = 0.0
    remaining_tokens: int | None = None
    tokens_reset_at: float = 0.0
    cooldown_reason: str = ""
    """What set the last cooldown: ``retry_after``, ``ratelimit_reset`` or ``default``."""

    def remaining(self, now: float) -> dict[str, int] | None:
        """What the provider last said is left (``x-ratelimit-remaining-*``) and is not
        yet reset; None when it said nothing that still holds."""
        left = {}
        if self.remaining_requests is not None and self.requests_reset_at > now:
            left["requests"] = self.remaining_requests
        if self.remaining_tokens is not None and self.tokens_reset_at > now:
            left["tokens"] = self.remaining_tokens
        return left or None

    def blocked_until(self, now: float, tokens: int) -> float | None:
        """When a request of ``tokens`` may go; ``None`` if it may go now."""
        waits = [self.cooldown_until] if self.cooldown_until > now else []
        if self.remaining_requests == 0 and self.requests_reset_at > now:
            waits.append(self.requests_reset_at)
        if (
            self.remaining_tokens is not None
            and self.remaining_tokens < tokens
            and self.tokens_reset_at > now
        ):
            waits.append(self.tokens_reset_at)
        return max(waits) if waits else None

    def cooling_down(self, now: float) -> bool:
        return self.cooldown_until > now

    def sent(self, now: float, tokens: int) -> None:
        """Count a request against what is left, until the provider's next headers say."""
        if self.remaining_requests is not None and self.requests_reset_at > now:
            self.remaining_requests = max(0, self.remaining_requests - 1)
        if self.remaining_tokens is not None and self.tokens_reset_at > now:
            self.remaining_tokens = max(0, self.remaining_tokens - tokens)

    def observe(self, headers: Mapping[str, str], now: float, wall_now: float) -> None:
        """Take in the ``x-ratelimit-*`` headers of any response."""
        requests = _count(headers.get("x-ratelimit-remaining-requests"))
        if requests is not None:
            reset = parse_reset(headers.get("x-ratelimit-reset-requests"), wall_now)
            self.remaining_requests = requests
            self.requests_reset_at = now + (reset if reset is not None else 60.0)
        tokens = _count(headers.get("x-ratelimit-remaining-tokens"))
        if tokens is not None:
            reset = parse_reset(headers.get("x-ratelimit-reset-tokens"), wall_now)
            self.remaining_tokens = tokens
            self.tokens_reset_at = now + (reset if reset is not None else 60.0)

    def rate_limited(
        self, headers: Mapping[str, str], now: float, wall_now: float, default_s: float
    ) -> float:
        """A 429: start the cooldown; returns its length in seconds."""
        self.observe(headers, now, wall_now)
        delay = parse_retry_after(headers.get("retry-after"), wall_now)
        self.cooldown_reason = "retry_after"
        if delay is None:
            resets = [
                parse_reset(headers.get(f"x-ratelimit-reset-{kind}"), wall_now)
                for kind in ("requests", "tokens")
            ]
            known = [reset for reset in resets if reset is not None]
            delay = max(known) if known else default_s
            self.cooldown_reason = "ratelimit_reset" if known else "default"
        self.cooldown_until = max(self.cooldown_until, now + delay)
        return delay


@attrs.define
class WindowCounter:
    """A sliding-window sum over ``window_s`` in fixed buckets: bounded memory at any rate."""

    window_s: float
    buckets: int = 60
    _counts: dict[int, int] = attrs.field(factory=dict)

    @property
    def _bucket_s(self) -> float:
        return self.window_s / self.buckets

    def _expire(self, now: float) -> None:
        oldest = int(now / self._bucket_s) - self.buckets + 1
        for bucket in [b for b in self._counts if b < oldest]:
            del self._counts[bucket]

    def total(self, now: float) -> int:
        self._expire(now)
        return sum(self._counts.values())

    def add(self, now: float, amount: int) -> None:
        self._expire(now)
        bucket = int(now / self._bucket_s)
        self._counts[bucket] = self._counts.get(bucket, 0) + amount

    def correct(self, at: float, now: float, amount: int) -> None:
        """Adjust what was added at ``at``, in its own bucket, so the correction leaves the
        window with it; nothing if that bucket has already left."""
        self._expire(now)
        bucket = int(at / self._bucket_s)
        if bucket in self._counts:
            self._counts[bucket] += amount

    def frees_at(self, now: float, needed: int, limit: int) -> float | None:
        """When ``needed`` more fits under ``limit``; ``None`` if it fits now."""
        self._expire(now)
        total = sum(self._counts.values())
        # More than the whole limit goes alone, into an empty window: the provider is the
        # judge of a request that large, and refusing it here would refuse it forever.
        if total + needed <= limit or total <= 0:
            return None
        frees_at = now
        for bucket in sorted(self._counts):
            total -= self._counts[bucket]
            frees_at = (bucket + self.buckets) * self._bucket_s
            if total + needed <= limit:
                break
        return frees_at


@attrs.define
class ManualLimits:
    """A provider's configured limits, enforced here rather than discovered by 429s."""

    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    in_flight: int = 0
    _minute: WindowCounter = attrs.field(factory=lambda: WindowCounter(60.0))
    _day: WindowCounter = attrs.field(factory=lambda: WindowCounter(86_400.0, buckets=96))
    _tokens: WindowCounter = attrs.field(factory=lambda: WindowCounter(60.0))

    def blocked_until(self, now: float, tokens: int) -> float | None:
        """When a request of ``tokens`` fits; ``None`` now; ``inf`` if only a release frees it."""
        waits: list[float] = []
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            waits.append(float("inf"))
        for counter, limit, needed in (
            (self._minute, self.requests_per_minute, 1),
            (self._day, self.requests_per_day, 1),
            (self._tokens, self.tokens_per_minute, tokens),
        ):
            if limit is not None:
                at = counter.frees_at(now, needed, limit)
                if at is not None:
                    waits.append(at)
        return max(waits) if waits else None

    def usage(self, now: float) -> dict[str, dict[str, int]]:
        """Each configured limit with what is used of it now: a dashboard's headroom."""
        report = {}
        for name, limit, used in (
            ("requests_per_minute", self.requests_per_minute, self._minute),
            ("requests_per_day", self.requests_per_day, self._day),
            ("tokens_per_minute", self.tokens_per_minute, self._tokens),
        ):
            if limit is not None:
                report[name] = {"limit": limit, "used": used.total(now)}
        if self.max_concurrent is not None:
            report["max_concurrent"] = {"limit": self.max_concurrent, "used": self.in_flight}
        return report

    def acquire(self, now: float, tokens: int) -> None:
        self.in_flight += 1
        # Only the limits configured are counted: most providers have none.
        if self.requests_per_minute is not None:
            self._minute.add(now, 1)
        if self.requests_per_day is not None:
            self._day.add(now, 1)
        if self.tokens_per_minute is not None:
            self._tokens.add(now, tokens)

    def release(
        self, now: float, estimated_tokens: int, actual_tokens: int | None, *, acquired_at: float
    ) -> None:
        self.in_flight -= 1
        if (
            self.tokens_per_minute is not None
            and actual_tokens is not None
            and actual_tokens != estimated_tokens
        ):
            self._tokens.correct(acquired_at, now, actual_tokens - estimated_tokens)
