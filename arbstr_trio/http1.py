"""Our HTTP/1.1 client to providers: pooled keep-alive connections, h11 for the framing.

The proxy makes one kind of call, many times: a POST to a provider it has called
before, answered by a JSON body or an event stream. httpx served it well but was the
largest cost on the hot path: per request it builds a Request, walks auth and redirect
hooks, and httpcore's pool scans every connection it holds to place each request and
again to release it, so the cost grew with the pool (under load, about half the
event loop's time; see README's Benchmarks). This module does only what the proxy
needs, in the shape it needs:

- a pool per origin of idle connections, most recently used first (warm, and the
  rest expire), under one limit on connections to all providers together;
- a request written with a single ``send_all`` (head and body together);
- response bodies handed on as h11 delivers them, one piece per read, no buffering;
- a connection returned to its pool only when its response was read to the end, and
  checked on the way out again: one the provider has closed (readable while idle)
  or that idled past ``keepalive_expiry`` is closed instead.

Failures are raised as :class:`TransportError` with a kind, and :mod:`arbstr_trio.upstream`
turns them into the proxy's errors. Nothing here is HTTP/2: providers speak 1.1, and
one connection per request in flight is what the pool limit accounts for.
"""

from __future__ import annotations

import collections
import enum
import functools
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping

import attrs
import h11
import trio

__all__ = ["Connection", "ConnectionPool", "Origin", "Response", "TransportError", "TransportKind"]

Header = tuple[bytes, bytes]

_READ_SIZE = 64 * 1024
_PIECE_TARGET = 16 * 1024
"""Body gathered into one piece at most (about, a chunk may pass it): a relay sends
the first bytes of a long burst without processing all of it first."""
_CLOSE_TIMEOUT_S = 1.0


class TransportKind(enum.Enum):
    UNREACHABLE = "unreachable"
    """No connection: refused, no route, DNS, TLS handshake, connect timeout, pool full."""
    TIMEOUT = "timeout"
    """Connected, but the provider stopped sending (or receiving) for too long."""
    PROTOCOL = "protocol"
    """The connection broke, or what came over it was not HTTP/1.1."""
    REFUSED_BY_LIBRARY = "refused_by_library"
    """h11 would not send our request (a header it considers invalid). Its message is
    never shown: it quotes the header, which may be a key."""


