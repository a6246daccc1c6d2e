"""The engine against a scripted upstream, on trio's virtual clock.

Every test runs under ``autojump_clock``: sleeps, backoffs, hedges and deadlines take
no real time, and the virtual clock lets each test assert *when* things happened,
exactly. The fake upstream answers each provider's calls from a script of steps
(reply, refuse, stall, stream) and records every call and whether each response it
handed out was closed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from arbstr_trio.answer import Answer
from arbstr_trio.chat_request import parse_chat_request
from arbstr_trio.config.models import Config, ProviderConfig
from arbstr_trio.engine import Engine
from arbstr_trio.errors import (
    ArbstrError,
    DeadlineExceeded,
    NoHealthyProvider,
    RateLimited,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from arbstr_trio.exchange import Exchange
from arbstr_trio.health.board import HealthBoard
from arbstr_trio.health.breaker import BreakerState
from arbstr_trio.routing import rank_candidates
from tests.conftest import chat_body, config_from

Header = tuple[bytes, bytes]

GUARD_S = 600.0
"""Virtual seconds: a test that hangs fails instead (no test needs a minute)."""

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
)
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


# --- the fake upstream -------------------------------------------------------------------


@attrs.define(eq=False)
class FakeResponse:
    """A provider's answer as the engine sees it; remembers being closed."""

    provider: str
    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    chunks: list[bytes | UpstreamError] = attrs.field(factory=list)
    stall_body: bool = False
    """Reading the body (or the first chunk) never finishes."""
    closed: bool = False

    async def read(self) -> bytes:
        if self.stall_body:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        return self.body

    async def read_error_body(self) -> bytes:
        return await self.read()

    async def next_chunk(self) -> bytes | None:
        if self.stall_body:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        if not self.chunks:
            return None
        chunk = self.chunks.pop(0)
        if isinstance(chunk, UpstreamError):
            raise chunk
        return chunk

    async def aclose(self) -> None:
        self.closed = True


Step = Callable[[str], Awaitable[FakeResponse]]
"""What one call does, given the provider's name."""


@attrs.define(eq=False)
class Call:
    provider: str
    at: float
    """Seconds since the fake was made."""
    headers: dict[str, str]
    body: bytes
    response: FakeResponse | None = None
    cancelled: bool = False
    """Cancelled before the response headers arrived."""


class FakeUpstream:
    """A :class:`ProviderClient` whose providers follow scripts: one step per call."""

    def __init__(self) -> None:
        self.t0 = trio.current_time()
        self.calls: list[Call] = []
        self._scripts: dict[str, list[Step]] = {}
        self._always: dict[str, Step] = {}

    def script(self, provider: str, *steps: Step) -> None:
        """The next calls to ``provider``, in order; one more is a test failure."""
        self._scripts.setdefault(provider, []).extend(steps)

    def always(self, provider: str, step: Step) -> None:
        """Every call to ``provider`` once its script is used up."""
        self._always[provider] = step

    async def post(
        self, provider: ProviderConfig, path: str, body: bytes, headers: list[Header]
    ) -> FakeResponse:
        assert path == "/chat/completions"
        sent = {name.decode(): value.decode() for name, value in headers}
        call = Call(provider.name, trio.current_time() - self.t0, sent, body)
        self.calls.append(call)
        try:
            call.response = await self._next_step(provider.name)(provider.name)
        except trio.Cancelled:
            call.cancelled = True
            raise
        return call.response

    def _next_step(self, provider: str) -> Step:
        script = self._scripts.get(provider)
        if script:
            return script.pop(0)
        if provider in self._always:
            return self._always[provider]
        raise AssertionError(f"unscripted call to {provider!r}")

    def times(self, provider: str) -> list[float]:
        return [call.at for call in self.calls if call.provider == provider]

    def order(self) -> list[str]:
        return [call.provider for call in self.calls]

    def responses(self) -> list[FakeResponse]:
        return [call.response for call in self.calls if call.response is not None]


def reply(
    status: int = 200,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    stall_body: bool = False,
) -> Step:
    """Response headers at once; a completion (200) or an error envelope as the body."""
    if body is None:
        body = COMPLETION if status == 200 else b'{"error": {"message": "upstream says no"}}'

    async def step(provider: str) -> FakeResponse:
        await trio.lowlevel.checkpoint()
        all_headers = {"content-type": "application/json", **(headers or {})}
        return FakeResponse(provider, status, all_headers, body, stall_body=stall_body)

    return step


