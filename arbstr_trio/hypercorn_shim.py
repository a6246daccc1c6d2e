"""Two corrections to Hypercorn's trio worker, applied before it serves.

**Connections their clients closed.** Hypercorn (0.17 and 0.18 at least) keeps a
connection open after its client has closed it while idle: the read loop ends, but the
connection's keep-alive timer is still running in the same task group, so the socket
sits in CLOSE-WAIT, with its tasks, for the whole ``keep_alive_timeout``. Every client
that drops a pooled connection leaves one behind; under connection churn they pile up.
Stopping the timer once the client has closed lets the connection end at once, as it
does on Hypercorn's asyncio worker. A request still in flight is not affected: the
timer only runs while the connection is idle.

**Clients that stop reading.** Hypercorn writes to a client with ``send_all`` in a
shielded cancel scope and no timeout. A client that stops reading but keeps its socket
open (its TCP receive window stays at zero) makes that write, and so the app's
``await send(...)``, wait forever: the request's admission slot, its upstream
connection and the provider's permit are held for good, and no timeout of ours can
fire, since the shield hides the cancellation. Nothing in Hypercorn can be configured
to bound it (``read_timeout`` bounds reads only). So every accepted client socket gets
``TCP_USER_TIMEOUT`` (Linux, tcp(7)): when sent data stays unacknowledged, or queued
data stays unsent because of a zero window, for that long, the kernel fails the
connection with ETIMEDOUT, ``send_all`` raises, Hypercorn reports the disconnect and
everything the request held is released. Keep-alive probes (``SO_KEEPALIVE``) are
turned on as well, so a peer that vanished while nothing was being sent (a request
waiting on its provider) is found too; with ``TCP_USER_TIMEOUT`` set, Linux drops
such a peer once that much time has passed without an answer to a probe. Options the
platform lacks are skipped (macOS and Windows have no ``TCP_USER_TIMEOUT``: there a
client that stops reading is still not bounded), as are sockets that are not TCP.

Each patch is applied only where the method it wraps exists; if Hypercorn changes
shape, nothing is patched and ``tests/test_e2e_reliability.py`` and
``tests/test_slow_client.py`` say so.
"""

from __future__ import annotations

import contextlib
import math
import socket
from typing import Any

import trio
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["install_hypercorn_corrections"]

_STOPS_IDLE_TIMER = "_arbstr_stops_idle_timer_on_eof"
_BOUNDS_CLIENT_SENDS = "_arbstr_bounds_client_sends"

_client_send_timeout_s: float | None = None


def install_hypercorn_corrections(*, client_send_timeout_s: float | None) -> None:
    """Install both corrections (idempotent).

    ``client_send_timeout_s`` bounds how long a client may leave the data sent to it
    unread (or unacknowledged) before its connection is failed; ``None`` leaves client
    sockets as they are. The latest value applies to connections accepted from then on.
    """
    global _client_send_timeout_s
    _client_send_timeout_s = client_send_timeout_s
    _close_connections_their_clients_closed()
    _bound_sends_to_clients()


def _close_connections_their_clients_closed() -> None:
    read_data = getattr(TCPServer, "_read_data", None)
    if read_data is None or getattr(read_data, _STOPS_IDLE_TIMER, False):
        return

    async def read_data_then_stop_idle_timer(self: Any) -> None:
        await read_data(self)
        idle_task = getattr(self, "idle_task", None)
        if idle_task is not None:
            await idle_task.stop()

    setattr(read_data_then_stop_idle_timer, _STOPS_IDLE_TIMER, True)
    TCPServer._read_data = read_data_then_stop_idle_timer  # type: ignore[method-assign]


def _bound_sends_to_clients() -> None:
    init = TCPServer.__init__
    if getattr(init, _BOUNDS_CLIENT_SENDS, False):
        return

    def init_then_bound_sends(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if _client_send_timeout_s is not None:
            stream = getattr(self, "stream", None)
            stream = getattr(stream, "transport_stream", stream)  # under TLS, the TCP stream
            if isinstance(stream, trio.SocketStream):
                _set_client_socket_timeouts(stream, _client_send_timeout_s)

    setattr(init_then_bound_sends, _BOUNDS_CLIENT_SENDS, True)
    TCPServer.__init__ = init_then_bound_sends  # type: ignore[method-assign]


def _set_client_socket_timeouts(stream: trio.SocketStream, timeout_s: float) -> None:
    if stream.socket.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: no TCP options
    seconds = max(1, math.ceil(timeout_s))
    options = [
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        # First probe after this long without traffic; then one every third of it.
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", seconds),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", max(1, seconds // 3)),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", 3),
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", max(1, round(timeout_s * 1000))),
    ]
    for level, name, value in options:
        option = getattr(socket, name, None)
        if option is None:
            continue  # not on this platform
        with contextlib.suppress(OSError):  # refused here, or the client is already gone
            stream.setsockopt(level, option, value)
