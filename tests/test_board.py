"""The health board: permits, the verdicts that settle them, and why a provider is skipped.

The board reads time only through the clocks it is given, so these tests move a fake
clock by hand and every ``until`` is exact.
"""

from __future__ import annotations

import math

import attrs
import trio
import trio.testing

from arbstr_trio.config.models import (
    BreakerConfig,
    Config,
    HttpUrl,
    PositiveInt,
    ProviderConfig,
    RateLimitConfig,
)
from arbstr_trio.health.board import Blocked, BlockReason, HealthBoard, Permit, Verdict
from arbstr_trio.health.breaker import BreakerState


@attrs.define
class FakeTime:
    now: float = 100.0
    wall: float = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


def provider(
    name: str,
    *,
    max_concurrent: PositiveInt | None = None,
    requests_per_minute: PositiveInt | None = None,
) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        url=HttpUrl(f"http://{name}.example/v1"),
        max_concurrent=max_concurrent,
        requests_per_minute=requests_per_minute,
    )


def make_board(*providers: ProviderConfig) -> tuple[HealthBoard, FakeTime, Config]:
    """Breakers open after 2 failures for 10 s; a bare 429 cools down for 5 s."""
    config = Config(
        providers=providers or (provider("a"),),
        breaker=BreakerConfig(failure_threshold=PositiveInt(2), open_ms=PositiveInt(10_000)),
        ratelimit=RateLimitConfig(default_cooldown_ms=PositiveInt(5_000)),
    )
    time = FakeTime()
    return HealthBoard(config, clock=lambda: time.now, wall_clock=lambda: time.wall), time, config


def permit(board: HealthBoard, provider: str = "a", model: str = "m", tokens: int = 10) -> Permit:
    got = board.acquire(provider, model, tokens)
    assert isinstance(got, Permit), got
    return got


def test_acquire_returns_a_permit_for_a_healthy_provider() -> None:
    board, time, _ = make_board()
    got = permit(board, tokens=42)
    assert (got.provider, got.model, got.tokens, got.acquired_at) == ("a", "m", 42, time.now)
    assert not got.ticket.probe
    assert not got.settled


def test_failures_open_the_breaker_until_the_probe_time() -> None:
    board, time, _ = make_board()
    permit(board).settle(Verdict.FAILURE)
    time.advance(1.0)
    permit(board).settle(Verdict.FAILURE)
    assert board.breaker_state("a") is BreakerState.OPEN
    assert board.acquire("a", "m", 10) == Blocked("a", BlockReason.BREAKER_OPEN, 111.0)


def test_half_open_probe_in_flight_blocks_everyone_else() -> None:
    board, time, _ = make_board()
    permit(board).settle(Verdict.FAILURE)
    permit(board).settle(Verdict.FAILURE)
    time.advance(10.0)
    probe = permit(board)
    assert probe.ticket.probe
    assert board.acquire("a", "other", 10) == Blocked("a", BlockReason.BREAKER_OPEN, math.inf)
    probe.settle(Verdict.SUCCESS)
    assert board.breaker_state("a") is BreakerState.CLOSED
    assert not permit(board).ticket.probe


def test_client_errors_say_the_provider_is_healthy() -> None:
    board, _, config = make_board()
    permit(board).settle(Verdict.FAILURE)
    permit(board).settle(Verdict.CLIENT_ERROR)
    permit(board).settle(Verdict.FAILURE)
    assert board.breaker_state("a") is BreakerState.CLOSED
    assert board.snapshot(config.providers)[0]["consecutive_failures"] == 1


def test_rate_limited_starts_a_cooldown_for_that_model_only() -> None:
    board, time, _ = make_board()
    permit(board).settle(Verdict.RATE_LIMITED, headers={"retry-after": "3"})
    assert board.acquire("a", "m", 10) == Blocked("a", BlockReason.COOLDOWN, 103.0)
    permit(board, model="other").settle(Verdict.RATE_LIMITED)  # no headers: the default
    assert board.acquire("a", "other", 10) == Blocked("a", BlockReason.COOLDOWN, 105.0)
    assert board.breaker_state("a") is BreakerState.CLOSED
    time.advance(3.0)
    permit(board)


