"""What ``arbstr-trio serve`` does once its flags are read: run the proxy until a signal.

Apart from :mod:`arbstr_trio.cli.serve`, which only defines the flags, so that the
other commands and ``--help`` do not import the server (half a second of startup).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from importlib import resources
from pathlib import Path

import attrs
import trio

from arbstr_trio.cli.banner import announce
from arbstr_trio.cli.common import parse_listen_flag
from arbstr_trio.cli.workers import supervise, watch_supervisor
from arbstr_trio.config.load import ConfigError
from arbstr_trio.config.models import Config
from arbstr_trio.logs import configure_logging
from arbstr_trio.reconfigure import SUPERVISOR_PID_VARIABLE, ConfigSource
from arbstr_trio.server import Started, serve, watch_signals

__all__ = ["EMBEDDED_MOCK_CONFIG", "run"]

log = logging.getLogger("arbstr_trio")

EMBEDDED_MOCK_CONFIG = "<embedded mock config>"


def run(args: argparse.Namespace) -> int:
    source = _source(args.config, mock=args.mock)
    source.one_of_workers = args.workers > 1 or args.worker_fd is not None
    loaded = source.load()
    config = loaded.config
    if args.listen:
        config = attrs.evolve(
            config, server=attrs.evolve(config.server, listen=parse_listen_flag(args.listen))
        )
    configure_logging(config.logging.level)
    if args.worker_fd is None:  # a worker's parent has said these already
        for warning in loaded.warnings:
            log.warning("%s", warning)
    if args.workers > 1:
        return supervise(args, config)
    return trio.run(_serve_until_signalled, config, args.mock, source, args.worker_fd)


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


async def _serve_until_signalled(
    config: Config, mock: bool, source: ConfigSource, worker_fd: int | None
) -> int:
    shutdown = trio.Event()
    failure: str | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor = os.environ.get(SUPERVISOR_PID_VARIABLE, "")
            supervised = worker_fd is not None and supervisor.isdigit()
            nursery.start_soon(
                partial(watch_signals, shutdown, nursery.cancel_scope, supervised=supervised)
            )
            if supervised:
                nursery.start_soon(watch_supervisor, int(supervisor), shutdown)

            async def serve_then_stop(task_status: trio.TaskStatus[Started]) -> None:
                await serve(
                    config,
                    mock=mock,
                    shutdown_trigger=shutdown.wait,
                    source=source,
                    reload_on_sighup=True,
                    listen_fd=worker_fd,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()

            started: Started = await nursery.start(serve_then_stop)
            if worker_fd is None:
                announce(started.url, started.config, mock_urls=_mock_urls(started))
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


def _mock_urls(started: Started) -> str | None:
    if not started.mocks:
        return None
    return ", ".join(f"{p.name} ({p.url})" for p in started.config.providers)
