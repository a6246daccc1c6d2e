"""Getting a usable answer for one client request: retries, fallback, hedging, deadline.

An *attempt* (:mod:`arbstr_trio.answer`) sends the request to one candidate under a
:class:`Permit` and succeeds only once the answer is known to be usable. Until then a
failure can be hidden from the client; after it, the answer belongs to the relay.

Each request runs its attempts in one nursery under one cancel scope whose deadline
is the request's. Attempts report to the request's loop over a memory channel; the
loop decides what comes next:

* a usable answer wins; every other attempt is cancelled and its connection closed;
* a client mistake (a 4xx other than 408/429) is answered at once, as the provider
  said it: no other provider will think differently;
* a provider failure (connect error, reset, timeout, 408, 5xx) is retried on the same
  provider after a jittered backoff, within ``max_attempts_per_provider`` and the
  retry budget, then falls over to the next candidate, down the whole ranked list;
* a 429 or a refused key moves on to the next candidate at once;
* with ``hedge_after_ms``, if the first attempt has no answer by then, the next
  candidate starts too, in the same nursery, and the first usable answer wins;
* when every remaining candidate is cooling down or at its limits, and the soonest
  recovery falls inside the deadline, the loop waits for it; otherwise the request
  ends with 429 (or 503 when every breaker is open) and a ``Retry-After``.

No attempt, backoff or wait outlives the deadline: when it fires, all are cancelled
and the client gets 504 with the list of attempts made.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Sequence

import attrs
import trio

from arbstr_trio.answer import Answer, AttemptFailed, try_candidate
from arbstr_trio.attempts import UNSETTLED, AttemptRecord, retries_header
from arbstr_trio.chat_request import ChatRequest
from arbstr_trio.config.models import Config
from arbstr_trio.errors import (
    ArbstrError,
    DeadlineExceeded,
    InternalError,
    NoHealthyProvider,
    RateLimited,
    UpstreamRejected,
)
from arbstr_trio.exchange import Exchange
from arbstr_trio.health.board import Blocked, BlockReason, HealthBoard, Permit, Verdict
from arbstr_trio.live.events import attempt_failed_fields
from arbstr_trio.live.hub import LiveHub
from arbstr_trio.retry import Failure, RetryBudget, backoff_s
from arbstr_trio.routing import Candidate
from arbstr_trio.strategies import LatencyTracker
from arbstr_trio.upstream import ProviderClient

__all__ = ["Engine"]

log = logging.getLogger(__name__)


@attrs.frozen
class _Result:
    answer: Answer | None = None
    failure: AttemptFailed | None = None


class Engine:
    def __init__(
        self,
        upstream: ProviderClient,
        board: HealthBoard,
        config: Config,
        *,
        rng: random.Random | None = None,
        latency: LatencyTracker | None = None,
        live: LiveHub | None = None,
    ) -> None:
        self.upstream = upstream
        self.live = live
        """Told of every failed attempt as it fails (the live feed)."""
        self.board = board
        self.config = config
        self.rng = rng or random.Random()
        self.latency = latency or LatencyTracker()
        """Fed every answer's time to first byte, for the ``lowest_latency`` strategy."""
        retry = config.retry
        self.budget = RetryBudget(retry.budget_percent, retry.min_retry_concurrency)

    async def answer(
        self,
        request: ChatRequest,
        candidates: Sequence[Candidate],
        exchange: Exchange,
        *,
        hedge_after_ms: int | None = None,
    ) -> Answer:
        """A usable answer within ``exchange.deadline``, or the error that says why not.

        ``hedge_after_ms`` is the route's hedge delay (a policy's); None: the global one.
        """
        run = _RequestRun(self, request, candidates, exchange)
        if hedge_after_ms is not None:
            run.hedge_after_ms = hedge_after_ms
        self.budget.active_requests += 1
        try:
            with trio.CancelScope(deadline=exchange.deadline) as deadline:
                return await run.race(deadline)
        finally:
            self.budget.active_requests -= 1
        assert deadline.cancelled_caught  # the only way out of the block without an answer
        raise run.deadline_exceeded()


