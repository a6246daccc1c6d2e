"""Every chat request leaves exactly one row, with what it really cost, whatever its end."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
import trio.testing

from arbstr_trio.pricing import Usage, cost_msat, format_sats
from arbstr_trio.routing import rates_for
from arbstr_trio.server import Started
from tests.conftest import (
    TWO_PROVIDERS,
    chat_body,
    http_client,
    openai_client,
    raw_chat_request,
    receive_until,
    running_proxy,
)

# alpha is the cheaper; its breaker stays closed through the failures below, so every
# request starts there.
CONFIG = TWO_PROVIDERS + "\n[breaker]\nfailure_threshold = 100\n"


def rows(started: Started) -> dict[str, dict[str, Any]]:
    """The request log, one row per request id (asserting there is only one each)."""
    with sqlite3.connect(f"file:{started.config.database.path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        found: dict[str, dict[str, Any]] = {}
        for row in db.execute("SELECT * FROM requests ORDER BY id"):
            assert row["request_id"] not in found, row["request_id"]
            record = dict(row)
            record["attempt_rows"] = [
                dict(attempt)
                for attempt in db.execute(
                    "SELECT * FROM attempts WHERE request = ? ORDER BY seq", (row["id"],)
                )
            ]
            found[row["request_id"]] = record
        return found


def outcomes(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["provider"], a["outcome"]) for a in record["attempt_rows"]]


async def test_each_kind_of_ending_leaves_exactly_one_true_row() -> None:
    async with running_proxy(CONFIG) as started, http_client(started) as client:
        sdk = openai_client(started)
        # 1. Answered whole.
        answered = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "answered"},
        )
        completion = answered.parse()
        # 2. Streamed whole, with the client asking for usage.
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": "streamed"},
        )
        chunks = [chunk async for chunk in stream]
        # 3. Every provider failing.
        failed = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"x-request-id": "failed", "x-mock": "status=503"},
        )
        # 4. The cheapest failing, the next answering.
        fallback = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"x-request-id": "fallback", "x-mock-alpha": "status=503"},
        )
        # 5. A stream broken after it began.
        broken = await client.post(
            "/v1/chat/completions",
            json=chat_body(stream=True),
            headers={"x-request-id": "broken", "x-mock": "drop_after=2"},
        )
        # 6. The client's own mistake.
        refused = await client.post(
            "/v1/chat/completions", content=b"{oops", headers={"x-request-id": "refused"}
        )
        # 7. A client that leaves in the middle of a slow stream.
        url = httpx.URL(started.url)
        assert url.port is not None
        with trio.fail_after(5):
            socket = await trio.open_tcp_stream(url.host, url.port)
            body = orjson.dumps(chat_body(stream=True))
            await socket.send_all(
                raw_chat_request(body, b"x-request-id: left", b"x-mock: chunk_delay_ms=500")
            )
            await receive_until(socket, b"data:")
            await socket.aclose()
            await started.mocks["alpha"].wait_for_disconnects(1)
        await sdk.close()
        with trio.fail_after(5):
            await started.runtime.writer.flushed(7)
        log = rows(started)

    assert sorted(log) == sorted(
        ["answered", "streamed", "failed", "fallback", "broken", "refused", "left"]
    )
    alpha, beta = started.config.provider("alpha"), started.config.provider("beta")

    row = log["answered"]
    assert completion.usage is not None
    usage = Usage(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert (row["provider"], row["model"], row["upstream_model"]) == (
        "alpha",
        "gpt-4o-mini",
        "gpt-4o-mini",
    )
    assert (row["status"], row["success"], row["streaming"], row["error_type"]) == (200, 1, 0, None)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert format_sats(row["cost_msat"]) == answered.headers["x-arbstr-cost-sats"]
    assert row["cost_msat"] == cost_msat(rates_for(alpha, "gpt-4o-mini"), usage)
    assert row["max_cost_msat"] == cost_msat(rates_for(beta, "gpt-4o-mini"), usage)
    assert row["usage_missing"] == 0
    assert outcomes(row) == [("alpha", "ok")]
    assert row["latency_ms"] >= row["ttfb_ms"] >= 0
    assert row["stream_ms"] is None
    assert row["finished_at"] >= row["started_at"]

    row = log["streamed"]
    metadata = chunks[-1].model_extra["arbstr"]  # type: ignore[index]
    assert (row["provider"], row["streaming"], row["status"], row["success"]) == (
        "alpha",
        1,
        200,
        1,
    )
    assert chunks[-1].usage is not None
    assert row["completion_tokens"] == chunks[-1].usage.completion_tokens
    assert row["cost_msat"] / 1000 == metadata["cost_sats"]
    assert row["stream_ms"] is not None
    assert outcomes(row) == [("alpha", "ok")]

    row = log["failed"]
    assert failed.status_code == 502
    assert (row["provider"], row["status"], row["success"]) == (None, 502, 0)
    assert row["error_type"] == "upstream_http_503"
    assert row["cost_msat"] is None
    assert row["usage_missing"] == 0  # nothing answered: nothing to be missing
    assert outcomes(row) == [("alpha", "http_503")] * 2 + [("beta", "http_503")] * 2
    assert row["attempts"] == 4

    row = log["fallback"]
    assert fallback.headers["x-arbstr-provider"] == "beta"
    assert (row["provider"], row["status"], row["success"]) == ("beta", 200, 1)
    assert format_sats(row["cost_msat"]) == fallback.headers["x-arbstr-cost-sats"]
    assert outcomes(row) == [("alpha", "http_503"), ("alpha", "http_503"), ("beta", "ok")]

    row = log["broken"]
    assert broken.status_code == 200
    assert (row["provider"], row["streaming"], row["status"], row["success"]) == (
        "alpha",
        1,
        200,
        0,
    )
    assert row["error_type"] == "upstream_protocol_error"

    row = log["refused"]
    assert refused.status_code == 400
    assert (row["model"], row["provider"], row["status"], row["success"]) == (None, None, 400, 0)
    assert row["error_type"] == "invalid_json"
    assert row["attempts"] == 0

    row = log["left"]
    assert (row["provider"], row["status"], row["success"]) == ("alpha", 499, 0)
    assert row["error_type"] == "client_disconnected"
    assert row["cost_msat"] is None  # the usage chunk never came: unknown, not guessed
    assert row["usage_missing"] == 1


async def test_a_model_priced_apart_is_charged_and_recorded_at_its_own_rates() -> None:
    config = TWO_PROVIDERS.replace(
        "input_rate = 150\noutput_rate = 600\n",
        "input_rate = 150\noutput_rate = 600\n"
        'model_rates = { "gpt-4o" = { input_rate = 2500, output_rate = 10000 } }\n',
    )
    async with running_proxy(config) as started:
        sdk = openai_client(started)
        answered = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        completion = answered.parse()
        await sdk.close()
        with trio.fail_after(5):
            await started.runtime.writer.flushed(1)
        [row] = rows(started).values()
    # alpha's gpt-4o now costs more than beta's: beta answers, alpha is the saving's base.
    assert answered.headers["x-arbstr-provider"] == "beta"
    assert completion.usage is not None
    usage = Usage(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    alpha = started.config.provider("alpha")
    beta = started.config.provider("beta")
    assert format_sats(row["cost_msat"]) == answered.headers["x-arbstr-cost-sats"]
    assert row["cost_msat"] == cost_msat(rates_for(beta, "gpt-4o"), usage)
    assert row["max_cost_msat"] == cost_msat(rates_for(alpha, "gpt-4o"), usage)
    assert rates_for(alpha, "gpt-4o").output_rate == 10000


async def test_a_request_cut_short_by_shutdown_is_recorded_as_such(tmp_path: Path) -> None:
    database = tmp_path / "log.db"
    config = (
        TWO_PROVIDERS.replace(
            'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\ngraceful_shutdown_ms = 200'
        )
        + f'\n[database]\npath = "{database}"\n'
    )
    async with trio.open_nursery() as clients, running_proxy(config) as started:

        async def slow() -> None:
            # Its own client, still connected when the proxy shuts down around it.
            async with httpx.AsyncClient(base_url=started.url, timeout=10.0) as client:
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(
                        "/v1/chat/completions",
                        json=chat_body(),
                        headers={"x-request-id": "cut", "x-mock": "latency_ms=10000"},
                    )

        clients.start_soon(slow)
        with trio.fail_after(5):
            while not started.mocks["alpha"].received:
                await trio.testing.wait_all_tasks_blocked()
    # Leaving the block shut the proxy down: 200 ms of grace, then the request was cut.
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT status, success, error_type FROM requests WHERE request_id = 'cut'"
        ).fetchone()
    assert row == (503, 0, "shutdown")


async def test_a_client_gone_while_sending_its_body_is_recorded_as_gone() -> None:
    async with running_proxy(CONFIG) as started:
        url = httpx.URL(started.url)
        assert url.port is not None
        with trio.fail_after(5):
            socket = await trio.open_tcp_stream(url.host, url.port)
            await socket.send_all(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: half\r\n"
                b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{"
            )
            await socket.aclose()
            await started.runtime.writer.flushed(1)
        row = rows(started)["half"]
    assert (row["status"], row["success"], row["error_type"]) == (499, 0, "client_disconnected")
    assert row["model"] is None
