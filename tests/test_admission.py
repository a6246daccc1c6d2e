"""Admission control on trio's autojump clock: waits are virtual, times are exact."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from arbstr_trio.admission import Admission
from arbstr_trio.errors import Overloaded


async def hold(
    admission: Admission,
    release: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with admission.slot():
        task_status.started()
        await release.wait()


async def test_a_full_proxy_waits_exactly_wait_s_then_answers_503(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = Admission(max_in_flight=2, wait_s=1.5)
    release = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(hold, admission, release)
            await nursery.start(hold, admission, release)
            assert admission.in_flight == 2
            start = trio.current_time()
            with pytest.raises(Overloaded) as caught:
                async with admission.slot():
                    pytest.fail("admitted past max_in_flight")
            assert trio.current_time() == start + 1.5
            assert admission.in_flight == 2
            release.set()
    error = caught.value
    assert error.status_code() == 503
    assert error.code == "overloaded"
    assert error.headers == ((b"retry-after", b"2"), (b"x-backoff-ms", b"1500"))
    assert admission.in_flight == 0


async def test_a_slot_freed_during_the_wait_admits_the_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = Admission(max_in_flight=1, wait_s=1.5)
    release = trio.Event()
    admitted_at: list[float] = []

    async def free_later() -> None:
        await trio.sleep(0.25)
        release.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(hold, admission, release)
            start = trio.current_time()
            nursery.start_soon(free_later)
            async with admission.slot():
                admitted_at.append(trio.current_time())
                assert admission.in_flight == 1
    assert admitted_at == [start + 0.25]
    assert admission.in_flight == 0


async def test_no_wait_still_admits_while_a_slot_is_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``admission_wait_ms = 0`` once refused every request: a deadline of now cancels."""
    admission = Admission(max_in_flight=1, wait_s=0.0)
    start = trio.current_time()
    with trio.fail_after(60):
        async with admission.slot():
            with pytest.raises(Overloaded) as caught:
                async with admission.slot():
                    pytest.fail("admitted past max_in_flight")
    assert trio.current_time() == start
    assert caught.value.headers == ((b"retry-after", b"1"), (b"x-backoff-ms", b"1"))


async def test_a_failing_request_gives_its_slot_back() -> None:
    admission = Admission(max_in_flight=1, wait_s=0.0)
    with trio.fail_after(5), pytest.raises(ValueError, match="handler failed"):
        async with admission.slot():
            raise ValueError("the handler failed")
    assert admission.in_flight == 0


async def test_the_wait_ends_at_the_requests_deadline_if_that_comes_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = Admission(max_in_flight=1, wait_s=1.5)
    release = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(hold, admission, release)
            start = trio.current_time()
            with pytest.raises(Overloaded):
                async with admission.slot(deadline=start + 0.3):
                    pytest.fail("admitted past max_in_flight")
            assert trio.current_time() == start + 0.3
            release.set()
