"""Shared test helpers: real servers on 127.0.0.1:0, and clients that talk to them.

Every helper here that can wait carries a deadline, so a broken proxy fails a test
with TooSlowError instead of hanging the suite.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import httpx
import openai
import trio

from arbstr_trio.config.load import parse_config
from arbstr_trio.config.models import Config, DatabaseConfig, ListenAddress, ServerConfig
from arbstr_trio.reconfigure import ConfigSource
from arbstr_trio.server import Started, serve

# A whole end-to-end test, servers included, finishes well inside this.
TEST_DEADLINE_S = 20.0

TWO_PROVIDERS = """
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "alpha"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini", "gpt-4o"]
input_rate = 150
output_rate = 600

[providers.mock]
chunks = 5

[[providers]]
name = "beta"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini", "gpt-4o"]
input_rate = 300
output_rate = 1200

[providers.mock]
chunks = 5
"""


def config_from(text: str, environ: Mapping[str, str] | None = None) -> Config:
    return parse_config(text, environ=environ or {}).config


@asynccontextmanager
async def running_proxy(
    config: Config | str, *, mock: bool = True, source: ConfigSource | None = None
) -> AsyncIterator[Started]:
    """The proxy under Hypercorn on a free port (and its mocks, with ``mock``), stopped
    gracefully on exit. The whole block runs under :data:`TEST_DEADLINE_S`. ``source``
    (where ``config`` was loaded from) enables the admin API."""
    if isinstance(config, str):
        config = config_from(config)
    if config.server.listen == ServerConfig().listen:
        # Never the default port: another proxy (or test run) may be on it.
        config = attrs.evolve(
            config, server=attrs.evolve(config.server, listen=ListenAddress("127.0.0.1", 0))
        )
    scratch = tempfile.TemporaryDirectory(prefix="arbstr-test-")
    if config.database.path == DatabaseConfig().path:
        # Each test its own request log, not ./arbstr.db in whatever directory runs pytest.
        config = attrs.evolve(
            config, database=attrs.evolve(config.database, path=f"{scratch.name}/arbstr.db")
        )
    shutdown = trio.Event()
    with scratch, trio.fail_after(TEST_DEADLINE_S):
        async with trio.open_nursery() as nursery:
            started: Started = await nursery.start(
                lambda task_status: serve(
                    config,
                    mock=mock,
                    shutdown_trigger=shutdown.wait,
                    source=source,
                    task_status=task_status,
                )
            )
            try:
                yield started
            finally:
                shutdown.set()


def openai_client(
    started: Started, default_headers: Mapping[str, str] | None = None
) -> openai.AsyncOpenAI:
    """The official SDK pointed at the proxy; its own retries off, so tests see ours."""
    return openai.AsyncOpenAI(
        base_url=f"{started.url}/v1",
        api_key="client-secret-key",
        max_retries=0,
        default_headers=default_headers,
    )


@asynccontextmanager
async def http_client(started: Started) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=started.url, timeout=10.0) as client:
        yield client


def chat_body(
    model: str = "gpt-4o-mini", content: str = "hello", **extra: object
) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def raw_chat_request(body: bytes, *headers: bytes) -> bytes:
    """A chat request as bytes on the wire, for tests that need the socket itself."""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        + b"".join(header + b"\r\n" for header in headers)
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


async def receive_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    """Everything received up to and including ``marker``; fails if the peer closes first."""
    data = b""
    while marker not in data:
        part = await stream.receive_some(4096)
        assert part, data
        data += part
    return data
