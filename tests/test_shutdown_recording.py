"""SIGTERM with 100 requests in flight: every answer the clients saw is in the request log.

The acceptance test for the request log's shutdown path, run as a user runs the proxy:
``arbstr-trio serve`` as its own process, real sockets, a real signal. Shutdown has an
order that matters: Hypercorn stops accepting, lets in-flight requests finish (each
hands its record to the writer as it ends), and only then may the runtime close the
writer, which drains its queue before the process exits. Get the order wrong and the
last answers are lost, or recorded after the database is closed; this test sees either.
"""

from __future__ import annotations

import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import attrs
import httpx
import trio

from tests.conftest import chat_body
from tests.test_cli import Process, cli_process

REQUESTS = 100
DEADLINE_S = 15.0

# Two providers, each the only one serving its model, so which provider answered each
# request is known in advance. Both are slow enough (about a second a request) that
# all 100 requests are still running when SIGTERM arrives, and the grace period is
# long enough for every one of them to finish.
CONFIG = """
[server]
listen = "127.0.0.1:0"
graceful_shutdown_ms = 10000

[database]
path = "{database}"

[logging]
level = "warn"

[[providers]]
name = "alpha"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini"]
input_rate = 150
output_rate = 600

[providers.mock]
latency_ms = 1500
chunks = 8
chunk_delay_ms = 60

[[providers]]
name = "beta"
url = "http://mock.invalid/v1"
models = ["gpt-4o"]
input_rate = 300
output_rate = 1200

[providers.mock]
latency_ms = 1500
chunks = 8
chunk_delay_ms = 60
"""
PROVIDER_OF_MODEL = {"gpt-4o-mini": "alpha", "gpt-4o": "beta"}


@attrs.define
class Outcome:
    """What one client saw of its request."""

    sent_id: str
    model: str
    streaming: bool
    status: int | None = None
    request_id: str | None = None
    """The proxy's ``x-arbstr-request-id``."""
    provider: str | None = None
    complete: bool = False
    """A 200 with a whole body, or a stream that ended with ``data: [DONE]``."""
    error: str | None = None


async def one_request(client: httpx.AsyncClient, outcome: Outcome) -> None:
    body = chat_body(outcome.model, stream=outcome.streaming)
    headers = {"x-request-id": outcome.sent_id}
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as response:
            outcome.status = response.status_code
            outcome.request_id = response.headers.get("x-arbstr-request-id")
            outcome.provider = response.headers.get("x-arbstr-provider")
            text = (await response.aread()).decode()
        if response.status_code != 200:
            return
        if outcome.streaming:
            outcome.complete = text.endswith("data: [DONE]\n\n") and '"error"' not in text
        else:
            outcome.complete = response.json()["choices"][0]["finish_reason"] == "stop"
    except httpx.HTTPError as exc:  # the outcome says what the client saw, whatever it was
        outcome.error = repr(exc)


async def wait_until_in_flight(client: httpx.AsyncClient, count: int) -> None:
    """Until the proxy's ``/health`` counts ``count`` chat requests being served.

    The proxy is another process, so there is no event to wait on: each poll is one
    HTTP round trip, paced by the proxy itself, and the caller's deadline bounds them.
    """
    while (await client.get("/health")).json()["in_flight"] < count:
        pass


async def stderr_of(served: Process) -> str:
    """What the process wrote to stderr, once it has exited (for failure messages)."""
    assert served.process.stderr is not None
    chunks = []
    while chunk := await served.process.stderr.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


async def test_sigterm_with_100_requests_in_flight_loses_no_record(tmp_path: Path) -> None:
    database = tmp_path / "requests.db"
    config = tmp_path / "arbstr.toml"
    config.write_text(CONFIG.format(database=database))
    config.chmod(0o600)
    outcomes = [
        Outcome(
            sent_id=f"shutdown-{i:03d}",
            model="gpt-4o-mini" if i % 2 else "gpt-4o",
            streaming=i % 4 >= 2,
        )
        for i in range(REQUESTS)
    ]
    limits = httpx.Limits(max_connections=REQUESTS + 10, max_keepalive_connections=REQUESTS + 10)

    with trio.fail_after(DEADLINE_S):
        async with (
            cli_process("serve", "--mock", "-c", str(config)) as served,
            httpx.AsyncClient(base_url=served.url, timeout=DEADLINE_S, limits=limits) as client,
            httpx.AsyncClient(base_url=served.url, timeout=DEADLINE_S) as monitor,
        ):
            async with trio.open_nursery() as nursery:
                for outcome in outcomes:
                    nursery.start_soon(one_request, client, outcome)
                await wait_until_in_flight(monitor, REQUESTS)
                served.process.send_signal(signal.SIGTERM)
            code = await served.process.wait()
            errors = await stderr_of(served)

    assert code == 0, errors
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT request_id, success, provider, streaming FROM requests"
        ).fetchall()
    by_id: dict[str, list[tuple[int, str | None, int]]] = {}
    for request_id, success, provider, streaming in rows:
        by_id.setdefault(request_id, []).append((success, provider, streaming))
    answered = [o for o in outcomes if o.complete]
    for outcome in answered:
        assert outcome.request_id == outcome.sent_id
        assert outcome.provider == PROVIDER_OF_MODEL[outcome.model]
        assert by_id.get(outcome.sent_id) == [(1, outcome.provider, int(outcome.streaming))], (
            outcome,
            errors,
        )
    # The server received exactly the 100 (it counted them in flight): one row each.
    assert len(rows) == REQUESTS, errors
    # And all 100 fit in the 10 s grace period, so every one was answered in full.
    assert len(answered) == REQUESTS, ([o for o in outcomes if not o.complete], errors)