def event_stream(
    *chunks: bytes | UpstreamError, content_type: str = "text/event-stream", stall: bool = False
) -> Step:
    async def step(provider: str) -> FakeResponse:
        await trio.lowlevel.checkpoint()
        headers = {"content-type": content_type}
        return FakeResponse(provider, 200, headers, chunks=list(chunks), stall_body=stall)

    return step


def refuse(error: type[UpstreamError] = UpstreamUnreachable) -> Step:
    """A transport failure before any response, as :func:`map_transport_errors` raises."""

    async def step(provider: str) -> FakeResponse:
        await trio.lowlevel.checkpoint()
        raise error(f"provider {provider!r} failed in transport", provider=provider)

    return step


def stall() -> Step:
    """No response headers, ever."""

    async def step(provider: str) -> FakeResponse:
        await trio.sleep_forever()

    return step


def after(seconds: float, then: Step) -> Step:
    async def step(provider: str) -> FakeResponse:
        await trio.sleep(seconds)
        return await then(provider)

    return step


def broken(provider: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"provider {provider!r} broke the connection", provider=provider)


# --- the engine under test -------------------------------------------------------------


class MaxJitter(random.Random):
    """Full jitter that always draws its maximum: backoff is exactly the exponential cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


RETRY: dict[str, object] = {
    "max_attempts_per_provider": 2,
    "backoff_base_ms": 100,
    "backoff_max_ms": 2000,
    "budget_percent": 20.0,
    "min_retry_concurrency": 3,
}
BREAKER: dict[str, object] = {"failure_threshold": 5, "open_ms": 30_000}
RATELIMIT: dict[str, object] = {"default_cooldown_ms": 30_000}


def make_config(
    providers: Sequence[str] = ("alpha", "beta"),
    *,
    retry: Mapping[str, object] | None = None,
    breaker: Mapping[str, object] | None = None,
    ratelimit: Mapping[str, object] | None = None,
    extra: Mapping[str, str] | None = None,
) -> Config:
    """Providers ranked in the order given (each pricier than the one before)."""
    tables = {
        "retry": {**RETRY, **(retry or {})},
        "breaker": {**BREAKER, **(breaker or {})},
        "ratelimit": {**RATELIMIT, **(ratelimit or {})},
    }
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
    for rank, name in enumerate(providers, start=1):
        lines += [
            "[[providers]]",
            f'name = "{name}"',
            f'url = "http://{name}.invalid/v1"',
            'models = ["gpt-4o-mini"]',
            f"input_rate = {rank * 100}",
            f"output_rate = {rank * 100}",
            (extra or {}).get(name, ""),
        ]
    return config_from("\n".join(lines))


@attrs.define
class Rig:
    config: Config
    upstream: FakeUpstream
    board: HealthBoard
    engine: Engine
    requests: int = 0

    def exchange(self, timeout_s: float = 30.0, headers: Sequence[Header] = ()) -> Exchange:
        """A request's exchange as the server makes it: deadline from its arrival."""
        self.requests += 1
        exchange = Exchange(request_id=f"req-{self.requests}", client_headers=list(headers))
        exchange.deadline = exchange.started_at + timeout_s
        return exchange

    async def ask(self, *, stream: bool = False, exchange: Exchange | None = None) -> Answer:
        request_body = chat_body(stream=True) if stream else chat_body()
        request = parse_chat_request(orjson.dumps(request_body))
        candidates = rank_candidates(
            self.config.providers,
            request,
            default_completion_tokens=self.config.routing.default_completion_tokens,
        )
        return await self.engine.answer(request, candidates, exchange or self.exchange())

    def now(self) -> float:
        """Seconds since the rig was made."""
        return trio.current_time() - self.upstream.t0

    def now_ms(self) -> int:
        return round(self.now() * 1000)

    def at(self, seconds: float) -> float:
        """The absolute time ``seconds`` after the rig was made."""
        return self.upstream.t0 + seconds

    def in_flight(self, provider: str) -> int:
        for row in self.board.snapshot(self.config.providers):
            if row["name"] == provider:
                return int(row["in_flight"])
        raise KeyError(provider)


def make_rig(providers: Sequence[str] = ("alpha", "beta"), **config: Any) -> Rig:
    cfg = make_config(providers, **config)
    upstream = FakeUpstream()
    board = HealthBoard(cfg)
    return Rig(cfg, upstream, board, Engine(upstream, board, cfg, rng=MaxJitter()))


def header(headers: Sequence[Header], name: bytes) -> bytes | None:
    values = [value for key, value in headers if key == name]
    assert len(values) <= 1, values
    return values[0] if values else None


# --- retries and fallback --------------------------------------------------------------


