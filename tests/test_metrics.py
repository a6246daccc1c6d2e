"""The metrics: counters fed from request records, and state read at scrape time.

The health board here runs on a clock moved by hand, so a breaker turning half-open
with no request in between shows that the gauges are read at scrape, not on events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families

from arbstr_trio.admission import Admission
from arbstr_trio.config.models import Config
from arbstr_trio.health.board import HealthBoard, Permit, Verdict
from arbstr_trio.metrics import Metrics
from arbstr_trio.store.records import AttemptRow, RequestRecord
from arbstr_trio.store.writer import RecordWriter
from tests.conftest import config_from

CONFIG = """
[[providers]]
name = "alpha"
url = "http://alpha.example/v1"
models = ["gpt-4o-mini"]

[providers.model_map]
fast = "gpt-4o-mini-2024"

[[providers]]
name = "beta"
url = "http://beta.example/v1"

[breaker]
failure_threshold = 2
open_ms = 10000

[ratelimit]
default_cooldown_ms = 5000
"""


@attrs.define
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class Rig:
    metrics: Metrics
    board: HealthBoard
    clock: FakeClock
    admission: Admission
    writer: RecordWriter
    config: Config

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def rig(tmp_path: Path, config: str = CONFIG) -> Rig:
    parsed = config_from(config)
    clock = FakeClock()
    board = HealthBoard(parsed, clock=clock, wall_clock=lambda: 1_700_000_000.0 + clock.now)
    admission = Admission(4, 0.0)
    writer = RecordWriter(str(tmp_path / "log.db"))
    metrics = Metrics(parsed, board=board, admission=admission, writer=writer)
    return Rig(metrics, board, clock, admission, writer, parsed)


def record(**changes: Any) -> RequestRecord:
    """An answered non-streaming request on alpha: 2 attempts, 10+20 tokens, 1.234 sats."""
    base = RequestRecord(
        request_id="r1",
        started_at=1_700_000_000.0,
        finished_at=1_700_000_000.3,
        model="gpt-4o-mini",
        provider="alpha",
        status=200,
        success=True,
        prompt_tokens=10,
        completion_tokens=20,
        cost_msat=1234,
        latency_ms=300,
        ttfb_ms=80,
        attempts=(
            AttemptRow(provider="alpha", started_at=0.0, duration_ms=5, outcome="http_503"),
            AttemptRow(provider="alpha", started_at=0.1, duration_ms=70, outcome="ok"),
        ),
    )
    return attrs.evolve(base, **changes)


def test_an_answered_request_counts_everywhere(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.metrics.observe(record())
    r.metrics.observe(record(request_id="r2", latency_ms=3_000, ttfb_ms=2_000, cost_msat=766))

    ok = {"provider": "alpha", "model": "gpt-4o-mini", "status": "200"}
    assert r.value("arbstr_requests_total", **ok) == 2
    assert r.value("arbstr_tokens_total", provider="alpha", kind="prompt") == 20
    assert r.value("arbstr_tokens_total", provider="alpha", kind="completion") == 40
    assert r.value("arbstr_cost_sats_total", provider="alpha") == 2.0
    assert r.value("arbstr_attempts_total", provider="alpha", outcome="http_503") == 2
    assert r.value("arbstr_attempts_total", provider="alpha", outcome="ok") == 2

    latency = {"provider": "alpha", "streaming": "false"}
    assert r.value("arbstr_request_duration_seconds_count", **latency) == 2
    assert r.value("arbstr_request_duration_seconds_sum", **latency) == 3.3
    assert r.value("arbstr_request_duration_seconds_bucket", **latency, le="0.5") == 1
    assert r.value("arbstr_request_duration_seconds_bucket", **latency, le="5.0") == 2
    assert r.value("arbstr_ttfb_seconds_bucket", provider="alpha", le="0.1") == 1
    assert r.value("arbstr_ttfb_seconds_bucket", provider="alpha", le="2.5") == 2


def test_a_request_no_provider_answered_is_provider_none_with_no_usage(tmp_path: Path) -> None:
    r = rig(tmp_path)
    failed = record(
        provider=None,
        status=502,
        success=False,
        prompt_tokens=None,
        completion_tokens=None,
        cost_msat=None,
        ttfb_ms=None,
        streaming=True,
        attempts=(AttemptRow(provider="alpha", started_at=0.0, duration_ms=5, outcome="timeout"),),
    )
    r.metrics.observe(failed)

    labels = {"provider": "none", "model": "gpt-4o-mini", "status": "502"}
    assert r.value("arbstr_requests_total", **labels) == 1
    assert r.value("arbstr_attempts_total", provider="alpha", outcome="timeout") == 1
    assert r.value("arbstr_request_duration_seconds_count", provider="none", streaming="true") == 1
    assert r.value("arbstr_ttfb_seconds_count", provider="none") is None
    assert r.value("arbstr_tokens_total", provider="none", kind="prompt") is None
    assert r.value("arbstr_cost_sats_total", provider="none") is None


def test_answered_without_usage_counts_the_request_but_no_cost(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.metrics.observe(record(prompt_tokens=None, completion_tokens=None, cost_msat=None))
    assert r.value("arbstr_requests_total", provider="alpha", model="gpt-4o-mini", status="200")
    assert r.value("arbstr_cost_sats_total", provider="alpha") == 0
    assert r.value("arbstr_tokens_total", provider="alpha", kind="prompt") == 0


def test_model_label_cannot_be_inflated_by_clients(tmp_path: Path) -> None:
    r = rig(tmp_path)
    unanswered = {"provider": None, "status": 404, "success": False, "attempts": ()}
    for made_up in ("gpt-9", "gpt-10", "x" * 200):
        r.metrics.observe(record(model=made_up, **unanswered))
    r.metrics.observe(record(model="fast", **unanswered))  # a model_map name is known
    r.metrics.observe(record(**unanswered | {"model": None, "status": 400}))
    r.metrics.observe(record(model="discovered", provider="beta"))  # beta answered for it

    requests = {
        (s.labels["provider"], s.labels["model"], s.labels["status"]): s.value
        for family in r.metrics.registry.collect()
        if family.name == "arbstr_requests"
        for s in family.samples
        if s.name == "arbstr_requests_total"
    }
    assert requests == {
        ("none", "other", "404"): 3,
        ("none", "fast", "404"): 1,
        ("none", "none", "400"): 1,
        ("beta", "discovered", "200"): 1,
    }


async def test_breaker_cooldowns_and_in_flight_are_read_at_scrape_time(tmp_path: Path) -> None:
    r = rig(tmp_path)
    assert r.value("arbstr_breaker_state", provider="alpha") == 0
    assert r.value("arbstr_requests_in_flight") == 0

    for _ in range(2):  # failure_threshold
        permit = r.board.acquire("alpha", "gpt-4o-mini", 10)
        assert isinstance(permit, Permit)
        permit.settle(Verdict.FAILURE)
    assert r.value("arbstr_breaker_state", provider="alpha") == 2
    assert r.value("arbstr_breaker_consecutive_failures", provider="alpha") == 2
    assert r.value("arbstr_breaker_state", provider="beta") == 0

    r.clock.now += 10.0  # open_ms: nothing happens but time, and the gauge follows
    assert r.value("arbstr_breaker_state", provider="alpha") == 1

    permit = r.board.acquire("beta", "m1", 10)
    assert isinstance(permit, Permit)
    permit.settle(Verdict.RATE_LIMITED)
    permit = r.board.acquire("beta", "m2", 10)
    assert isinstance(permit, Permit)
    permit.settle(Verdict.RATE_LIMITED)
    assert r.value("arbstr_cooldowns_active", provider="beta") == 2
    r.clock.now += 5.0
    assert r.value("arbstr_cooldowns_active", provider="beta") == 0

    async with r.admission.slot(), r.admission.slot():
        assert r.value("arbstr_requests_in_flight") == 2
    assert r.value("arbstr_requests_in_flight") == 0


async def test_writer_queue_and_rows_are_read_at_scrape_time(tmp_path: Path) -> None:
    r = rig(tmp_path)
    for n in range(3):
        await r.writer.record(record(request_id=f"r{n}"))
    assert r.value("arbstr_writer_queue_depth") == 3
    assert r.value("arbstr_writer_rows_written_total") == 0
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(r.writer.run)
            await r.writer.flushed(3)
            r.writer.close()
    assert r.value("arbstr_writer_queue_depth") == 0
    assert r.value("arbstr_writer_rows_written_total") == 3


def test_each_proxy_has_its_own_registry(tmp_path: Path) -> None:
    first, second = rig(tmp_path), rig(tmp_path)
    first.metrics.observe(record())
    labels = {"provider": "alpha", "model": "gpt-4o-mini", "status": "200"}
    assert first.value("arbstr_requests_total", **labels) == 1
    assert second.value("arbstr_requests_total", **labels) is None


def test_exposition_parses_with_prometheus_parser(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.metrics.observe(record())
    text = r.metrics.exposition().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert {
        "arbstr_requests": "counter",
        "arbstr_request_duration_seconds": "histogram",
        "arbstr_ttfb_seconds": "histogram",
        "arbstr_attempts": "counter",
        "arbstr_tokens": "counter",
        "arbstr_cost_sats": "counter",
        "arbstr_requests_in_flight": "gauge",
        "arbstr_breaker_state": "gauge",
        "arbstr_breaker_consecutive_failures": "gauge",
        "arbstr_cooldowns_active": "gauge",
        "arbstr_writer_queue_depth": "gauge",
        "arbstr_writer_rows_written": "counter",
    }.items() <= {name: family.type for name, family in families.items()}.items()