class _RequestRun:
    """One request's attempts, from the first to the answer or the final error."""

    def __init__(
        self,
        engine: Engine,
        request: ChatRequest,
        candidates: Sequence[Candidate],
        exchange: Exchange,
    ) -> None:
        self.engine = engine
        self.request = request
        self.candidates = candidates
        self.exchange = exchange
        prompt, completion = request.expected_tokens(
            engine.config.routing.default_completion_tokens
        )
        self.tokens = prompt + completion
        self.records = exchange.attempts
        self.attempts: Counter[str] = Counter()
        self.excluded: set[str] = set()
        """Not to be tried again for this request (a refused key, no retry budget)."""
        self.rate_limited: set[str] = set()
        """Answered 429 last: tried again, if at all, once its cooldown is over."""
        self.backed_off: Counter[str] = Counter()
        """Per provider, the attempt count the last backoff was slept for."""
        self.in_flight: set[str] = set()
        self.last_failure: AttemptFailed | None = None
        self.blocked: list[Blocked] = []
        self.hedge_after_ms: int | None = engine.config.retry.hedge_after_ms

    # --- the loop ------------------------------------------------------------------

    async def race(self, deadline: trio.CancelScope) -> Answer:
        send, receive = trio.open_memory_channel[_Result](math.inf)
        winner: Answer | None = None
        final: ArbstrError | None = None
        try:
            async with trio.open_nursery() as nursery:
                winner, final = await self._drive(nursery, send, receive)
                if winner is not None:
                    # The answer is in: the losers' (bounded) cleanup must not cost it.
                    deadline.deadline = math.inf
                nursery.cancel_scope.cancel()
        except BaseException:
            if winner is not None:  # the client left while the losers were cleaned up
                await winner.aclose()
            raise
        finally:
            self._mark_unfinished("hedge_lost" if winner is not None else "cancelled")
            send.close()
            # A second answer that arrived as the first won must not hold its connection.
            # (No checkpoints here: this also runs while the deadline is cancelling us.)
            while True:
                try:
                    result = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if result.answer is not None and result.answer is not winner:
                    await result.answer.aclose()
        if winner is not None:
            return winner
        assert final is not None
        if len(self.records) > 1 and not isinstance(final, UpstreamRejected):
            # A provider's own 4xx stays in its words; the attempts are in the details.
            final.message += "; attempts: " + _attempt_list(self.records)
        raise self._with_attempts(final)

    async def _drive(
        self,
        nursery: trio.Nursery,
        send: trio.MemorySendChannel[_Result],
        receive: trio.MemoryReceiveChannel[_Result],
    ) -> tuple[Answer | None, ArbstrError | None]:
        if not await self._launch(nursery, send):
            return None, self._give_up()
        running = 1
        hedge_ms = self.hedge_after_ms
        hedge_at = trio.current_time() + hedge_ms / 1000 if hedge_ms else math.inf
        while True:
            with trio.move_on_at(hedge_at if running == 1 else math.inf) as hedge_timer:
                result = await receive.receive()
            if hedge_timer.cancelled_caught:
                hedge_at = math.inf  # one hedge per request
                if await self._launch(nursery, send, hedge=True):
                    running += 1
                continue
            running -= 1
            if result.answer is not None:
                return result.answer, None
            failure = result.failure
            assert failure is not None
            if failure.kind in (Failure.CLIENT, Failure.OURS):
                return None, failure.error
            hedge_at = math.inf  # after a failure, fallback decides what runs next
            if running:
                continue  # the other attempt may yet answer
            if not await self._launch(nursery, send):
                return None, self._give_up()
            running += 1

    async def _launch(
        self, nursery: trio.Nursery, send: trio.MemorySendChannel[_Result], *, hedge: bool = False
    ) -> bool:
        """Start the best attempt there is, waiting for capacity when that is worth it.

        A hedge never waits or retries: it is an extra, taken only if it is there now.
        """
        max_attempts = self.engine.config.retry.max_attempts_per_provider
        while True:
            blocked: list[Blocked] = []
            for candidate in self._in_preference_order():
                name = candidate.name
                if name in self.excluded or name in self.in_flight:
                    continue
                if self.attempts[name] >= max_attempts:
                    continue
                if self.attempts[name] == 0:
                    permit = self.engine.board.acquire(name, candidate.upstream_model, self.tokens)
                    if isinstance(permit, Blocked):
                        blocked.append(permit)
                        continue
                    self._start(nursery, send, candidate, permit, is_retry=False, hedge=hedge)
                    return True
                if hedge:
                    continue  # a hedge is an extra: it never retries
                # Looked at first, so no backoff is slept for a provider that is shut anyway.
                shut = self.engine.board.blocked(name, candidate.upstream_model, self.tokens)
                if shut is not None:
                    blocked.append(shut)
                    continue
                if await self._retry(nursery, send, candidate, blocked):
                    return True
            if hedge or not blocked:
                self.blocked = blocked
                return False
            waitable = [b for b in blocked if b.reason is not BlockReason.BREAKER_OPEN]
            soonest = min((b.until for b in waitable), default=math.inf)
            # A full provider (``inf``) frees up whenever a permit is released.
            on_release = any(math.isinf(b.until) for b in waitable)
            if not waitable or (soonest > self.exchange.deadline and not on_release):
                self.blocked = blocked
                return False
            # Everything usable is cooling down or full: wait for the soonest recovery
            # (or a permit to be released), inside the deadline, then look again.
            with trio.move_on_at(soonest):
                await self.engine.board.wait_for_capacity()

    def _in_preference_order(self) -> list[Candidate]:
        """The ranking, with providers that just answered 429 last: a 429 moves on."""
        if not self.rate_limited:
            return list(self.candidates)
        return sorted(self.candidates, key=lambda c: c.name in self.rate_limited)

    async def _retry(
        self,
        nursery: trio.Nursery,
        send: trio.MemorySendChannel[_Result],
        candidate: Candidate,
        blocked: list[Blocked],
    ) -> bool:
        """Try ``candidate`` again after its backoff, if the budget and the deadline allow."""
        name = candidate.name
        budget = self.engine.budget
        if not budget.allows_retry():
            self.excluded.add(name)
            return False
        pause = 0.0
        if self.backed_off[name] < self.attempts[name] and name not in self.rate_limited:
            # Once per retry (a wait for capacity may bring us back here), and not after
            # a 429: its cooldown, now over, was the wait.
            pause = self._backoff_s(self.attempts[name])
            if trio.current_time() + pause >= self.exchange.deadline:
                self.excluded.add(name)  # the backoff alone would spend the deadline
                return False
        # Counted before the backoff, so a burst of failures cannot all pass the check.
        budget.active_retries += 1
        try:
            if pause:
                await trio.sleep(pause)
            self.backed_off[name] = self.attempts[name]
            permit = self.engine.board.acquire(name, candidate.upstream_model, self.tokens)
        except BaseException:
            budget.active_retries -= 1
            raise
        if isinstance(permit, Blocked):
            budget.active_retries -= 1
            blocked.append(permit)
            return False
        self._start(nursery, send, candidate, permit, is_retry=True, hedge=False)
        return True

    def _start(
        self,
        nursery: trio.Nursery,
        send: trio.MemorySendChannel[_Result],
        candidate: Candidate,
        permit: Permit,
        *,
        is_retry: bool,
        hedge: bool,
    ) -> None:
        record = AttemptRecord(candidate.name, trio.current_time(), hedge=hedge)
        self.records.append(record)
        self.attempts[candidate.name] += 1
        self.in_flight.add(candidate.name)  # a retry's budget slot is already taken
        nursery.start_soon(self._attempt, candidate, permit, record, send, is_retry)

    async def _attempt(
        self,
        candidate: Candidate,
        permit: Permit,
        record: AttemptRecord,
        send: trio.MemorySendChannel[_Result],
        is_retry: bool,
    ) -> None:
        handed_over = False
        try:
            answer = await try_candidate(
                self.engine.upstream,
                self.request,
                self.exchange,
                candidate,
                permit,
                attempt_timeout_ms=self.engine.config.retry.attempt_timeout_ms,
            )
        except AttemptFailed as failure:
            permit.settle(failure.verdict, headers=failure.headers)
            self._record(record, failure.outcome, failure.status, failure.error.message)
            self._publish_failure(candidate, record)
            self._note_failure(candidate.name, failure)
            send.send_nowait(_Result(failure=failure))
        except Exception as exc:
            # A bug of ours: the provider is not to blame, but the request cannot go on.
            log.exception("attempt on provider %r failed unexpectedly", candidate.name)
            permit.settle(Verdict.ABANDONED)
            self._record(record, "internal_error", None, str(exc))
            self._publish_failure(candidate, record)
            error = InternalError(
                f"internal error; report request id {self.exchange.request_id} with the proxy's log"
            )
            bug = AttemptFailed(Failure.OURS, error, Verdict.ABANDONED, "internal_error")
            send.send_nowait(_Result(failure=bug))
        else:
            self._record(record, "ok", 200, None)
            self.engine.latency.observe(
                candidate.name, candidate.upstream_model, answer.headers_at - record.started_at
            )
            answer.attempts = self.records
            send.send_nowait(_Result(answer=answer))
            # A stream's permit now belongs to its answer, settled when the stream ends.
            handed_over = answer.permit is permit
        finally:
            if not handed_over:
                permit.settle(Verdict.ABANDONED)  # cancelled: no verdict (no-op otherwise)
            self.in_flight.discard(candidate.name)
            if is_retry:
                self.engine.budget.active_retries -= 1

    def _publish_failure(self, candidate: Candidate, record: AttemptRecord) -> None:
        live = self.engine.live
        if live is not None and live.listening:
            fields = attempt_failed_fields(
                self.exchange.request_id, candidate.upstream_model, record
            )
            live.publish("attempt_failed", fields)

    def _note_failure(self, provider: str, failure: AttemptFailed) -> None:
        self.last_failure = failure
        if failure.status == 429:
            # Not excluded: its cooldown now blocks it, and if every candidate ends up
            # cooling down, the request may wait for the first to recover.
            self.rate_limited.add(provider)
        elif failure.kind is Failure.NEXT_PROVIDER:
            self.excluded.add(provider)
        else:
            self.rate_limited.discard(provider)

    def _backoff_s(self, retry: int) -> float:
        config = self.engine.config.retry
        return backoff_s(
            retry, config.backoff_base_ms / 1000, config.backoff_max_ms / 1000, self.engine.rng
        )

    @staticmethod
    def _record(record: AttemptRecord, outcome: str, status: int | None, error: str | None) -> None:
        record.outcome = outcome
        record.status = status
        record.error = error
        record.ended_at = trio.current_time()

    def _mark_unfinished(self, outcome: str) -> None:
        now = trio.current_time()
        for record in self.records:
            if record.outcome == UNSETTLED:
                record.outcome = outcome
                record.ended_at = now

    # --- endings ---------------------------------------------------------------------

    def _give_up(self) -> ArbstrError:
        """The error for a request no candidate could answer."""
        failure = self.last_failure
        if failure is not None and failure.status != 429:
            return failure.error  # a provider failed: say how (the attempts are attached)
        now = trio.current_time()
        if failure is None and all(b.reason is BlockReason.BREAKER_OPEN for b in self.blocked):
            wait = _retry_after([b.until for b in self.blocked], now)
            return NoHealthyProvider(
                "every provider for this model is failing and its circuit breaker is open; "
                f"the next probe is in {wait} s",
                headers=[(b"retry-after", str(wait).encode())],
            )
        board = self.engine.board
        recoveries = [b.until for b in self.blocked] + [
            board.model_limits(c.name, c.upstream_model).cooldown_until for c in self.candidates
        ]
        wait = _retry_after([at for at in recoveries if at > now], now)
        return RateLimited(
            f"every provider for this model is rate limited or at its limits; retry in {wait} s",
            headers=[(b"retry-after", str(wait).encode())],
        )

    def deadline_exceeded(self) -> ArbstrError:
        timeout_ms = self.exchange.timeout_ms()
        tried = _attempt_list(self.records) or "none"
        error = DeadlineExceeded(
            f"no provider answered within the {timeout_ms} ms deadline; attempts: {tried}"
        )
        return self._with_attempts(error)

    def _with_attempts(self, error: ArbstrError) -> ArbstrError:
        error.details["attempts"] = [record.describe() for record in self.records]
        retries = retries_header(self.records)
        if retries:
            error.add_headers((b"x-arbstr-retries", retries.encode()))
        return error


def _attempt_list(records: Sequence[AttemptRecord]) -> str:
    return ", ".join(f"{record.provider} {record.outcome}" for record in records)


def _retry_after(recoveries: Sequence[float], now: float) -> int:
    """Whole seconds until the soonest finite recovery (at least 1)."""
    finite = [at for at in recoveries if not math.isinf(at)]
    return max(1, math.ceil(min(finite) - now)) if finite else 1