def test_rate_limited_is_not_a_breaker_failure() -> None:
    board, _, config = make_board()
    for model in ("m1", "m2", "m3"):
        permit(board, model=model).settle(Verdict.RATE_LIMITED)
    assert board.breaker_state("a") is BreakerState.CLOSED
    assert board.snapshot(config.providers)[0]["consecutive_failures"] == 0


def test_a_rate_limited_probe_frees_the_probe_slot() -> None:
    board, time, _ = make_board()
    permit(board).settle(Verdict.FAILURE)
    permit(board).settle(Verdict.FAILURE)
    time.advance(10.0)
    permit(board).settle(Verdict.RATE_LIMITED, headers={"retry-after": "60"})
    assert board.breaker_state("a") is BreakerState.HALF_OPEN
    assert permit(board, model="other").ticket.probe


def test_observed_headers_block_proactively() -> None:
    board, _, _ = make_board()
    got = permit(board)
    got.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
    assert board.acquire("a", "m", 10) == Blocked("a", BlockReason.RATE_LIMIT, 102.0)
    got.settle(Verdict.SUCCESS)
    assert board.acquire("a", "m", 10) == Blocked("a", BlockReason.RATE_LIMIT, 102.0)


def test_manual_limits_block_with_their_reason() -> None:
    board, _, _ = make_board(
        provider("busy", max_concurrent=PositiveInt(1)),
        provider("metered", requests_per_minute=PositiveInt(1)),
    )
    held = permit(board, "busy")
    assert board.acquire("busy", "m", 10) == Blocked("busy", BlockReason.BUSY, math.inf)
    held.settle(Verdict.ABANDONED)
    permit(board, "busy")
    permit(board, "metered").settle(Verdict.SUCCESS)
    assert board.acquire("metered", "m", 10) == Blocked("metered", BlockReason.RATE_LIMIT, 160.0)


def test_settling_twice_is_a_no_op() -> None:
    board, _, config = make_board(provider("a", max_concurrent=PositiveInt(2)))
    got = permit(board)
    got.settle(Verdict.FAILURE)
    got.settle(Verdict.FAILURE)
    got.settle(Verdict.ABANDONED)
    [report] = board.snapshot(config.providers)
    assert (report["consecutive_failures"], report["in_flight"]) == (1, 0)


def test_snapshot_reports_wall_times_and_cooldowns() -> None:
    board, time, config = make_board(provider("a"), provider("b", max_concurrent=PositiveInt(3)))
    permit(board, "a").settle(Verdict.FAILURE)
    permit(board, "a").settle(Verdict.FAILURE)  # opened at 100, wall 1_700_000_000
    permit(board, "b", "x").settle(Verdict.RATE_LIMITED, headers={"retry-after": "3.5"})
    permit(board, "b", "y")
    permit(board, "b", "z").settle(
        Verdict.SUCCESS,
        headers={"x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "30s"},
    )
    time.advance(1.0)
    assert board.snapshot(config.providers) == [
        {
            "name": "a",
            "breaker": "open",
            "consecutive_failures": 2,
            "opened_at": 1_700_000_000.0,
            "probe_at": 1_700_000_010.0,
            "cooldowns": [],
            "in_flight": 0,
            "remaining": [],
            "limits": {},
        },
        {
            "name": "b",
            "breaker": "closed",
            "consecutive_failures": 0,
            "opened_at": None,
            "probe_at": None,
            "cooldowns": [{"model": "x", "seconds_left": 2.5}],
            "in_flight": 1,
            "remaining": [{"model": "z", "tokens": 900}],
            "limits": {"max_concurrent": {"limit": 3, "used": 1}},
        },
    ]


async def test_wait_for_capacity_wakes_on_the_next_settle() -> None:
    board, _, _ = make_board()
    before = permit(board)
    before.settle(Verdict.SUCCESS)  # already past: must not wake a later waiter
    held = permit(board)
    woken: list[bool] = []

    async def waiter() -> None:
        await board.wait_for_capacity()
        woken.append(True)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            held.settle(Verdict.ABANDONED)
            await trio.testing.wait_all_tasks_blocked()
            assert woken == [True]
