"""One correction to Hypercorn's trio worker, applied before it serves.

Hypercorn (0.17 and 0.18 at least) keeps a connection open after its client has
closed it while idle: the read loop ends, but the connection's keep-alive timer is
still running in the same task group, so the socket sits in CLOSE-WAIT, with its
tasks, for the whole ``keep_alive_timeout``. Every client that drops a pooled
connection leaves one behind; under connection churn they pile up. Stopping the
timer once the client has closed lets the connection end at once, as it does on
Hypercorn's asyncio worker. A request still in flight is not affected: the timer only
runs while the connection is idle.

The patch is applied only where the method it wraps exists; if Hypercorn changes
shape, nothing is patched and ``tests/test_e2e_reliability.py`` says so.
"""

from __future__ import annotations

from typing import Any

from hypercorn.trio.tcp_server import TCPServer

__all__ = ["close_connections_their_clients_closed"]

_MARK = "_arbstr_stops_idle_timer_on_eof"


def close_connections_their_clients_closed() -> None:
    """Install the correction (idempotent)."""
    read_data = getattr(TCPServer, "_read_data", None)
    if read_data is None or getattr(read_data, _MARK, False):
        return

    async def read_data_then_stop_idle_timer(self: Any) -> None:
        await read_data(self)
        idle_task = getattr(self, "idle_task", None)
        if idle_task is not None:
            await idle_task.stop()

    setattr(read_data_then_stop_idle_timer, _MARK, True)
    TCPServer._read_data = read_data_then_stop_idle_timer  # type: ignore[method-assign]