async def test_a_503_is_retried_on_the_same_provider_after_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    rig.upstream.script("alpha", reply(503), reply(200))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()

    assert answer.candidate.name == "alpha"
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 0.1])
    assert rig.now() == pytest.approx(0.1)
    assert rig.upstream.order() == ["alpha", "alpha"]
    assert answer.body == COMPLETION
    assert answer.usage is not None
    assert answer.usage.total_tokens == 10
    assert answer.metadata_headers() == [
        (b"x-arbstr-retries", b"1/alpha"),
        (b"x-arbstr-attempts", b"alpha:http_503, alpha:ok"),
    ]
    keys = [call.headers["idempotency-key"] for call in rig.upstream.calls]
    assert keys == ["arbstr-req-1", "arbstr-req-1"]
    assert all(response.closed for response in rig.upstream.responses())
    assert rig.in_flight("alpha") == 0


async def test_the_clients_idempotency_key_travels_on_every_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    rig.upstream.script("alpha", refuse(UpstreamTimeout), reply(200))
    exchange = rig.exchange(headers=[(b"idempotency-key", b"client-key-7")])
    with trio.fail_after(GUARD_S):
        answer = await rig.ask(exchange=exchange)
    assert answer.metadata_headers()[0] == (b"x-arbstr-retries", b"1/alpha")
    assert [call.headers["idempotency-key"] for call in rig.upstream.calls] == ["client-key-7"] * 2
    assert [call.headers["x-request-id"] for call in rig.upstream.calls] == ["req-1"] * 2


async def test_backoff_doubles_up_to_its_cap(autojump_clock: trio.testing.MockClock) -> None:
    rig = make_rig(retry={"max_attempts_per_provider": 4, "backoff_max_ms": 150})
    rig.upstream.script("alpha", reply(500), reply(502), refuse(), reply(200))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()
    assert answer.candidate.name == "alpha"
    # 100 ms, then 200 ms capped at 150 ms, then 150 ms.
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 0.1, 0.25, 0.4])
    assert answer.metadata_headers()[0] == (b"x-arbstr-retries", b"3/alpha")


async def test_failing_providers_fall_over_down_the_whole_ranked_list(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(("alpha", "beta", "gamma"))
    rig.upstream.script("alpha", reply(503), reply(502))
    rig.upstream.script("beta", refuse(UpstreamUnreachable), refuse(UpstreamTimeout))
    rig.upstream.script("gamma", reply(200))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()

    assert answer.candidate.name == "gamma"
    assert rig.upstream.order() == ["alpha", "alpha", "beta", "beta", "gamma"]
    # A retry waits for its backoff; moving on to the next provider does not.
    assert [call.at for call in rig.upstream.calls] == pytest.approx([0, 0.1, 0.1, 0.2, 0.2])
    assert rig.now() == pytest.approx(0.2)
    assert answer.metadata_headers() == [
        (b"x-arbstr-retries", b"2/alpha, 2/beta"),
        (
            b"x-arbstr-attempts",
            b"alpha:http_503, alpha:http_502, beta:connect_error, beta:timeout, gamma:ok",
        ),
    ]
    assert len({call.headers["idempotency-key"] for call in rig.upstream.calls}) == 1


async def test_when_every_provider_fails_the_last_failure_is_raised_with_the_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(("alpha", "beta", "gamma"), retry={"max_attempts_per_provider": 1})
    rig.upstream.script("alpha", reply(503))
    rig.upstream.script("beta", refuse())
    rig.upstream.script("gamma", reply(500))
    with trio.fail_after(GUARD_S), pytest.raises(UpstreamStatusError) as caught:
        await rig.ask()

    error = caught.value
    assert rig.now() == 0
    assert error.status_code() == 502
    assert error.code == "upstream_http_500"
    assert error.message == (
        "provider 'gamma' failed with HTTP 500; "
        "attempts: alpha http_503, beta connect_error, gamma http_500"
    )
    assert [(a["provider"], a["outcome"], a["status"]) for a in error.details["attempts"]] == [
        ("alpha", "http_503", 503),
        ("beta", "connect_error", None),
        ("gamma", "http_500", 500),
    ]
    assert header(error.headers, b"x-arbstr-retries") == b"1/alpha, 1/beta, 1/gamma"


async def test_a_429_moves_on_at_once_and_cools_the_provider_down_for_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    rig.upstream.script("alpha", reply(429, headers={"retry-after": "5"}), reply(200))
    rig.upstream.always("beta", reply(200))
    with trio.fail_after(GUARD_S):
        first = await rig.ask()
        assert first.candidate.name == "beta"
        assert rig.upstream.order() == ["alpha", "beta"]  # no retry of alpha
        assert rig.upstream.times("beta") == [0.0]
        assert first.metadata_headers() == [
            (b"x-arbstr-retries", b"1/alpha"),
            (b"x-arbstr-attempts", b"alpha:http_429, beta:ok"),
        ]

        await trio.sleep_until(rig.at(4.9))
        cooling = await rig.ask()
        assert cooling.candidate.name == "beta"
        assert cooling.metadata_headers() == []  # alpha skipped, not tried
        assert rig.upstream.times("alpha") == [0.0]

        await trio.sleep_until(rig.at(5.0))
        recovered = await rig.ask()
    assert recovered.candidate.name == "alpha"
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 5.0])


