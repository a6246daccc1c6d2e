"""A literal provider key in the config appears nowhere a person or a client can read.

Everything the proxy emits is captured, logs at DEBUG, every endpoint's answer,
every error body, the CLI's output, and searched for the key and for any 10-character
piece of it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import chat_body, config_from, http_client, running_proxy
from tests.test_cli import cli_process

SECRET = "sk-live-SUPERSECRET-9f8e7d6c5b4a"
CONFIG = f"""
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "alpha"
url = "http://mock.invalid/v1"
api_key = "{SECRET}"
models = ["gpt-4o-mini"]
input_rate = 1
output_rate = 2

[logging]
level = "debug"
"""


def assert_secret_absent(text: str) -> None:
    for start in range(len(SECRET) - 9):
        piece = SECRET[start : start + 10]
        assert piece not in text, f"{piece!r} of the key leaked"


async def test_key_reaches_the_provider_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    config = config_from(CONFIG)
    async with running_proxy(config) as started, http_client(started) as client:
        for path in ("/providers", "/health", "/v1/models", "/nope"):
            response = await client.get(path)
            outputs.append(repr(response.headers) + response.text)
        for fault in ("", "status=401", "status=403", "status=400", "status=500", "drop_after=0"):
            for stream in (False, True):
                response = await client.post(
                    "/v1/chat/completions", json=chat_body(stream=stream), headers={"x-mock": fault}
                )
                outputs.append(repr(response.headers) + response.text)
        outputs.append(repr(started))
        outputs.append(repr(started.config))
        # The provider did get it: the key is used, not lost.
        assert started.mocks["alpha"].received[0].headers["authorization"] == f"Bearer {SECRET}"
    outputs.append(caplog.text)
    for output in outputs:
        assert_secret_absent(output)


def test_cli_output_never_shows_the_key(tmp_path: Path) -> None:
    path = tmp_path / "arbstr.toml"
    path.write_text(CONFIG)
    path.chmod(0o644)
    checked = subprocess.run(
        [sys.executable, "-m", "arbstr_trio", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert checked.returncode == 0
    assert "api_key is written in the config file" in checked.stdout
    assert "chmod 600" in checked.stdout
    assert_secret_absent(checked.stdout + checked.stderr)

    broken = tmp_path / "broken.toml"
    broken.write_text(CONFIG.replace("input_rate = 1", "input_rate = -1"))
    failed = subprocess.run(
        [sys.executable, "-m", "arbstr_trio", "serve", "-c", str(broken)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert failed.returncode == 1
    assert_secret_absent(failed.stdout + failed.stderr)


async def test_serve_logs_never_show_the_key(tmp_path: Path) -> None:
    path = tmp_path / "arbstr.toml"
    path.write_text(CONFIG)
    path.chmod(0o600)
    async with cli_process("serve", "--mock", "-c", str(path), "-l", "127.0.0.1:0") as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            for fault in ("", "status=401", "status=500"):
                await client.post(
                    "/v1/chat/completions", json=chat_body(), headers={"x-mock": fault}
                )
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await served.process.wait() == 0
        assert served.process.stderr is not None
        stderr = bytearray()
        while chunk := await served.process.stderr.receive_some(65536):
            stderr.extend(chunk)
    logged = stderr.decode()
    assert "api_key is written in the config file" in logged
    assert "-> 502 upstream_auth_failed: provider 'alpha' refused its API key" in logged
    assert_secret_absent(logged + "\n".join(served.stdout))
