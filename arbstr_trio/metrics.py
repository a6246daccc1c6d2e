"""What ``GET /metrics`` exposes to Prometheus: what requests did, and what state is in.

Two kinds of numbers, gathered two ways:

* **What happened** (requests, attempts, tokens, sats, latencies) is counted from each
  finished request's :class:`~arbstr_trio.store.records.RequestRecord`, the same record
  the request log writes, by :meth:`Metrics.observe`, so the counters and the log's rows
  agree. It runs once per request on the hot path: the labelled children are looked
  up once per label set and kept, which makes it a few dict lookups and increments.
* **What is** (breakers, cooldowns, in-flight requests, the writer's queue) is read at
  scrape time by :class:`StateCollector`, straight from the health board, admission and
  writer, never mirrored into gauges on events: a gauge updated on events goes stale
  when nothing happens (a breaker turns half-open by the clock, not by a request).

Each :class:`Metrics` has its own ``CollectorRegistry`` rather than the process-wide
default: tests start many proxies in one process, and each must count only its own.

Breaker state is one gauge per provider, 0 closed, 1 half-open, 2 open, rather than
``prometheus_client.Enum``'s one series per state: ``arbstr_breaker_state > 0`` is the
whole alert, and a graph of it shows the transitions.

Label values stay bounded whatever clients send: the ``model`` label is the client's
model only when a configured provider lists it or a provider answered for it, else
``other`` (``none`` when the body had no model), so a client inventing model names
cannot create series without end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arbstr_trio.admission import Admission
from arbstr_trio.config.models import Config, ProviderConfig
from arbstr_trio.health.board import HealthBoard
from arbstr_trio.health.breaker import BreakerState
from arbstr_trio.store.records import RequestRecord
from arbstr_trio.store.writer import RecordWriter

__all__ = ["BREAKER_STATE_VALUES", "CONTENT_TYPE", "LATENCY_BUCKETS_S", "Metrics"]

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
"""From a cached short answer (50 ms) to a long generated stream (two minutes)."""

BREAKER_STATE_VALUES = {
    BreakerState.CLOSED.value: 0.0,
    BreakerState.HALF_OPEN.value: 1.0,
    BreakerState.OPEN.value: 2.0,
}

NO_PROVIDER = "none"
"""The ``provider`` label of a request no provider answered."""
NO_MODEL = "none"
OTHER_MODEL = "other"
_MAX_OTHER_MODELS = 100


class Metrics:
    """The proxy's Prometheus registry: counters fed by :meth:`observe`, state read live."""

    def __init__(
        self,
        config: Config,
        *,
        board: HealthBoard,
        admission: Admission,
        writer: RecordWriter,
    ) -> None:
        self.registry = CollectorRegistry()
        self._known_models: frozenset[str] = frozenset(
            model for p in config.providers for model in (*p.models, *p.model_map)
        )
        self._answered_models: set[str] = set()
        """Models outside the config that a provider answered for, up to a bound."""
        self._requests = Counter(
            "arbstr_requests",
            "Chat requests finished, by the provider that answered, model and HTTP status.",
            ["provider", "model", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "arbstr_request_duration_seconds",
            "Chat request arrival to the end of its answer (a stream's last byte).",
            ["provider", "streaming"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._ttfb = Histogram(
            "arbstr_ttfb_seconds",
            "Chat request arrival to the answering provider's response headers.",
            ["provider"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._attempts = Counter(
            "arbstr_attempts",
            "Attempts made on providers, by how each ended.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self._tokens = Counter(
            "arbstr_tokens",
            "Tokens providers reported in their usage.",
            ["provider", "kind"],
            registry=self.registry,
        )
        self._sats = Counter(
            "arbstr_cost_sats",
            "What answers cost, in satoshis (millisatoshi precision).",
            ["provider"],
            registry=self.registry,
        )
        self._live_dropped = Counter(
            "arbstr_live_events_dropped",
            "Live feed events dropped for subscribers that read too slowly (oldest first).",
            registry=self.registry,
        )
        self.request_observers: list[Callable[[RequestRecord], None]] = []
        """Also handed each finished request's record by :meth:`observe` (the live feed):
        observe() is the one call every finished chat request makes, so the feed, the
        counters and the request log all tell of the same requests."""
        self._state = StateCollector(config.providers, board, admission, writer)
        self.registry.register(self._state)
        # Children per label set, so observe() skips labels()' validation and lock.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[tuple[str, bool], Histogram] = {}
        self._attempt_children: dict[tuple[str, str], Counter] = {}
        self._provider_children: dict[str, _ProviderChildren] = {}

    def reconfigure(self, config: Config) -> None:
        """Known models and the providers whose state is reported, from a new config."""
        self._known_models = frozenset(
            model for p in config.providers for model in (*p.models, *p.model_map)
        )
        self._state.providers = tuple(config.providers)

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request; called once per request, so kept to lookups."""
        provider = NO_PROVIDER if record.provider is None else record.provider
        model = self._model_label(record)
        key = (provider, model, record.status)
        requests = self._request_children.get(key)
        if requests is None:
            requests = self._request_children[key] = self._requests.labels(
                provider, model, str(record.status)
            )
        requests.inc()

        latency_key = (provider, record.streaming)
        latency = self._latency_children.get(latency_key)
        if latency is None:
            latency = self._latency_children[latency_key] = self._latency.labels(
                provider, "true" if record.streaming else "false"
            )
        latency.observe(record.latency_ms / 1000)

        if record.provider is not None:
            children = self._provider_children.get(provider)
            if children is None:
                children = self._provider_children[provider] = _ProviderChildren(
                    provider, ttfb=self._ttfb, tokens=self._tokens, sats=self._sats
                )
            if record.ttfb_ms is not None:
                children.ttfb.observe(record.ttfb_ms / 1000)
            if record.prompt_tokens is not None:
                children.prompt_tokens.inc(record.prompt_tokens)
            if record.completion_tokens is not None:
                children.completion_tokens.inc(record.completion_tokens)
            if record.cost_msat is not None:
                children.sats.inc(record.cost_msat / 1000)

        for attempt in record.attempts:
            attempt_key = (attempt.provider, attempt.outcome)
            attempts = self._attempt_children.get(attempt_key)
            if attempts is None:
                attempts = self._attempt_children[attempt_key] = self._attempts.labels(*attempt_key)
            attempts.inc()

        for observer in self.request_observers:
            observer(record)

    def count_live_drops(self, count: int) -> None:
        """Live feed events a slow subscriber lost (see :mod:`arbstr_trio.live.hub`)."""
        self._live_dropped.inc(count)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes, as of now.

        Runs on trio's thread, not a worker's: the state collector reads the health
        board, whose clock is trio's; and it is fast (under a millisecond for a
        few providers), so a worker thread would cost more than it saves.
        """
        return prometheus_client.generate_latest(self.registry)

    def _model_label(self, record: RequestRecord) -> str:
        """The model as a label: configured models, and up to a bound of others that a
        provider answered for (an any-model provider answers whatever a client invents,
        and every label value is a series kept for the life of the process)."""
        model = record.model
        if model is None:
            return NO_MODEL
        if model in self._known_models:
            return model
        if record.provider is not None and len(self._answered_models) < _MAX_OTHER_MODELS:
            self._answered_models.add(model)
            self._known_models = self._known_models | {model}
            return model
        return OTHER_MODEL


class _ProviderChildren:
    """One answering provider's children of the per-provider series."""

    __slots__ = ("completion_tokens", "prompt_tokens", "sats", "ttfb")

    def __init__(self, provider: str, *, ttfb: Histogram, tokens: Counter, sats: Counter) -> None:
        self.ttfb = ttfb.labels(provider)
        self.prompt_tokens = tokens.labels(provider, "prompt")
        self.completion_tokens = tokens.labels(provider, "completion")
        self.sats = sats.labels(provider)


class StateCollector(Collector):
    """Gauges read at scrape time from the objects that hold the state."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        board: HealthBoard,
        admission: Admission,
        writer: RecordWriter,
    ) -> None:
        self.providers = tuple(providers)
        self._board = board
        self._admission = admission
        self._writer = writer

    def describe(self) -> Iterator[Metric]:
        """The names only, so registering does not read state (outside trio, at that)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        in_flight, breaker, failures, cooldowns, queue, rows = self._families()
        in_flight.add_metric([], self._admission.in_flight)
        for provider in self._board.snapshot(self.providers):
            name = [provider["name"]]
            breaker.add_metric(name, BREAKER_STATE_VALUES[provider["breaker"]])
            failures.add_metric(name, provider["consecutive_failures"])
            cooldowns.add_metric(name, len(provider["cooldowns"]))
        queue.add_metric([], self._writer.queue_depth)
        rows.add_metric([], self._writer.rows_written)
        yield from (in_flight, breaker, failures, cooldowns, queue, rows)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "arbstr_requests_in_flight", "Chat requests being served now (admitted)."
            ),
            GaugeMetricFamily(
                "arbstr_breaker_state",
                "Circuit breaker state now: 0 closed, 1 half-open, 2 open.",
                labels=["provider"],
            ),
            GaugeMetricFamily(
                "arbstr_breaker_consecutive_failures",
                "Consecutive failures counted toward opening the breaker.",
                labels=["provider"],
            ),
            GaugeMetricFamily(
                "arbstr_cooldowns_active",
                "Models of the provider in a 429 cooldown now.",
                labels=["provider"],
            ),
            GaugeMetricFamily(
                "arbstr_writer_queue_depth", "Request records accepted and not yet written."
            ),
            CounterMetricFamily(
                "arbstr_writer_rows_written", "Request rows written to the log since start."
            ),
        )