async def test_a_client_error_is_raised_at_once_without_retry_or_fallback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    envelope = {
        "error": {
            "message": "messages[0].content is too long",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    rig.upstream.script("alpha", reply(400, body=orjson.dumps(envelope)))
    with trio.fail_after(GUARD_S), pytest.raises(UpstreamRejected) as caught:
        await rig.ask()

    error = caught.value
    assert rig.now() == 0
    assert rig.upstream.order() == ["alpha"]
    assert error.status_code() == 400
    assert error.message == "messages[0].content is too long"
    assert error.error_object()["code"] == "context_length_exceeded"
    assert error.details["attempts"] == [
        {
            "provider": "alpha",
            "outcome": "http_400",
            "status": 400,
            "hedge": False,
            "duration_ms": 0,
        }
    ]
    # The provider answered properly: its breaker does not count it.
    assert rig.board.breaker_state("alpha") is BreakerState.CLOSED
    assert all(response.closed for response in rig.upstream.responses())
    assert rig.in_flight("alpha") == 0


async def test_no_retry_budget_means_falling_over_instead_of_retrying(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(retry={"budget_percent": 0.0, "min_retry_concurrency": 0})
    rig.upstream.script("alpha", reply(503))
    rig.upstream.script("beta", reply(200))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()
    assert answer.candidate.name == "beta"
    assert rig.upstream.order() == ["alpha", "beta"]
    assert rig.upstream.times("beta") == [0.0]  # no backoff: it is not a retry
    assert answer.metadata_headers()[0] == (b"x-arbstr-retries", b"1/alpha")


# --- the deadline --------------------------------------------------------------------


async def test_the_deadline_cancels_every_attempt_and_lists_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    # The retry's headers arrive, then its body never does.
    rig.upstream.script("alpha", reply(503), reply(200, stall_body=True))
    exchange = rig.exchange(timeout_s=2.0)
    with trio.fail_after(GUARD_S), pytest.raises(DeadlineExceeded) as caught:
        await rig.ask(exchange=exchange)

    error = caught.value
    assert trio.current_time() == exchange.deadline
    assert error.status_code() == 504
    assert error.code == "deadline_exceeded"
    assert error.message == (
        "no provider answered within the 2000 ms deadline; "
        "attempts: alpha http_503, alpha cancelled"
    )
    assert error.details["attempts"] == [
        {
            "provider": "alpha",
            "outcome": "http_503",
            "status": 503,
            "hedge": False,
            "duration_ms": 0,
        },
        {
            "provider": "alpha",
            "outcome": "cancelled",
            "status": None,
            "hedge": False,
            "duration_ms": 1900,
        },
    ]
    assert header(error.headers, b"x-arbstr-retries") == b"1/alpha"
    assert rig.upstream.order() == ["alpha", "alpha"]
    assert all(response.closed for response in rig.upstream.responses())
    assert rig.in_flight("alpha") == 0


async def test_the_deadline_cancels_a_stalled_call_and_a_stalled_hedge(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(retry={"hedge_after_ms": 200})
    rig.upstream.script("alpha", stall())
    rig.upstream.script("beta", reply(200, stall_body=True))
    exchange = rig.exchange(timeout_s=1.0)
    with trio.fail_after(GUARD_S), pytest.raises(DeadlineExceeded) as caught:
        await rig.ask(exchange=exchange)

    assert trio.current_time() == exchange.deadline
    assert caught.value.message == (
        "no provider answered within the 1000 ms deadline; "
        "attempts: alpha cancelled, beta cancelled"
    )
    assert [(a["provider"], a["hedge"]) for a in caught.value.details["attempts"]] == [
        ("alpha", False),
        ("beta", True),
    ]
    alpha, beta = rig.upstream.calls
    assert alpha.cancelled
    assert alpha.response is None
    assert not beta.cancelled
    assert beta.response is not None
    assert beta.response.closed
    assert (rig.in_flight("alpha"), rig.in_flight("beta")) == (0, 0)
    # Cancelled attempts are no verdict on the providers.
    assert rig.board.snapshot(rig.config.providers)[0]["consecutive_failures"] == 0


# --- hedging -----------------------------------------------------------------------------


async def test_a_hedge_starts_on_time_and_the_winner_cancels_the_primary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(("alpha", "beta", "gamma"), retry={"hedge_after_ms": 200})
    rig.upstream.script("alpha", reply(200, stall_body=True))
    rig.upstream.script("beta", after(0.05, reply(200)))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()

    assert answer.candidate.name == "beta"
    assert rig.upstream.order() == ["alpha", "beta"]  # one hedge only
    assert rig.upstream.times("beta") == pytest.approx([0.2])
    assert rig.now() == pytest.approx(0.25)
    primary = rig.upstream.calls[0].response
    assert primary is not None
    assert primary.closed
    assert answer.metadata_headers() == [(b"x-arbstr-attempts", b"alpha:hedge_lost, beta:ok")]
    assert [(r.provider, r.hedge) for r in answer.attempts] == [("alpha", False), ("beta", True)]
    assert (rig.in_flight("alpha"), rig.in_flight("beta")) == (0, 0)


async def test_no_hedge_when_the_primary_answers_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(retry={"hedge_after_ms": 200})
    rig.upstream.script("alpha", after(0.199, reply(200)))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()
    assert answer.candidate.name == "alpha"
    assert rig.upstream.order() == ["alpha"]
    assert answer.metadata_headers() == []


# --- circuit breakers ------------------------------------------------------------------


async def test_an_open_breaker_skips_the_provider_until_one_probe_closes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(breaker={"failure_threshold": 2, "open_ms": 1000})
    rig.upstream.script("alpha", reply(503), reply(503), after(0.5, reply(200)), reply(200))
    rig.upstream.always("beta", reply(200))
    finished: dict[str, tuple[str, int]] = {}

    async def ask(key: str) -> None:
        answer = await rig.ask()
        finished[key] = (answer.candidate.name, rig.now_ms())

    with trio.fail_after(GUARD_S):
        await ask("opens")  # alpha fails twice (opening at +0.1), beta answers
        assert rig.board.breaker_state("alpha") is BreakerState.OPEN
        await ask("open")
        await trio.sleep_until(rig.at(1.05))
        await ask("still open")
        assert rig.upstream.times("alpha") == pytest.approx([0.0, 0.1])

        await trio.sleep_until(rig.at(1.1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "probe")
            await trio.sleep(0.1)
            # The probe is in flight: this request skips alpha rather than wait.
            assert rig.board.breaker_state("alpha") is BreakerState.HALF_OPEN
            nursery.start_soon(ask, "during probe")
        await ask("closed")

    assert finished["opens"] == ("beta", 100)
    assert finished["open"] == ("beta", 100)
    assert finished["still open"] == ("beta", 1050)
    assert finished["during probe"] == ("beta", 1200)
    assert finished["probe"] == ("alpha", 1600)
    assert finished["closed"] == ("alpha", 1600)
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 0.1, 1.1, 1.6])
    assert rig.board.breaker_state("alpha") is BreakerState.CLOSED


async def test_a_failed_probe_reopens_the_breaker_for_another_open_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(
        retry={"max_attempts_per_provider": 1}, breaker={"failure_threshold": 1, "open_ms": 1000}
    )
    rig.upstream.script("alpha", reply(503), refuse(), reply(200))
    rig.upstream.always("beta", reply(200))
    with trio.fail_after(GUARD_S):
        assert (await rig.ask()).candidate.name == "beta"
        await trio.sleep_until(rig.at(1.0))
        probe = await rig.ask()
        assert probe.candidate.name == "beta"
        assert probe.metadata_headers()[0] == (b"x-arbstr-retries", b"1/alpha")
        assert rig.board.breaker_state("alpha") is BreakerState.OPEN
        await trio.sleep_until(rig.at(1.999))
        assert (await rig.ask()).candidate.name == "beta"
        await trio.sleep_until(rig.at(2.0))
        assert (await rig.ask()).candidate.name == "alpha"
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 1.0, 2.0])
    assert rig.board.breaker_state("alpha") is BreakerState.CLOSED


async def test_every_breaker_open_is_503_at_once_with_retry_after_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(
        retry={"max_attempts_per_provider": 1}, breaker={"failure_threshold": 1, "open_ms": 10_000}
    )
    rig.upstream.script("alpha", reply(503))
    rig.upstream.script("beta", reply(503))
    with trio.fail_after(GUARD_S):
        with pytest.raises(UpstreamStatusError):
            await rig.ask()
        await trio.sleep_until(rig.at(2.5))
        with pytest.raises(NoHealthyProvider) as caught:
            await rig.ask()

    error = caught.value
    assert rig.now() == pytest.approx(2.5)
    assert error.status_code() == 503
    assert error.code == "no_healthy_provider"
    assert header(error.headers, b"retry-after") == b"8"  # the probes are due at +10 s
    assert "the next probe is in 8 s" in error.message
    assert error.details["attempts"] == []
    assert rig.upstream.order() == ["alpha", "beta"]


# --- rate limits and capacity ------------------------------------------------------------


async def test_no_requests_remaining_skips_the_provider_until_the_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    exhausted = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    rig.upstream.script("alpha", reply(200, headers=exhausted), reply(200))
    rig.upstream.always("beta", reply(200))
    with trio.fail_after(GUARD_S):
        assert (await rig.ask()).candidate.name == "alpha"
        skipped = await rig.ask()
        assert skipped.candidate.name == "beta"
        assert skipped.metadata_headers() == []
        await trio.sleep_until(rig.at(1.999))
        assert (await rig.ask()).candidate.name == "beta"
        await trio.sleep_until(rig.at(2.0))
        assert (await rig.ask()).candidate.name == "alpha"
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 2.0])


