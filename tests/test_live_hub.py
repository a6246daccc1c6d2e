"""The live feed's hub and health watch, without sockets: bounded queues, drops told
and counted, and breaker/cooldown changes reported when the board or the clock makes them."""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing

from arbstr_trio.health.board import HealthBoard, Permit, Verdict
from arbstr_trio.live.health_watch import HealthWatch
from arbstr_trio.live.hub import LiveHub, Subscription
from tests.conftest import TWO_PROVIDERS, config_from


def events(batch: list[bytes] | None) -> list[dict[str, Any]]:
    assert batch is not None
    return [orjson.loads(event) for event in batch]


async def test_publish_without_subscribers_is_a_no_op_and_never_counts() -> None:
    drops: list[int] = []
    hub = LiveHub(queue_limit=1, on_drop=drops.append)
    assert not hub.listening
    hub.publish("breaker", {"provider": "alpha"})
    with hub.subscribe() as subscription:
        assert hub.listening
        hub.publish("breaker", {"provider": "beta"}, ts=12.0)
        [event] = events(await subscription.next_batch())
        assert event == {"type": "breaker", "ts": 12.0, "provider": "beta"}
    assert not hub.listening
    assert drops == []


async def test_a_full_queue_drops_the_oldest_and_says_how_many_before_the_rest() -> None:
    drops: list[int] = []
    hub = LiveHub(queue_limit=3, clock=lambda: 100.0, on_drop=drops.append)
    with hub.subscribe() as slow, hub.subscribe() as fast:
        for n in range(2):
            hub.publish("request", {"n": n})
        assert [e["n"] for e in events(await fast.next_batch())] == [0, 1]
        for n in range(2, 7):
            hub.publish("request", {"n": n})  # never waits, whatever slow does
        got = events(await slow.next_batch())
        assert got[0] == {"type": "dropped", "ts": 100.0, "count": 4}
        assert [e["n"] for e in got[1:]] == [4, 5, 6]  # the newest kept
        got = events(await fast.next_batch())
        assert got[0] == {"type": "dropped", "ts": 100.0, "count": 2}
        assert [e["n"] for e in got[1:]] == [4, 5, 6]
        assert sum(drops) == 4 + 2  # slow lost 0..3, fast lost 2 and 3
        # Told once: the next batch has no dropped event.
        hub.publish("request", {"n": 7})
        assert events(await slow.next_batch()) == [{"type": "request", "ts": 100.0, "n": 7}]


async def test_next_batch_waits_for_an_event() -> None:
    hub = LiveHub()
    with hub.subscribe() as subscription:
        got: list[bytes] | None = None

        async def reader() -> None:
            nonlocal got
            got = await subscription.next_batch()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                assert got is None
                hub.publish("cooldown_ended", {"provider": "alpha", "model": "m"})
        assert [e["type"] for e in events(got)] == ["cooldown_ended"]


async def test_close_ends_every_subscription_after_what_it_holds() -> None:
    hub = LiveHub()
    with hub.subscribe() as subscription:
        hub.publish("request", {"n": 1})
        hub.close()
        assert [e["n"] for e in events(await subscription.next_batch())] == [1]
        with trio.fail_after(1):
            assert await subscription.next_batch() is None
    with hub.subscribe() as late:  # a feed opening during shutdown ends at once
        assert await late.next_batch() is None


# --- the health watch, on the autojump clock ------------------------------------------


def board_and_watch() -> tuple[HealthBoard, HealthWatch, LiveHub]:
    config = config_from(
        TWO_PROVIDERS + "\n[breaker]\nfailure_threshold = 2\nopen_ms = 5000\n"
        "[ratelimit]\ndefault_cooldown_ms = 3000\n"
    )
    board = HealthBoard(config, wall_clock=lambda: 1_000.0 + trio.current_time())
    hub = LiveHub(clock=lambda: 1_000.0 + trio.current_time())
    watch = HealthWatch(hub, board)
    board.listener = watch
    return board, watch, hub


def permit(board: HealthBoard, provider: str = "alpha") -> Permit:
    result = board.acquire(provider, "gpt-4o-mini", 10)
    assert isinstance(result, Permit)
    return result


async def next_events(subscription: Subscription) -> list[dict[str, Any]]:
    with trio.fail_after(60):  # virtual time
        return events(await subscription.next_batch())


async def test_breaker_opens_turns_half_open_by_the_clock_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    board, watch, hub = board_and_watch()
    with hub.subscribe() as subscription:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.run)
            permit(board).settle(Verdict.FAILURE)
            permit(board).settle(Verdict.FAILURE)  # the threshold: open
            opened_at = trio.current_time()
            [event] = await next_events(subscription)
            assert event == {
                "type": "breaker",
                "ts": 1_000.0 + opened_at,
                "provider": "alpha",
                "from": "closed",
                "to": "open",
            }
            # Nobody asks: the watch wakes when the probe is due, 5 s later.
            [event] = await next_events(subscription)
            assert (event["from"], event["to"]) == ("open", "half_open")
            assert trio.current_time() - opened_at == 5.0
            permit(board).settle(Verdict.SUCCESS)  # the probe
            [event] = await next_events(subscription)
            assert (event["from"], event["to"]) == ("half_open", "closed")
            watch.stop()


async def test_a_probe_failing_before_the_watch_woke_still_reports_every_step() -> None:
    board, _, hub = board_and_watch()
    clock_offset = 0.0
    board.now = lambda: trio.current_time() + clock_offset
    with hub.subscribe() as subscription:
        permit(board).settle(Verdict.FAILURE)
        permit(board).settle(Verdict.FAILURE)
        clock_offset = 5.0  # half-open by the clock; the watch has not run
        permit(board).settle(Verdict.FAILURE)  # the probe fails: open again
        steps = [(e["from"], e["to"]) for e in await next_events(subscription)]
        assert steps == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]


async def test_cooldown_started_then_ended_when_it_runs_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    board, watch, hub = board_and_watch()
    with hub.subscribe() as subscription:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.run)
            started = trio.current_time()
            permit(board, "beta").settle(Verdict.RATE_LIMITED, headers={"retry-after": "2"})
            [event] = await next_events(subscription)
            assert event == {
                "type": "cooldown_started",
                "ts": 1_000.0 + started,
                "provider": "beta",
                "model": "gpt-4o-mini",
                "until": 1_000.0 + started + 2.0,
                "reason": "retry_after",
            }
            [event] = await next_events(subscription)
            assert event["type"] == "cooldown_ended"
            assert (event["provider"], event["model"]) == ("beta", "gpt-4o-mini")
            assert trio.current_time() - started == 2.0
            # No Retry-After: the configured default, and the reason says so.
            permit(board).settle(Verdict.RATE_LIMITED)
            [event] = await next_events(subscription)
            assert (event["reason"], event["until"] - event["ts"]) == ("default", 3.0)
            watch.stop()
