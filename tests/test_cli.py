"""The command line as a user runs it: real processes, real signals, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio

from arbstr_trio import __version__
from arbstr_trio.mock.provider import MockProvider
from arbstr_trio.mock.server import serve_mock
from tests.conftest import chat_body

CLI = [sys.executable, "-m", "arbstr_trio"]
DEADLINE_S = 20.0


@attrs.define
class Process:
    process: trio.Process
    url: str
    stdout: list[str]
    stderr: bytes = b""


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, seen: bytearray) -> None:
    while marker not in seen:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"process ended before printing {marker!r}: {bytes(seen)!r}")
        seen.extend(chunk)


@asynccontextmanager
async def cli_process(*args: str, marker: bytes = b"listening on ") -> AsyncIterator[Process]:
    """A CLI process running in the background; its URL is what it printed after ``marker``."""
    with tempfile.TemporaryDirectory() as scratch, trio.fail_after(DEADLINE_S):
        # A scratch working directory: serve --mock writes ./arbstr.db there.
        process = await trio.lowlevel.open_process(
            [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch
        )
        assert process.stdout is not None
        try:
            seen = bytearray()
            await read_until(process.stdout, marker, seen)
            await read_until(process.stdout, b"\n", seen)
            first_line = bytes(seen).split(marker, 1)[1].split(b"\n", 1)[0]
            yield Process(process, first_line.decode().strip(), bytes(seen).decode().splitlines())
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"arbstr-trio {__version__}"


def test_help_for_every_command() -> None:
    for command in ("serve", "check", "providers", "init", "mock-upstream"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "usage: arbstr-trio" in result.stdout


def test_serve_with_a_bad_config_exits_1_with_the_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[providers]]\nname = "a"\nurl = "ftp://x"\ninput_rate = -1\nfoo = 1\n')
    result = run_cli("serve", "-c", str(path))
    assert result.returncode == 1
    assert f"invalid configuration in {path}:" in result.stderr
    assert "$.providers[0].input_rate: must be >= 0" in result.stderr
    assert "$.providers[0].url: must be an http:// or https:// URL" in result.stderr
    assert "$.providers[0].foo: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_any_config_says_what_to_do() -> None:
    env = {key: value for key, value in os.environ.items() if key != "ARBSTR_CONFIG"}
    result = subprocess.run(
        [*CLI, "serve"], capture_output=True, text=True, timeout=DEADLINE_S, env=env, check=False
    )
    assert result.returncode == 1
    assert "pass -c FILE, set ARBSTR_CONFIG, or try --mock" in result.stderr


def test_serve_on_a_busy_port_exits_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--mock", "-l", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_listen_flag() -> None:
    result = run_cli("serve", "--mock", "-l", "nowhere")
    assert result.returncode == 1
    assert "must be HOST:PORT" in result.stderr


def test_check() -> None:
    result = run_cli(
        "check", "-c", "configs/example.toml", env={"OPENAI_API_KEY": "sk-x-0123456789"}
    )
    assert result.returncode == 0, result.stderr
    assert "configs/example.toml: ok (3 providers)" in result.stdout
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    missing = subprocess.run(
        [*CLI, "check", "-c", "configs/example.toml"],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env,
        check=False,
    )
    assert missing.returncode == 1
    assert (
        "$.providers[0].api_key: environment variable OPENAI_API_KEY is not set" in missing.stderr
    )


async def test_serve_mock_answers_then_exits_0_on_sigterm_after_finishing_in_flight() -> None:
    async with cli_process("serve", "--mock", "-l", "127.0.0.1:0") as served:
        assert served.url.startswith("http://127.0.0.1:")
        assert any("mock providers: alpha" in line for line in served.stdout)
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            response = await client.post("/v1/chat/completions", json=chat_body())
            assert response.status_code == 200
            assert response.headers["x-arbstr-provider"] == "alpha"

            # A slow stream is in flight when SIGTERM arrives: it must still complete.
            slow = {"x-mock": "chunks=20; chunk_delay_ms=25"}
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=slow
            ) as stream:
                assert stream.status_code == 200
                texts = stream.aiter_text()
                first = await anext(texts)
                assert first.startswith("data: ")
                served.process.send_signal(signal.SIGTERM)
                rest = "".join([text async for text in texts])
            assert '"finish_reason":"stop"' in rest
            assert rest.endswith("data: [DONE]\n\n")
        assert await served.process.wait() == 0


async def test_second_signal_stops_at_once() -> None:
    async with cli_process("serve", "--mock", "-l", "127.0.0.1:0") as served:
        assert served.process.stderr is not None
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            # One chunk, then a stall: a request that would hold a graceful shutdown.
            stalled = {"x-mock": "stall_ms=60000; stall_after=1"}
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=stalled
            ) as stream:
                await anext(stream.aiter_bytes())
                served.process.send_signal(signal.SIGINT)
                await read_until(
                    served.process.stderr, b"finishing in-flight requests", bytearray()
                )
                served.process.send_signal(signal.SIGINT)
                with trio.fail_after(5):  # well inside the 10 s grace period
                    code = await served.process.wait()
        assert code == 0


async def test_mock_upstream_command() -> None:
    async with cli_process(
        "mock-upstream",
        "-l",
        "127.0.0.1:0",
        "--name",
        "solo",
        "--models",
        "m1,m2",
        "--chunks",
        "2",
        marker=b"listening on ",
    ) as mock:
        assert mock.url.endswith("/v1")
        async with httpx.AsyncClient(base_url=mock.url, timeout=10) as client:
            models = (await client.get("/models")).json()
            assert [m["id"] for m in models["data"]] == ["m1", "m2"]
            completion = (await client.post("/chat/completions", json=chat_body())).json()
            assert completion["usage"]["completion_tokens"] == 2
            failing = await client.post(
                "/chat/completions", json=chat_body(), headers={"x-mock-solo": "status=500"}
            )
            assert failing.status_code == 500


async def test_external_hypercorn_serves_the_same_app(tmp_path: Path) -> None:
    mock = MockProvider("ext", models=["gpt-4o-mini"])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_mock, mock)
        config = tmp_path / "arbstr.toml"
        config.write_text(f'[[providers]]\nname = "ext"\nurl = "{url}"\nmodels = ["gpt-4o-mini"]\n')
        config.chmod(0o600)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, "ARBSTR_CONFIG": str(config)}
        with trio.fail_after(DEADLINE_S):
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "hypercorn",
                    "-k",
                    "trio",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "arbstr_trio.asgi:app",
                ],
                env=env,
                stderr=subprocess.PIPE,
                cwd=tmp_path,  # where the config's default ./arbstr.db goes
            )
            try:
                assert process.stderr is not None
                await read_until(process.stderr, b"Running on", bytearray())
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=10
                ) as client:
                    response = await client.post("/v1/chat/completions", json=chat_body())
                    assert response.status_code == 200
                    assert response.headers["x-arbstr-provider"] == "ext"
                    assert (await client.get("/health")).json()["status"] == "ok"
            finally:
                process.terminate()
                await process.wait()
        nursery.cancel_scope.cancel()


def test_external_hypercorn_without_config_stops_with_our_message() -> None:
    env = {key: value for key, value in os.environ.items() if key != "ARBSTR_CONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "-k",
            "trio",
            "--bind",
            "127.0.0.1:0",
            "arbstr_trio.asgi:app",
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env,
        check=False,
    )
    # Hypercorn's worker stops with our message; its exit status is Hypercorn's own.
    assert "Lifespan failure in startup. 'set ARBSTR_CONFIG" in result.stderr