async def cool_everyone_down(rig: Rig) -> None:
    """alpha answers 429 for 3 s, beta for 5 s: a request with 2 s left is refused."""
    rig.upstream.script("alpha", reply(429, headers={"retry-after": "3"}))
    rig.upstream.script("beta", reply(429, headers={"retry-after": "5"}))
    with pytest.raises(RateLimited) as caught:
        await rig.ask(exchange=rig.exchange(timeout_s=2.0))
    assert header(caught.value.headers, b"retry-after") == b"3"
    assert rig.upstream.order() == ["alpha", "beta"]


async def test_when_all_cool_down_inside_the_deadline_the_engine_waits_for_the_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    with trio.fail_after(GUARD_S):
        await cool_everyone_down(rig)
        await trio.sleep_until(rig.at(1.0))
        rig.upstream.script("alpha", reply(200))
        answer = await rig.ask(exchange=rig.exchange(timeout_s=2.5))
    assert answer.candidate.name == "alpha"
    assert rig.now() == pytest.approx(3.0)
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 3.0])
    assert answer.metadata_headers() == []


async def test_a_request_refused_by_every_candidate_waits_for_the_first_to_recover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    rig.upstream.script("alpha", reply(429, headers={"retry-after": "3"}), reply(200))
    rig.upstream.script("beta", reply(429, headers={"retry-after": "5"}))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()
    assert answer.candidate.name == "alpha"
    # Back on alpha the moment its cooldown ends: the cooldown was the backoff.
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 3.0])
    assert rig.upstream.order() == ["alpha", "beta", "alpha"]
    assert dict(answer.metadata_headers())[b"x-arbstr-retries"] == b"1/alpha, 1/beta"


