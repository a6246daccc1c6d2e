"""``/v1/stats`` and ``/v1/requests`` through the real server, after real traffic.

A mix of requests goes through the proxy (the openai SDK and httpx; answered, streamed,
cut off midway, failed on every provider, refused as the client's fault); then the
read endpoints must agree with what the clients saw, for every filter and grouping,
and refuse bad parameters with a 400 that names them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import httpx
import openai
import pytest
import trio

from arbstr_trio.server import Started
from tests.conftest import TWO_PROVIDERS, chat_body, http_client, openai_client, running_proxy


@attrs.frozen
class Seen:
    """One request as its client saw it."""

    request_id: str
    model: str
    streaming: bool
    status: int
    success: bool
    provider: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_msat: int | None = None


async def send_mix(started: Started, client: httpx.AsyncClient) -> list[Seen]:
    sdk = openai_client(started)
    seen: list[Seen] = []
    for model, content in [
        ("gpt-4o-mini", "hi"),
        ("gpt-4o-mini", "a longer question for more prompt tokens"),
        ("gpt-4o-mini", "three"),
        ("gpt-4o", "hello"),
    ]:
        raw = await sdk.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": content}]
        )
        usage = raw.parse().usage
        assert usage is not None
        seen.append(
            Seen(
                request_id=raw.headers["x-arbstr-request-id"],
                model=model,
                streaming=False,
                status=200,
                success=True,
                provider=raw.headers["x-arbstr-provider"],
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_msat=round(float(raw.headers["x-arbstr-cost-sats"]) * 1000),
            )
        )
    for _ in range(2):
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        usage, metadata = chunks[-1].usage, chunks[-1].model_extra["arbstr"]  # type: ignore[index]
        assert usage is not None
        seen.append(
            Seen(
                request_id=metadata["request_id"],
                model="gpt-4o-mini",
                streaming=True,
                status=200,
                success=True,
                provider=metadata["provider"],
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_msat=round(metadata["cost_sats"] * 1000),
            )
        )
    broken = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "cut me off"}],
        stream=True,
        extra_headers={"x-mock": "drop_after=2"},
    )
    with pytest.raises(openai.APIError):
        async for _ in broken:
            pass
    seen.append(
        Seen(
            request_id=broken.response.headers["x-arbstr-request-id"],
            model="gpt-4o-mini",
            streaming=True,
            status=200,
            success=False,
            provider="alpha",
        )
    )
    for fault, status in [("status=503", 502), ("status=400", 400)]:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-mock": fault}
        )
        assert response.status_code == status
        seen.append(
            Seen(
                request_id=response.headers["x-arbstr-request-id"],
                model="gpt-4o-mini",
                streaming=False,
                status=status,
                success=False,
                provider=None,
            )
        )
    await sdk.close()
    with trio.fail_after(5):
        await started.runtime.writer.flushed(len(seen))
    return seen


def latencies(started: Started, column: str, where: str = "1") -> list[int]:
    db = sqlite3.connect(f"file:{started.config.database.path}?mode=ro", uri=True)
    with contextlib.closing(db):
        rows = db.execute(f"SELECT {column} FROM requests WHERE {where} AND {column} IS NOT NULL")
        return sorted(value for (value,) in rows)


def nearest_rank(values: list[int]) -> dict[str, int | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{p}": values[math.ceil(p * len(values) / 100) - 1] for p in (50, 95, 99)}


def expected_totals(seen: list[Seen]) -> dict[str, Any]:
    cost = sum(s.cost_msat or 0 for s in seen)
    return {
        "requests": len(seen),
        "successes": sum(s.success for s in seen),
        "errors": sum(not s.success for s in seen),
        "prompt_tokens": sum(s.prompt_tokens or 0 for s in seen),
        "completion_tokens": sum(s.completion_tokens or 0 for s in seen),
        "cost_msat": cost,
        "cost_sats": cost / 1000,
        # The dropped stream was answered by a provider that never reported usage.
        "usage_missing": sum(s.provider is not None and s.cost_msat is None for s in seen),
    }


def subset(document: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {key: document[key] for key in keys}


async def get_json(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def test_stats_answer_for_every_filter_and_grouping() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        seen = await send_mix(started, client)
        assert {s.provider for s in seen} == {"alpha", None}  # the cheaper one, every time

        stats = await get_json(client, "/v1/stats")
        assert stats["object"] == "stats"
        assert stats["range"] == "last_24h"  # the default, and it says so
        since, until = (datetime.fromisoformat(stats[k]) for k in ("since", "until"))
        assert until - since == timedelta(hours=24)
        assert abs(until - datetime.now(UTC)) < timedelta(seconds=10)
        assert (stats["filters"], stats["group_by"], stats["bucket"]) == ({}, None, None)
        totals = stats["totals"]
        expected = expected_totals(seen)
        assert subset(totals, expected) == expected
        assert totals["savings_msat"] > 0  # beta, the dearer candidate, was never needed
        assert totals["savings_sats"] == totals["savings_msat"] / 1000
        assert totals["latency_ms"] == nearest_rank(latencies(started, "latency_ms"))
        assert totals["ttfb_ms"] == nearest_rank(latencies(started, "ttfb_ms"))
        assert "groups" not in stats
        assert "buckets" not in stats

        filters: list[tuple[dict[str, str], Callable[[Seen], object]]] = [
            ({"streaming": "true"}, lambda s: s.streaming),
            ({"success": "false"}, lambda s: not s.success),
            ({"provider": "alpha"}, lambda s: s.provider == "alpha"),
            ({"model": "gpt-4o"}, lambda s: s.model == "gpt-4o"),
            ({"provider": "alpha", "streaming": "false"}, lambda s: s.provider and not s.streaming),
            ({"policy": "none-recorded"}, lambda s: False),
        ]
        for params, keep in filters:
            filtered = await get_json(client, "/v1/stats", **params)
            expected = expected_totals([s for s in seen if keep(s)])
            assert subset(filtered["totals"], expected) == expected, params
            assert filtered["filters"] == {
                k: {"true": True, "false": False}.get(v, v) for k, v in params.items()
            }

        for key in ("provider", "model", "tier", "policy"):
            grouped = await get_json(client, "/v1/stats", group_by=key)
            assert grouped["group_by"] == key
            assert subset(grouped["totals"], expected_totals(seen)) == expected_totals(seen)
            found = {group["key"]: group for group in grouped["groups"]}
            groupings: dict[str, Callable[[Seen], str | None]] = {
                "provider": lambda s: s.provider,
                "model": lambda s: s.model,
                "tier": lambda s: s.provider and "standard",
                "policy": lambda s: None,  # no policy recorded yet
            }
            of = groupings[key]
            assert set(found) == {of(s) for s in seen}, key
            for value, group in found.items():
                expected = expected_totals([s for s in seen if of(s) == value])
                assert subset(group, expected) == expected, (key, value)

        alpha = (await get_json(client, "/v1/stats", group_by="provider"))["groups"][0]
        assert alpha["key"] == "alpha"  # busiest first
        where = "provider = 'alpha'"
        assert alpha["latency_ms"] == nearest_rank(latencies(started, "latency_ms", where))


async def test_stats_in_hourly_buckets() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        seen = await send_mix(started, client)
        series = await get_json(client, "/v1/stats", bucket="hour", group_by="provider")
        buckets = series["buckets"]
        assert len(buckets) in (24, 25)  # 24 hours, the first and last partial unless aligned
        starts = [datetime.fromisoformat(b["start"]) for b in buckets]
        assert all(start.minute == start.second == 0 for start in starts)
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(starts))
        busy = [b for b in buckets if b["requests"]]
        assert 1 <= len(busy) <= 2  # the traffic took a moment, maybe across an hour
        assert sum(b["requests"] for b in buckets) == len(seen)
        assert sum(b["cost_msat"] for b in buckets) == expected_totals(seen)["cost_msat"]
        for bucket in buckets:
            assert sum(g["requests"] for g in bucket["groups"]) == bucket["requests"]
        quiet = buckets[0] if not buckets[0]["requests"] else buckets[-1]
        assert quiet["groups"] == []
        assert quiet["latency_ms"] == {"p50": None, "p95": None, "p99": None}
        assert "groups" not in series  # the groups are in the buckets


async def test_requests_are_listed_paged_filtered_sorted_and_found_by_id() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        seen = await send_mix(started, client)
        by_id = {s.request_id: s for s in seen}

        listing = await get_json(client, "/v1/requests")
        assert listing["object"] == "list"
        assert listing["has_more"] is False
        assert listing["next_cursor"] is None
        rows = listing["data"]
        assert [row["request_id"] for row in rows] == [s.request_id for s in reversed(seen)]
        for row in rows:
            s = by_id[row["request_id"]]
            assert (row["model"], row["streaming"], row["status"], row["success"]) == (
                s.model,
                s.streaming,
                s.status,
                s.success,
            )
            assert (row["provider"], row["prompt_tokens"], row["cost_msat"]) == (
                s.provider,
                s.prompt_tokens,
                s.cost_msat,
            )
            assert row["cost_sats"] == (None if s.cost_msat is None else s.cost_msat / 1000)
            assert datetime.fromisoformat(row["started_at"]).tzinfo == UTC
            assert row["started_at"].endswith("Z")

        pages: list[str] = []
        params = {"limit": "4", "sort": "-latency_ms"}
        while True:
            page = await get_json(client, "/v1/requests", **params)
            pages.extend(row["request_id"] for row in page["data"])
            if not page["has_more"]:
                break
            params["cursor"] = page["next_cursor"]
        slowest = sorted(rows, key=lambda row: row["latency_ms"], reverse=True)
        assert sorted(pages) == sorted(by_id)  # every request once
        assert [next(r for r in rows if r["request_id"] == i)["latency_ms"] for i in pages] == [
            row["latency_ms"] for row in slowest
        ]

        failed = await get_json(client, "/v1/requests", status="502")
        assert [row["request_id"] for row in failed["data"]] == [
            s.request_id for s in seen if s.status == 502
        ]
        cut = await get_json(client, "/v1/requests", error_type="upstream_protocol_error")
        assert [row["streaming"] for row in cut["data"]] == [True]
        assert cut["data"][0]["usage_missing"] is True
        streams = await get_json(client, "/v1/requests", streaming="true", sort="started_at")
        assert [row["request_id"] for row in streams["data"]] == [
            s.request_id for s in seen if s.streaming
        ]

        [failure] = [s for s in seen if s.status == 502]
        detail = await get_json(client, f"/v1/requests/{failure.request_id}")
        assert detail["request_id"] == failure.request_id
        assert detail["error_type"] == "upstream_http_503"
        attempts = detail["attempts"]
        assert len(attempts) == detail["attempt_count"] >= 2
        assert {a["provider"] for a in attempts} == {"alpha", "beta"}  # fell over to beta
        assert all(a["outcome"] == "http_503" and a["status"] == 503 for a in attempts)
        assert [a["started_at"] for a in attempts] == sorted(a["started_at"] for a in attempts)

        missing = await client.get("/v1/requests/no-such-request")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


async def test_since_and_until_take_iso_8601_in_any_offset() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        seen = await send_mix(started, client)
        now = datetime.now(UTC)
        plus_two = (now - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
        basic_utc = (now + timedelta(minutes=1)).strftime("%Y%m%dT%H%M%S")  # no offset: UTC
        stats = await get_json(client, "/v1/stats", since=plus_two.isoformat(), until=basic_utc)
        assert stats["totals"]["requests"] == len(seen)
        assert stats["range"] is None
        echoed = datetime.fromisoformat(stats["since"])
        assert abs(echoed - plus_two) < timedelta(milliseconds=1)
        assert stats["since"].endswith("Z")
        # An unencoded '+' arrives as a space; the offset is still read as +02:00.
        raw = f"/v1/stats?since={plus_two.strftime('%Y-%m-%dT%H:%M:%S')}+02:00"
        response = await client.get(raw)
        assert response.status_code == 200, response.text
        assert response.json()["totals"]["requests"] == len(seen)
        later = await get_json(client, "/v1/stats", since=now.isoformat(), until=basic_utc)
        assert later["totals"]["requests"] == 0
        yesterday = (now - timedelta(days=1)).date().isoformat()  # a date alone: its midnight UTC
        listed = await get_json(client, "/v1/requests", since=yesterday)
        assert len(listed["data"]) == len(seen)
        assert listed["since"] == f"{yesterday}T00:00:00.000Z"
        assert listed["until"] is None


BAD_PARAMETERS = [
    ("/v1/stats?range=last_2h", "range"),
    ("/v1/stats?range=last_1h&since=2024-01-01", "range"),
    ("/v1/stats?since=yesterday", "since"),
    ("/v1/stats?until=2024-02-30", "until"),
    ("/v1/stats?since=2024-05-02&until=2024-05-01", "since"),
    ("/v1/stats?streaming=yes", "streaming"),
    ("/v1/stats?success=", "success"),
    ("/v1/stats?group_by=status", "group_by"),
    ("/v1/stats?bucket=minute", "bucket"),
    ("/v1/stats?since=2000-01-01&bucket=hour", "bucket"),
    ("/v1/stats?provder=alpha", "provder"),
    ("/v1/stats?sort=-latency_ms", "sort"),
    ("/v1/stats?model=a&model=b", "model"),
    ("/v1/requests?sort=model", "sort"),
    ("/v1/requests?limit=0", "limit"),
    ("/v1/requests?limit=501", "limit"),
    ("/v1/requests?status=abc", "status"),
    ("/v1/requests?cursor=not-a-cursor", "cursor"),
    ("/v1/requests?group_by=model", "group_by"),
]


async def test_bad_parameters_are_a_400_naming_them() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        for path, param in BAD_PARAMETERS:
            response = await client.get(path)
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["param"] == param, path
            assert error["type"] == "invalid_request_error"
            assert error["code"] in ("invalid_parameter", "unknown_parameter")


async def test_the_read_endpoints_take_get_only() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        for path in ("/v1/stats", "/v1/requests", "/v1/requests/abc"):
            response = await client.post(path)
            assert response.status_code == 405
            assert response.headers["allow"] == "GET"
        assert (await client.get("/v1/requests/")).status_code == 404
        assert (await client.get("/v1/requests/a/b")).status_code == 404
