"""``GET /metrics`` through the real server: what clients saw, what the log holds, and
what Prometheus reads all agree."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from typing import Any

import prometheus_client
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from arbstr_trio.server import Started
from tests.conftest import TWO_PROVIDERS, chat_body, http_client, openai_client, running_proxy

# One failure opens a breaker, so the fallback below leaves alpha open.
CONFIG = TWO_PROVIDERS + "\n[breaker]\nfailure_threshold = 1\n"
KNOWN_MODELS = {"gpt-4o-mini", "gpt-4o"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Sample values of ``name`` keyed by the values of ``labels``, summed, zeros left out."""
    found: dict[tuple[str, ...], float] = {}
    for (sample, label_set), value in samples.items():
        if sample == name and value:
            key = tuple(dict(label_set)[label] for label in labels)
            found[key] = found.get(key, 0.0) + value
    return found


def query(started: Started, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{started.config.database.path}?mode=ro", uri=True)
    with contextlib.closing(db):
        return db.execute(sql).fetchall()


async def test_metrics_counters_match_the_responses_and_the_request_log() -> None:
    async with running_proxy(CONFIG) as started, http_client(started) as client:
        sdk = openai_client(started)
        seen: Counter[tuple[str, str, str]] = Counter()

        for _ in range(2):
            answered = await sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            seen["alpha", "gpt-4o-mini", "200"] += 1
            assert answered.headers["x-arbstr-provider"] == "alpha"

        stream = await sdk.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].model_extra is not None
        assert chunks[-1].model_extra["arbstr"]["provider"] == "alpha"
        seen["alpha", "gpt-4o", "200"] += 1

        unknown = await client.post("/v1/chat/completions", json=chat_body(model="gpt-9"))
        assert unknown.status_code == 404
        seen["none", "other", "404"] += 1
        unreadable = await client.post("/v1/chat/completions", content=b"{oops")
        assert unreadable.status_code == 400
        seen["none", "none", "400"] += 1

        # alpha fails (and its breaker opens), beta answers.
        fallback = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-mock-alpha": "status=503"}
        )
        assert fallback.status_code == 200
        assert fallback.headers["x-arbstr-provider"] == "beta"
        seen["beta", "gpt-4o-mini", "200"] += 1
        await sdk.close()

        scraped = await client.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
        samples = parse(scraped.text)
        assert by(samples, "arbstr_breaker_state", "provider") == {("alpha",): 2}  # beta: 0
        assert by(samples, "arbstr_breaker_consecutive_failures", "provider") == {("alpha",): 1}

        # beta fails too, with alpha's breaker open: no provider answers.
        failed = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-mock": "status=503"}
        )
        assert failed.status_code == 502
        seen["none", "gpt-4o-mini", "502"] += 1

        total = sum(seen.values())
        with trio.fail_after(5):
            await started.runtime.writer.flushed(total)
        samples = parse((await client.get("/metrics")).text)

        # What the clients saw.
        assert by(samples, "arbstr_requests_total", "provider", "model", "status") == seen
        assert by(samples, "arbstr_breaker_state", "provider") == {("alpha",): 2, ("beta",): 2}
        assert by(samples, "arbstr_writer_rows_written_total") == {(): total}
        assert by(samples, "arbstr_writer_queue_depth") == {}
        assert by(samples, "arbstr_requests_in_flight") == {}  # /metrics itself is not a chat

        # What the request log holds, row for row (read before the proxy stops: the log's
        # directory goes with it).
        logged = Counter(
            {
                (provider or "none", _model_label(model, provider), str(status)): count
                for provider, model, status, count in query(
                    started,
                    "SELECT provider, model, status, COUNT(*) FROM requests "
                    "GROUP BY provider, model, status",
                )
            }
        )
        assert logged == seen
        attempts = Counter(
            {
                (provider, outcome): count
                for provider, outcome, count in query(
                    started,
                    "SELECT provider, outcome, COUNT(*) FROM attempts GROUP BY provider, outcome",
                )
            }
        )
        assert by(samples, "arbstr_attempts_total", "provider", "outcome") == attempts
        assert attempts[("alpha", "http_503")] == 1
        assert attempts[("beta", "http_503")] == 1

        usage = query(
            started,
            "SELECT provider, SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_msat),"
            " COUNT(ttfb_ms) FROM requests WHERE provider IS NOT NULL GROUP BY provider",
        )
        assert len(usage) == 2
        for provider, prompt, completion, msat, with_ttfb in usage:
            tokens = by(samples, "arbstr_tokens_total", "provider", "kind")
            assert tokens[provider, "prompt"] == prompt > 0
            assert tokens[provider, "completion"] == completion > 0
            sats = by(samples, "arbstr_cost_sats_total", "provider")[(provider,)]
            assert sats == pytest.approx(msat / 1000, abs=1e-9)
            assert by(samples, "arbstr_ttfb_seconds_count", "provider")[(provider,)] == with_ttfb
        latency = by(samples, "arbstr_request_duration_seconds_count", "streaming")
        assert latency == {("false",): total - 1, ("true",): 1}


def _model_label(model: str | None, provider: str | None) -> str:
    if model is None:
        return "none"
    return model if provider is not None or model in KNOWN_MODELS else "other"