async def test_when_all_cool_down_past_the_deadline_it_is_429_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    with trio.fail_after(GUARD_S):
        await cool_everyone_down(rig)
        await trio.sleep_until(rig.at(1.0))
        with pytest.raises(RateLimited) as caught:
            await rig.ask(exchange=rig.exchange(timeout_s=1.5))
    assert rig.now() == pytest.approx(1.0)
    assert caught.value.status_code() == 429
    assert caught.value.code == "rate_limited"
    assert header(caught.value.headers, b"retry-after") == b"2"
    assert rig.upstream.order() == ["alpha", "beta"]


async def test_a_full_provider_makes_the_next_request_wait_for_its_permit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(("alpha",), extra={"alpha": "max_concurrent = 1"})
    rig.upstream.script("alpha", after(1.0, reply(200)), reply(200))
    finished: dict[str, int] = {}

    async def ask(key: str) -> None:
        await rig.ask()
        finished[key] = rig.now_ms()

    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "first")
            await trio.sleep(0.25)
            assert rig.in_flight("alpha") == 1
            nursery.start_soon(ask, "second")
    assert finished == {"first": 1000, "second": 1000}
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 1.0])
    assert rig.in_flight("alpha") == 0


async def test_a_full_provider_is_waited_for_even_when_another_cools_down_past_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(extra={"alpha": "max_concurrent = 1"})
    rig.upstream.script("alpha", after(1.0, reply(200)), reply(200), reply(200))
    rig.upstream.script("beta", reply(429, headers={"retry-after": "60"}))
    finished: dict[str, tuple[str, int]] = {}

    async def ask(key: str) -> None:
        answer = await rig.ask()
        finished[key] = (answer.candidate.name, rig.now_ms())

    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "first")
            await trio.sleep(0.25)
            nursery.start_soon(ask, "beta refuses")  # alpha busy; beta cools down for 60 s
            await trio.sleep(0.25)
            # alpha is merely busy: its permit frees well inside the deadline.
            nursery.start_soon(ask, "third")
    assert finished == {
        "first": ("alpha", 1000),
        "beta refuses": ("alpha", 1000),
        "third": ("alpha", 1000),
    }
    assert rig.upstream.times("beta") == pytest.approx([0.25])
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 1.0, 1.0])