class TransportError(Exception):
    def __init__(self, kind: TransportKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@attrs.frozen
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an ``http(s)://host[:port]/...`` URL (config has checked its form)."""
        return _origin_of(url)

    @property
    def authority(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return (host if self.port == default else f"{host}:{self.port}").encode("ascii")


@functools.lru_cache(maxsize=1024)
def _origin_of(url: str) -> Origin:
    parts = urllib.parse.urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return Origin(parts.scheme, parts.hostname or "", parts.port or default)


class Connection:
    """One keep-alive connection to an origin, carrying one exchange at a time."""

    __slots__ = ("_h11", "_stream", "heard_from", "idle_since", "origin", "reused")

    def __init__(self, origin: Origin, stream: trio.abc.Stream) -> None:
        self.origin = origin
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.idle_since = 0.0
        self.reused = False
        """Taken from the pool for this exchange, rather than opened for it."""
        self.heard_from = False
        """The provider has sent something in this exchange."""

    def closed_by_peer(self) -> bool:
        """Idle and yet readable: the provider closed it (or sent what nobody asked for)."""
        stream = self._stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            return stream.socket.is_readable()
        return False

    async def send_request(
        self, method: bytes, target: bytes, headers: list[Header], body: bytes, timeout_s: float
    ) -> None:
        try:
            pieces = [self._h11.send(h11.Request(method=method, target=target, headers=headers))]
            if body:
                pieces += self._h11.send_with_data_passthrough(h11.Data(data=body)) or ()
            pieces.append(self._h11.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            raise TransportError(
                TransportKind.REFUSED_BY_LIBRARY, "the request could not be framed"
            ) from None
        payload = b"".join(piece for piece in pieces if piece)
        with trio.move_on_after(timeout_s) as waited:
            try:
                await self._stream.send_all(payload)
            except (trio.BrokenResourceError, OSError) as exc:
                raise TransportError(
                    TransportKind.PROTOCOL, _describe(exc, "send failed")
                ) from None
        if waited.cancelled_caught:
            raise TransportError(TransportKind.TIMEOUT, "write timed out")

    def buffered_event(self) -> h11.Event | None:
        """The next response event if what was read already holds it; no reading."""
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise TransportError(TransportKind.PROTOCOL, f"invalid HTTP: {exc}") from None
        if event is h11.NEED_DATA:
            return None
        assert not isinstance(event, type)  # PAUSED only follows a finished cycle
        return event

    async def next_event(self, timeout_s: float) -> h11.Event:
        """The next response event, reading as needed; a read idle past ``timeout_s`` fails."""
        while True:
            event = self.buffered_event()
            if event is not None:
                return event
            data: bytes | bytearray = b""
            with trio.move_on_after(timeout_s) as waited:
                try:
                    data = await self._stream.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, OSError) as exc:
                    raise TransportError(
                        TransportKind.PROTOCOL, _describe(exc, "receive failed")
                    ) from None
            if waited.cancelled_caught:
                raise TransportError(TransportKind.TIMEOUT, "read timed out")
            if not data and self._h11.their_state is h11.SEND_RESPONSE:
                raise TransportError(
                    TransportKind.PROTOCOL, "the connection closed before a response"
                )
            self.heard_from = self.heard_from or bool(data)
            self._h11.receive_data(bytes(data) if isinstance(data, bytearray) else data)

    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and both sides keep the connection open."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self.heard_from = False
            return True
        return False

    async def close(self) -> None:
        # Forcefully: a TLS close_notify to a provider that stopped reading must not wait.
        await trio.aclose_forcefully(self._stream)


class Response:
    """A response whose head has arrived; the body comes piece by piece. Always
    :meth:`aclose` it: that returns the connection to the pool, or closes it."""

    __slots__ = ("_connection", "_done", "_pool", "_timeout_s", "headers", "status")

    def __init__(
        self,
        pool: ConnectionPool,
        connection: Connection,
        head: h11.Response,
        timeout_s: float,
    ) -> None:
        self._pool = pool
        self._connection: Connection | None = connection
        self._timeout_s = timeout_s
        self._done = False
        self.status: int = head.status_code
        self.headers: Mapping[str, str] = _header_map(head.headers)

    async def next_piece(self) -> bytes | None:
        """The body that has arrived since the last call (waiting for some if none has);
        ``None`` once the body has ended.

        Everything one read brought is one piece, however many chunks the provider
        wrote: a relay then forwards it with one write, not one per chunk.
        """
        connection = self._connection
        if self._done or connection is None:
            return None
        pieces: list[bytes] = []
        size = 0
        event: h11.Event | None = await connection.next_event(self._timeout_s)
        while event is not None:
            if isinstance(event, h11.Data):
                if event.data:
                    pieces.append(event.data)
                    size += len(event.data)
                if size >= _PIECE_TARGET:
                    break  # the rest is already read: the next call has it at once
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise TransportError(TransportKind.PROTOCOL, "the connection closed mid-body")
            event = connection.buffered_event()
            if event is None and not pieces:
                event = await connection.next_event(self._timeout_s)
        if not pieces:
            return None
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection, reusable=self._done and connection.reusable())


@attrs.define
class _OriginPool:
    idle: collections.deque[Connection] = attrs.field(factory=collections.deque)


class ConnectionPool:
    """Keep-alive connections to every provider, at most ``max_connections`` in all."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        max_connections: int,
        max_idle_connections: int,
        keepalive_expiry_s: float,
        connect_timeout_s: float,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_idle = max_idle_connections
        self._expiry_s = keepalive_expiry_s
        self._connect_timeout_s = connect_timeout_s
        self._origins: dict[Origin, _OriginPool] = {}
        self._open = 0
        self._idle = 0
        self._changed = trio.Event()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open, idle or carrying a request."""
        return self._open

    @property
    def idle_connections(self) -> int:
        return self._idle

    async def request(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: Iterable[Header],
        body: bytes,
        *,
        timeout_s: float,
    ) -> Response:
        """Send a request on a pooled (or new) connection; return once the head is in.

        A pooled connection can be closed by the provider (its idle timeout) just as it
        is reused, too late for the readability check to see. When one breaks before
        the provider sent a single byte back, nothing was answered, and the request is
        sent once more on a new connection; the ``idempotency-key`` it carries lets a
        provider that did see it tell the two apart.
        """
        full_headers = [(b"host", origin.authority), *headers]
        if body or method == b"POST":
            full_headers.append((b"content-length", str(len(body)).encode()))
        connection = await self._acquire(origin)
        try:
            return await self._exchange(connection, method, target, full_headers, body, timeout_s)
        except TransportError as exc:
            if not (
                connection.reused
                and not connection.heard_from
                and exc.kind is TransportKind.PROTOCOL
            ):
                raise
        connection = await self._acquire(origin, fresh=True)
        return await self._exchange(connection, method, target, full_headers, body, timeout_s)

    async def _exchange(
        self,
        connection: Connection,
        method: bytes,
        target: bytes,
        headers: list[Header],
        body: bytes,
        timeout_s: float,
    ) -> Response:
        """Send on ``connection`` and wait for the head; on failure the connection goes."""
        try:
            await connection.send_request(method, target, headers, body, timeout_s)
            while True:
                event = await connection.next_event(timeout_s)
                if isinstance(event, h11.Response):
                    return Response(self, connection, event, timeout_s)
                if isinstance(event, h11.ConnectionClosed):
                    raise TransportError(
                        TransportKind.PROTOCOL, "the connection closed before a response"
                    )
                # An InformationalResponse (100 Continue and the like): keep reading.
        except BaseException:
            await self.release(connection, reusable=False)
            raise

    async def _acquire(self, origin: Origin, *, fresh: bool = False) -> Connection:
        """A connection to ``origin``: a pooled one unless ``fresh``, else a new one."""
        deadline = trio.current_time() + self._connect_timeout_s
        while True:
            if self._closed:
                raise TransportError(TransportKind.UNREACHABLE, "the client is closed")
            connection = None if fresh else await self._take_idle(origin)
            if connection is not None:
                connection.reused = True
                return connection
            if self._open < self._max_connections:
                return await self._connect(origin)
            if await self._close_one_idle():
                continue  # room made by closing a connection to another provider
            changed = self._changed
            with trio.move_on_at(deadline):
                await changed.wait()
                continue
            raise TransportError(
                TransportKind.UNREACHABLE,
                "every pooled connection stayed busy; raise [upstream] max_connections",
            )

    async def _take_idle(self, origin: Origin) -> Connection | None:
        pool = self._origins.get(origin)
        now = trio.current_time()
        while pool is not None and pool.idle:
            connection = pool.idle.pop()  # the most recently used: warmest
            self._idle -= 1
            if now - connection.idle_since <= self._expiry_s and not connection.closed_by_peer():
                return connection
            await self._discard(connection)
        return None

    async def _close_one_idle(self) -> bool:
        """Close the longest-idle connection of any origin, to make room for a new one."""
        oldest: _OriginPool | None = None
        for pool in self._origins.values():
            if pool.idle and (
                oldest is None or pool.idle[0].idle_since < oldest.idle[0].idle_since
            ):
                oldest = pool
        if oldest is None:
            return False
        self._idle -= 1
        await self._discard(oldest.idle.popleft())
        return True

    async def _connect(self, origin: Origin) -> Connection:
        self._open += 1
        try:
            stream = await self._open_stream(origin)
        except BaseException:
            self._open -= 1
            self._notify()
            raise
        return Connection(origin, stream)

    async def _open_stream(self, origin: Origin) -> trio.abc.Stream:
        if origin.scheme not in ("http", "https"):
            raise TransportError(TransportKind.UNREACHABLE, f"unsupported scheme {origin.scheme!r}")
        with trio.move_on_after(self._connect_timeout_s) as waited:
            try:
                tcp = await trio.open_tcp_stream(origin.host, origin.port)
            except OSError as exc:
                raise TransportError(
                    TransportKind.UNREACHABLE, _describe(exc, "connection failed")
                ) from None
            if origin.scheme == "http":
                return tcp
            tls = trio.SSLStream(
                tcp, self._ssl_context, server_hostname=origin.host, https_compatible=True
            )
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, OSError) as exc:
                await trio.aclose_forcefully(tcp)
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                raise TransportError(
                    TransportKind.UNREACHABLE, _describe(cause, "TLS handshake failed")
                ) from None
            except BaseException:
                # Cut short (connect timeout, a hedge that lost): the socket is ours to close.
                await trio.aclose_forcefully(tcp)
                raise
            return tls
        assert waited.cancelled_caught
        raise TransportError(TransportKind.UNREACHABLE, "connect timed out")

    async def release(self, connection: Connection, *, reusable: bool) -> None:
        """Back to its origin's idle connections if ``reusable``, else closed.

        With the idle limit reached, the connection idle longest (of any provider) is
        closed to make room: one provider's burst must not leave another without
        keep-alive.
        """
        if reusable and self._max_idle > 0:
            await self._prune_expired()
            if self._idle >= self._max_idle:
                await self._close_one_idle()
            if not self._closed:
                connection.idle_since = trio.current_time()
                pool = self._origins.setdefault(connection.origin, _OriginPool())
                pool.idle.append(connection)
                self._idle += 1
                self._notify()
                return
        await self._discard(connection)

    async def _prune_expired(self) -> None:
        """Close connections idle past ``keepalive_expiry``, oldest first, every provider's."""
        now = trio.current_time()
        for pool in self._origins.values():
            while pool.idle and now - pool.idle[0].idle_since > self._expiry_s:
                self._idle -= 1
                await self._discard(pool.idle.popleft())

    async def _discard(self, connection: Connection) -> None:
        self._open -= 1
        self._notify()
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
            await connection.close()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def aclose(self) -> None:
        """Close the idle connections; connections in use close as their responses do."""
        self._closed = True
        self._notify()  # whoever waits for a connection learns the client is closed
        for pool in self._origins.values():
            while pool.idle:
                self._idle -= 1
                await self._discard(pool.idle.pop())


def _header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Names as h11 gives them (lower case); a repeated header's values joined by commas."""
    result: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        result[name] = f"{result[name]}, {value}" if name in result else value
    return result


def _describe(exc: BaseException | None, fallback: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = "" if exc is None else str(exc).strip()
    return text[:200] if text else fallback
