"""The app for an external ASGI server: ``hypercorn -k trio arbstr_trio.asgi:app``.

The configuration comes from the file named by ``ARBSTR_CONFIG``; the runtime is
opened in the ASGI lifespan, so Hypercorn's own startup and shutdown drive it. A bad
or missing configuration fails the lifespan startup with the same message
``arbstr-trio serve`` would print, and Hypercorn exits.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from arbstr_trio.hypercorn_shim import install_hypercorn_corrections
from arbstr_trio.logs import configure_logging
from arbstr_trio.reconfigure import ConfigSource
from arbstr_trio.runtime import Runtime, open_runtime
from arbstr_trio.web.app import App

__all__ = ["app"]

log = logging.getLogger("arbstr_trio")


def _open_from_environment() -> AbstractAsyncContextManager[Runtime]:
    path = os.environ.get("ARBSTR_CONFIG")
    if not path:
        raise RuntimeError("set ARBSTR_CONFIG to the path of an arbstr-trio config file")
    # The admin API works here too (its overlay beside the file); SIGHUP is Hypercorn's.
    source = ConfigSource(Path(path))
    loaded = source.load()
    configure_logging(loaded.config.logging.level, server_banner=True)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    # The lifespan starts before Hypercorn accepts, so every connection gets this bound.
    install_hypercorn_corrections(
        client_send_timeout_s=loaded.config.server.client_send_timeout_ms / 1000
    )
    return open_runtime(loaded.config, source)


# This module is imported in Hypercorn's worker; the client bound waits for the config.
install_hypercorn_corrections(client_send_timeout_s=None)
app = App(runtime_factory=_open_from_environment)