# --- cancellation ----------------------------------------------------------------------


async def test_a_cancelled_probe_frees_the_probe_for_the_next_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(
        ("alpha",),
        retry={"max_attempts_per_provider": 1},
        breaker={"failure_threshold": 1, "open_ms": 1000},
        extra={"alpha": "max_concurrent = 1"},
    )
    rig.upstream.script("alpha", reply(503), reply(200, stall_body=True), reply(200))
    with trio.fail_after(GUARD_S):
        with pytest.raises(UpstreamStatusError):
            await rig.ask()
        await trio.sleep_until(rig.at(1.0))
        with trio.move_on_after(0.5) as client:  # the client disconnects mid-probe
            await rig.ask()
        assert client.cancelled_caught
        assert rig.in_flight("alpha") == 0
        assert rig.board.breaker_state("alpha") is BreakerState.HALF_OPEN
        answer = await rig.ask()  # probes at once: nothing holds the probe
    assert answer.candidate.name == "alpha"
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 1.0, 1.5])
    assert rig.board.breaker_state("alpha") is BreakerState.CLOSED
    assert all(response.closed for response in rig.upstream.responses())


async def test_a_client_gone_during_the_backoff_leaves_nothing_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(extra={"alpha": "max_concurrent = 1"})
    rig.upstream.script("alpha", reply(503), reply(200))
    with trio.fail_after(GUARD_S):
        with trio.move_on_after(0.05):
            await rig.ask()
        assert rig.in_flight("alpha") == 0
        assert rig.engine.budget.active_requests == 0
        assert rig.engine.budget.active_retries == 0
        assert (await rig.ask()).candidate.name == "alpha"
    assert rig.upstream.times("alpha") == pytest.approx([0.0, 0.05])


# --- streams -----------------------------------------------------------------------------


async def test_a_stream_that_fails_before_its_first_chunk_falls_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    rig.upstream.script("alpha", event_stream(), event_stream(broken("alpha")))
    rig.upstream.script("beta", event_stream(CHUNK, b"data: [DONE]\n\n"))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask(stream=True)

    assert answer.candidate.name == "beta"
    assert answer.first_chunk == CHUNK
    assert rig.upstream.order() == ["alpha", "alpha", "beta"]
    assert [call.at for call in rig.upstream.calls] == pytest.approx([0.0, 0.1, 0.1])
    assert answer.metadata_headers() == [
        (b"x-arbstr-retries", b"2/alpha"),
        (b"x-arbstr-attempts", b"alpha:protocol_error, alpha:protocol_error, beta:ok"),
    ]
    assert all(call.headers["accept-encoding"] == "identity" for call in rig.upstream.calls)
    alpha_1, alpha_2, beta = rig.upstream.responses()
    assert alpha_1.closed
    assert alpha_2.closed
    # The relay owns the winning stream: still open until the answer is closed.
    assert answer.response is beta
    assert not beta.closed
    await answer.aclose()
    assert beta.closed


async def test_a_stream_answered_without_an_event_stream_is_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(retry={"max_attempts_per_provider": 1})
    rig.upstream.script("alpha", event_stream(CHUNK, content_type="application/json"))
    rig.upstream.script("beta", event_stream(CHUNK))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask(stream=True)
    assert answer.candidate.name == "beta"
    assert answer.metadata_headers()[0] == (b"x-arbstr-retries", b"1/alpha")
    failed = answer.attempts[0]
    assert failed.outcome == "protocol_error"
    assert failed.error is not None
    assert "application/json, not an event stream" in failed.error
    assert rig.upstream.responses()[0].closed


