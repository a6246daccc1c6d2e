"""The proxy process: Hypercorn inside our own nursery, and an orderly way out.

``serve`` owns everything the process runs: the embedded mock providers (with
``--mock``), the runtime (upstream client and, later, the request writer), and
Hypercorn's trio worker. It stops on the shutdown trigger (SIGINT or SIGTERM from
the CLI): Hypercorn stops accepting, in-flight requests get the configured grace
period to finish, then the runtime closes, in that order, so nothing that was
answered is lost on the way out. A second signal stops at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import attrs
import hypercorn.config
import hypercorn.trio
import hypercorn.typing
import trio

from arbstr_trio.config.models import Config, HttpUrl
from arbstr_trio.hypercorn_shim import install_hypercorn_corrections
from arbstr_trio.mock.fleet import start_mock_fleet
from arbstr_trio.mock.provider import MockProvider
from arbstr_trio.reconfigure import ConfigSource, reload
from arbstr_trio.runtime import Runtime, open_runtime
from arbstr_trio.web.app import App

__all__ = [
    "LISTEN_BACKLOG",
    "Started",
    "hypercorn_config",
    "serve",
    "watch_reload",
    "watch_signals",
]

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024


@attrs.frozen
class Started:
    """What ``serve`` reports once it accepts connections."""

    url: str
    config: Config
    """The configuration in effect (with ``--mock``, pointed at the mocks)."""
    mocks: dict[str, MockProvider]
    runtime: Runtime
    """What serves requests: the engine, the health board, the upstream client."""


def hypercorn_config(config: Config, *, listen_fd: int | None = None) -> hypercorn.config.Config:
    """Hypercorn's settings for ``config``; with ``listen_fd``, it serves that inherited
    listening socket (a worker of ``serve --workers``) instead of binding its own."""
    server = hypercorn.config.Config()
    server.bind = [str(config.server.listen) if listen_fd is None else f"fd://{listen_fd}"]
    server.graceful_timeout = config.server.graceful_shutdown_ms / 1000
    server.accesslog = None
    server.errorlog = logging.getLogger("hypercorn.error")
    server.include_server_header = False
    # Longer than common clients' pool idle time, so a client never sends on a
    # connection the server has just closed.
    server.keep_alive_timeout = 75
    # A request's head (line and headers) must fit here; the body limit is ours,
    # [server] max_body_bytes, checked as it arrives.
    server.h11_max_incomplete_size = 32 * 1024
    server.h2_max_header_list_size = 32 * 1024
    # Connections waiting to be accepted: Hypercorn's 100 drops a burst's SYNs.
    server.backlog = LISTEN_BACKLOG
    # The live feed takes one small message from a client (its key); Hypercorn would
    # buffer 16 MiB for each, before auth.
    server.websocket_max_message_size = 64 * 1024
    # read_timeout stays unset: Hypercorn applies it to every socket read, including
    # while a long stream is being sent to a client with nothing more to say, so any
    # value would cut off streams longer than it. Request bodies are bounded by the
    # request's deadline instead.
    return server


async def serve(
    config: Config,
    *,
    mock: bool = False,
    shutdown_trigger: Callable[[], Awaitable[None]],
    source: ConfigSource | None = None,
    reload_on_sighup: bool = False,
    listen_fd: int | None = None,
    task_status: trio.TaskStatus[Started] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the proxy until ``shutdown_trigger`` returns, then shut down gracefully.

    ``source`` (where ``config`` was loaded from) enables the admin API and reloading;
    with ``reload_on_sighup``, SIGHUP reloads it.
    """
    install_hypercorn_corrections(client_send_timeout_s=config.server.client_send_timeout_ms / 1000)
    async with trio.open_nursery() as mocks_nursery:
        mocks: dict[str, MockProvider] = {}
        if mock:
            config, mocks = await start_mock_fleet(mocks_nursery, config)
            if source is not None:
                source.transform = partial(_to_mocks, {p.name: p.url for p in config.providers})
        async with open_runtime(config, source) as runtime, trio.open_nursery() as watchers:
            if reload_on_sighup:
                watchers.start_soon(watch_reload, runtime)

            async def stop_accepting_then_end_feeds() -> None:
                await shutdown_trigger()
                # A live feed never ends by itself: ended now, not after the grace period.
                runtime.live.close()

            async with trio.open_nursery() as server_nursery:
                binds = await server_nursery.start(
                    partial(
                        hypercorn.trio.serve,
                        # Our App takes plain mappings; Hypercorn's signature names its
                        # TypedDicts.
                        cast("hypercorn.typing.Framework", App(runtime)),
                        hypercorn_config(config, listen_fd=listen_fd),
                        shutdown_trigger=stop_accepting_then_end_feeds,
                    )
                )
                task_status.started(Started(binds[0], config, mocks, runtime))
            watchers.cancel_scope.cancel()
        mocks_nursery.cancel_scope.cancel()


def _to_mocks(urls: dict[str, HttpUrl], config: Config) -> Config:
    """``--mock``: reloaded providers that have a mock keep pointing at it."""
    providers = tuple(
        attrs.evolve(p, url=urls[p.name]) if p.name in urls else p for p in config.providers
    )
    return attrs.evolve(config, providers=providers)


async def watch_reload(runtime: Runtime) -> None:
    """Each SIGHUP: reload the config file and its admin overlay (see :func:`reload`).

    A worker of ``serve --workers`` starts with SIGHUP blocked, so that one relayed
    before this receiver exists is held rather than killing it (SIGHUP's default);
    unblocked here, such a SIGHUP arrives as the reload it was meant to be.
    """
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        async for _ in signals:
            log.warning("SIGHUP: reloading the configuration")
            reload(runtime)


async def watch_signals(
    shutdown: trio.Event, force: trio.CancelScope, *, supervised: bool = False
) -> None:
    """First SIGINT or SIGTERM: graceful shutdown. A second one: cancel ``force`` now.

    A ``supervised`` worker (``serve --workers``) takes a repeated signal as the same
    request: under systemd, say, the whole unit and the supervisor both send SIGTERM.
    Its supervisor stops it at once with SIGKILL instead.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.is_set():
                log.warning("%s: finishing in-flight requests, then exiting", name)
                shutdown.set()
            elif supervised:
                log.info("%s again: already finishing in-flight requests", name)
            else:
                log.warning("%s again: stopping now", name)
                force.cancel()
