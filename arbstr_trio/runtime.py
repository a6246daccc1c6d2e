"""Everything a running proxy holds for its whole life, opened and closed as one.

Both ways of running the app, ``arbstr-trio serve`` and an external
``hypercorn -k trio arbstr_trio.asgi:app``, open the runtime through
:func:`open_runtime`, so both hold the same resources and release them the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

from arbstr_trio.admission import Admission
from arbstr_trio.budget import Budgets
from arbstr_trio.catalog import ModelCatalog
from arbstr_trio.config.models import Config
from arbstr_trio.engine import Engine
from arbstr_trio.health.board import HealthBoard
from arbstr_trio.live.events import request_fields
from arbstr_trio.live.health_watch import HealthWatch
from arbstr_trio.live.hub import LiveHub
from arbstr_trio.metrics import Metrics
from arbstr_trio.spending import load_budgets
from arbstr_trio.store.reader import RequestLog
from arbstr_trio.store.records import RequestRecord
from arbstr_trio.store.writer import RecordWriter
from arbstr_trio.strategies import RouteState
from arbstr_trio.upstream import Upstream

if TYPE_CHECKING:
    from arbstr_trio.reconfigure import ConfigSource

__all__ = ["Runtime", "open_runtime"]

_CLOSE_TIMEOUT_S = 5.0
_DRAIN_TIMEOUT_S = 30.0


@attrs.define
class Runtime:
    config: Config
    upstream: Upstream
    board: HealthBoard
    engine: Engine
    catalog: ModelCatalog
    admission: Admission
    writer: RecordWriter
    request_log: RequestLog
    """The request log's read side, for /v1/stats and /v1/requests."""
    metrics: Metrics
    budgets: Budgets = attrs.field(factory=Budgets)
    """Each client key's spend and in-flight holds this UTC day and month."""
    started_at: float = attrs.field(factory=time.time)
    """Wall-clock start, for ``/health``'s uptime."""
    routes: RouteState = attrs.field(factory=RouteState)
    """What strategies remember between requests (latencies seen, round-robin turns)."""
    source: ConfigSource | None = None
    """Where the configuration came from, for the admin API and SIGHUP; None: in memory."""
    live: LiveHub = attrs.field(factory=LiveHub)
    """The live feed's subscribers (``/v1/live``); closed, ending every feed, on exit."""

    def apply(self, config: Config) -> None:
        """Make ``config`` the one the next request sees.

        The one place the running configuration is swapped. Config values are immutable,
        so a request already under way keeps the objects it took (its candidates, its
        permits) and finishes on them; breakers and limits of providers that remain are
        kept. Settings that need a restart ([server], [database], [upstream]) are the
        caller's to keep (see :mod:`arbstr_trio.reconfigure`).
        """
        self.board.reconfigure(config)
        self.engine.config = config
        self.engine.budget.percent = config.retry.budget_percent
        self.engine.budget.min_concurrency = config.retry.min_retry_concurrency
        self.catalog.reconfigure(config.providers, config.chains)
        self.metrics.reconfigure(config)
        self.config = config  # the gate and the handlers read it per request
        self.live.reconfigure(config)  # feeds of keys removed end


@asynccontextmanager
async def open_runtime(
    config: Config, source: ConfigSource | None = None
) -> AsyncIterator[Runtime]:
    """The runtime for ``config``; on exit, the request log is drained before it closes."""
    upstream = Upstream(config.upstream, idle_timeout_s=config.server.stream_idle_timeout_ms / 1000)
    board = HealthBoard(config)
    writer = RecordWriter(config.database.path, max_age_days=config.database.max_age_days)
    admission = Admission(config.server.max_in_flight, config.server.admission_wait_ms / 1000)
    metrics = Metrics(config, board=board, admission=admission, writer=writer)
    routes = RouteState()
    live = _open_live_feed(metrics)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            watch = HealthWatch(live, board)
            board.listener = watch
            nursery.start_soon(watch.run)
            request_log = await RequestLog.open(config.database.path)  # once migrated
            try:
                budgets = await load_budgets(request_log, time.time())
                yield Runtime(
                    config=config,
                    upstream=upstream,
                    board=board,
                    engine=Engine(upstream, board, config, latency=routes.latency, live=live),
                    catalog=ModelCatalog(config.providers, upstream, chains=config.chains),
                    admission=admission,
                    writer=writer,
                    request_log=request_log,
                    metrics=metrics,
                    routes=routes,
                    budgets=budgets,
                    source=source,
                    live=live,
                )
            finally:
                live.close()  # feeds end now, not when the nursery is cancelled
                board.listener = None
                watch.stop()
                await request_log.aclose()
                writer.close()
                # Drained here, shielded, rather than by the nursery's exit: if the body
                # raised, the nursery would cancel the writer halfway through its queue.
                with trio.CancelScope(shield=True), trio.move_on_after(_DRAIN_TIMEOUT_S):
                    await writer.drained()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
            await upstream.aclose()


def _open_live_feed(metrics: Metrics) -> LiveHub:
    """The live feed's hub, told of every finished request, its drops counted."""
    live = LiveHub(on_drop=metrics.count_live_drops)

    def publish_request(record: RequestRecord) -> None:
        if live.listening:
            live.publish("request", request_fields(record), ts=record.finished_at)

    metrics.request_observers.append(publish_request)
    return live