async def test_a_stream_holds_its_permit_until_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(("alpha",), extra={"alpha": "max_concurrent = 1"})
    rig.upstream.script("alpha", event_stream(CHUNK), event_stream(CHUNK))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask(stream=True)
        assert rig.in_flight("alpha") == 1
        answer.finish(ok=True, usage=None)
        assert rig.in_flight("alpha") == 0
        await answer.aclose()
        second = await rig.ask(stream=True)
        assert rig.in_flight("alpha") == 1
        await second.aclose()  # abandoned by the client
        assert rig.in_flight("alpha") == 0


async def test_a_stream_broken_midway_counts_against_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(breaker={"failure_threshold": 1, "open_ms": 1000})
    rig.upstream.script("alpha", event_stream(CHUNK))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask(stream=True)
        assert rig.board.breaker_state("alpha") is BreakerState.CLOSED
        answer.finish(ok=False, usage=None)
        await answer.aclose()
    assert rig.board.breaker_state("alpha") is BreakerState.OPEN


# --- found in review ----------------------------------------------------------------------


@attrs.define(eq=False)
class SlowToClose(FakeResponse):
    """A stalled stream whose connection takes a second to close."""

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(1.0)
        self.closed = True


async def test_the_winner_survives_the_deadline_passing_while_a_loser_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(retry={"hedge_after_ms": 500})

    async def stalled_and_slow_to_close(provider: str) -> FakeResponse:
        await trio.lowlevel.checkpoint()
        return SlowToClose(provider, 200, {"content-type": "text/event-stream"}, stall_body=True)

    rig.upstream.script("alpha", stalled_and_slow_to_close)
    rig.upstream.script("beta", after(0.2, event_stream(CHUNK)))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask(stream=True, exchange=rig.exchange(timeout_s=1.0))
    # beta answered at 0.7 s; closing alpha took until 1.7 s, past the deadline: the
    # answer still stands, its connection open and its permit held for the relay.
    assert answer.candidate.name == "beta"
    assert rig.now() == pytest.approx(1.7)
    assert rig.in_flight("beta") == 1
    await answer.aclose()
    assert rig.in_flight("beta") == 0


async def test_a_burst_of_failures_retries_only_within_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """50 requests fail together: at most max(3, 20% of 50) = 10 retry at once."""
    rig = make_rig(("alpha",), breaker={"failure_threshold": 1000})
    rig.upstream.always("alpha", after(0.01, reply(503)))
    peak = 0

    async def one() -> None:
        with contextlib.suppress(ArbstrError):
            await rig.ask(exchange=rig.exchange(timeout_s=5.0))

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rig.engine.budget.active_retries)
            await trio.sleep(0.001)

    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as watcher:
            watcher.start_soon(watch)
            async with trio.open_nursery() as requests:
                for _ in range(50):
                    requests.start_soon(one)
            watcher.cancel_scope.cancel()
    assert 3 <= peak <= 10
    assert rig.engine.budget.active_retries == 0
    assert len(rig.upstream.calls) == 50 + peak  # the rest gave up instead of retrying


async def test_a_backoff_that_would_spend_the_deadline_moves_on_instead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(retry={"backoff_base_ms": 400})
    rig.upstream.script("alpha", after(0.9, reply(503)))
    rig.upstream.script("beta", reply(200))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask(exchange=rig.exchange(timeout_s=1.0))
    assert answer.candidate.name == "beta"
    assert rig.upstream.times("beta") == pytest.approx([0.9])


async def test_a_429_saying_retry_at_once_still_moves_on_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    rig.upstream.script("alpha", reply(429, headers={"retry-after": "0"}))
    rig.upstream.script("beta", reply(200))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()
    assert answer.candidate.name == "beta"
    assert rig.upstream.order() == ["alpha", "beta"]


async def test_an_attempt_timeout_fails_over_and_counts_against_the_provider(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig(retry={"attempt_timeout_ms": 2000, "max_attempts_per_provider": 1})
    rig.upstream.script("alpha", stall())
    rig.upstream.script("beta", reply(200))
    with trio.fail_after(GUARD_S):
        answer = await rig.ask()
    assert answer.candidate.name == "beta"
    assert rig.upstream.times("beta") == pytest.approx([2.0])
    assert [(r.provider, r.outcome) for r in answer.attempts] == [
        ("alpha", "timeout"),
        ("beta", "ok"),
    ]
    [alpha] = [row for row in rig.board.snapshot(rig.config.providers) if row["name"] == "alpha"]
    assert alpha["consecutive_failures"] == 1
