"""``arbstr-trio``: serve the proxy, check a config, or run a mock provider.

Exit codes: 0 success, 1 a configuration or runtime error (printed as one readable
message, never a traceback), 2 a usage error (from argparse).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from importlib import resources

import attrs
import trio

from arbstr_trio import __version__
from arbstr_trio.config.load import (
    ConfigError,
    LoadedConfig,
    load_config,
    parse_config,
    parse_listen,
)
from arbstr_trio.config.models import Config, ListenAddress, LogLevel
from arbstr_trio.logs import configure_logging
from arbstr_trio.mock.behaviour import MockBehaviour, parse_overrides
from arbstr_trio.mock.provider import MockProvider
from arbstr_trio.mock.server import serve_mock
from arbstr_trio.server import Started, serve, watch_signals

__all__ = ["main"]

log = logging.getLogger("arbstr_trio")

EMBEDDED_MOCK_CONFIG = "<embedded mock config>"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arbstr-trio",
        description="An OpenAI-compatible LLM routing proxy: the cheapest provider first, "
        "every request's cost recorded.",
    )
    parser.add_argument("--version", action="version", version=f"arbstr-trio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy until SIGINT or SIGTERM (a second signal stops at once).",
    )
    serve_cmd.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (default: $ARBSTR_CONFIG; with --mock, the embedded mock config)",
    )
    serve_cmd.add_argument(
        "-l",
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on, overriding [server] listen; port 0 picks a free port",
    )
    serve_cmd.add_argument(
        "--mock",
        action="store_true",
        help="serve every provider from an in-process mock: no network, no keys needed",
    )
    serve_cmd.set_defaults(handler=_serve_command)

    check_cmd = commands.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config file and report problems.",
    )
    check_cmd.add_argument("-c", "--config", metavar="FILE", required=True, help="TOML config file")
    check_cmd.set_defaults(handler=_check_command)

    mock_cmd = commands.add_parser(
        "mock-upstream",
        help="run a mock OpenAI-compatible provider",
        description="Run one mock provider. Any request may override its behaviour with an "
        "'x-mock: key=value; ...' header, using the keys --set accepts.",
    )
    mock_cmd.add_argument(
        "-l", "--listen", metavar="HOST:PORT", default="127.0.0.1:9101", help="default: %(default)s"
    )
    mock_cmd.add_argument(
        "--name",
        default="mock",
        help="provider name, for x-mock-NAME headers (default: %(default)s)",
    )
    mock_cmd.add_argument("--models", default="", help="comma-separated models for GET /v1/models")
    mock_cmd.add_argument("--latency-ms", type=int, help="pause before the response headers")
    mock_cmd.add_argument(
        "--chunks", type=int, help="content chunks (= completion tokens) per answer"
    )
    mock_cmd.add_argument("--chunk-delay-ms", type=int, help="pause between streamed chunks")
    mock_cmd.add_argument(
        "--set",
        metavar="SPEC",
        default="",
        help="more behaviour in x-mock syntax, e.g. 'status=503; retry_after=2; fault_rate=0.2'",
    )
    mock_cmd.set_defaults(handler=_mock_command)
    return parser


# --- serve -----------------------------------------------------------------------------


def _serve_command(args: argparse.Namespace) -> int:
    loaded = _load(args.config, mock=args.mock)
    config = loaded.config
    if args.listen:
        config = attrs.evolve(
            config, server=attrs.evolve(config.server, listen=_listen(args.listen))
        )
    configure_logging(config.logging.level)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return trio.run(_serve_until_signalled, config, args.mock)


def _load(path: str | None, *, mock: bool) -> LoadedConfig:
    path = path or os.environ.get("ARBSTR_CONFIG")
    if path:
        return load_config(path)
    if mock:
        text = resources.files("arbstr_trio").joinpath("data/mock.toml").read_text(encoding="utf-8")
        return parse_config(text, source=EMBEDDED_MOCK_CONFIG)
    raise ConfigError(
        "arbstr-trio serve", ["no configuration: pass -c FILE, set ARBSTR_CONFIG, or try --mock"]
    )


def _listen(text: str) -> ListenAddress:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise ConfigError("--listen", [str(exc)]) from None


async def _serve_until_signalled(config: Config, mock: bool) -> int:
    shutdown = trio.Event()
    failure: str | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals, shutdown, nursery.cancel_scope)

            async def serve_then_stop(task_status: trio.TaskStatus[Started]) -> None:
                await serve(
                    config, mock=mock, shutdown_trigger=shutdown.wait, task_status=task_status
                )
                nursery.cancel_scope.cancel()

            started: Started = await nursery.start(serve_then_stop)
            _announce(started)
    except* OSError as group:
        failure = "; ".join(_os_error_text(exc) for exc in _leaves(group))
    if failure is not None:
        print(f"error: cannot serve on {config.server.listen}: {failure}", file=sys.stderr)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup[OSError]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _os_error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


def _announce(started: Started) -> None:
    # One write, so whoever reads our stdout gets the whole banner at once.
    lines = [f"arbstr-trio {__version__} listening on {started.url}"]
    if started.mocks:
        mocks = ", ".join(f"{p.name} ({p.url})" for p in started.config.providers)
        model = (
            started.config.providers[0].models[0]
            if started.config.providers[0].models
            else "mock-model"
        )
        body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "hello"}}]}}'
        lines.append(f"  mock providers: {mocks}")
        lines.append(
            f"  try: curl -s {started.url}/v1/chat/completions "
            f"-H 'content-type: application/json' -d '{body}'"
        )
    print("\n".join(lines), flush=True)


# --- check -----------------------------------------------------------------------------


def _check_command(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    providers = loaded.config.providers
    print(f"{args.config}: ok ({len(providers)} provider{'s' if len(providers) != 1 else ''})")
    return 0


# --- mock-upstream ---------------------------------------------------------------------


def _mock_command(args: argparse.Namespace) -> int:
    listen = _listen(args.listen)
    behaviour = MockBehaviour()
    flags = {
        "latency_ms": args.latency_ms,
        "chunks": args.chunks,
        "chunk_delay_ms": args.chunk_delay_ms,
    }
    try:
        behaviour = attrs.evolve(behaviour, **{k: v for k, v in flags.items() if v is not None})
        behaviour = parse_overrides(behaviour, args.set)
    except ValueError as exc:
        raise ConfigError("arbstr-trio mock-upstream", [str(exc)]) from None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    provider = MockProvider(args.name, behaviour, models=models)
    configure_logging(LogLevel.INFO)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_mock, provider, listen.host, listen.port))
            print(f"mock provider {args.name!r} listening on {url}", flush=True)

    trio.run(run)
    return 0
