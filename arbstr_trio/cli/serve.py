"""``arbstr-trio serve``: run the proxy until a signal, with its bound URL on stdout."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import resources
from pathlib import Path

import attrs
import trio

from arbstr_trio import __version__
from arbstr_trio.cli.common import Subparsers, parse_listen_flag
from arbstr_trio.config.load import ConfigError
from arbstr_trio.config.models import Config
from arbstr_trio.logs import configure_logging
from arbstr_trio.reconfigure import ConfigSource
from arbstr_trio.server import Started, serve, watch_signals

__all__ = ["add_parser"]

log = logging.getLogger("arbstr_trio")

EMBEDDED_MOCK_CONFIG = "<embedded mock config>"


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy until SIGINT or SIGTERM (a second signal stops at once).",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (default: $ARBSTR_CONFIG; with --mock, the embedded mock config)",
    )
    parser.add_argument(
        "-l",
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on, overriding [server] listen; port 0 picks a free port",
    )
    parser.add_argument(
        "--mock",
        action="store_true",
        help="serve every provider from an in-process mock: no network, no keys needed",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    source = _source(args.config, mock=args.mock)
    loaded = source.load()
    config = loaded.config
    if args.listen:
        config = attrs.evolve(
            config, server=attrs.evolve(config.server, listen=parse_listen_flag(args.listen))
        )
    configure_logging(config.logging.level)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return trio.run(_serve_until_signalled, config, args.mock, source)


def _source(path: str | None, *, mock: bool) -> ConfigSource:
    """The config file (with its admin overlay, ``<file>.admin.json``) to serve from."""
    path = path or os.environ.get("ARBSTR_CONFIG")
    if path:
        return ConfigSource(Path(path))
    if mock:
        text = resources.files("arbstr_trio").joinpath("data/mock.toml").read_text(encoding="utf-8")
        return ConfigSource(None, text=text, label=EMBEDDED_MOCK_CONFIG)
    raise ConfigError(
        "arbstr-trio serve", ["no configuration: pass -c FILE, set ARBSTR_CONFIG, or try --mock"]
    )


async def _serve_until_signalled(config: Config, mock: bool, source: ConfigSource) -> int:
    shutdown = trio.Event()
    failure: str | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals, shutdown, nursery.cancel_scope)

            async def serve_then_stop(task_status: trio.TaskStatus[Started]) -> None:
                await serve(
                    config,
                    mock=mock,
                    shutdown_trigger=shutdown.wait,
                    source=source,
                    reload_on_sighup=True,
                    task_status=task_status,
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
