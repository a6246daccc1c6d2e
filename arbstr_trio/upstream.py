"""Talking to providers: one connection pool, the request we send, the errors we map.

One :class:`~arbstr_trio.http1.ConnectionPool` serves every provider for the life of
the process, so connections are reused across requests. Every transport failure that
can escape a send or a read is turned into one of ours in :func:`map_transport_errors`,
the single table of what went wrong (as httpcore's ``map_exceptions`` does), so nothing
above this module knows how the bytes travel.
"""

from __future__ import annotations

import functools
import ssl
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import certifi
import orjson

from arbstr_trio.config.apikey import convention_variable
from arbstr_trio.config.models import ProviderConfig, UpstreamConfig
from arbstr_trio.errors import (
    ArbstrError,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from arbstr_trio.http1 import ConnectionPool, Origin, Response, TransportError, TransportKind

__all__ = [
    "ProviderClient",
    "ProviderResponse",
    "Upstream",
    "UpstreamResponse",
    "error_for_status",
    "forward_headers",
    "map_transport_errors",
]

Header = tuple[bytes, bytes]

# Never forwarded: hop-by-hop headers (RFC 9110 7.6.1), what the pool sets itself, the
# client's credentials for *this* proxy (the provider gets the provider's key), and
# our own control headers.
_NOT_FORWARDED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"content-type",
        b"accept-encoding",
        b"authorization",
        b"x-api-key",
        b"api-key",
        b"cookie",
        b"openai-organization",
        b"openai-project",
        b"idempotency-key",
        b"x-request-id",
        b"x-correlation-id",
    }
)
_CONTROL_PREFIX = b"x-arbstr-"
_ERROR_BODY_LIMIT = 64 * 1024
_BODY_LIMIT = 64 * 1024 * 1024


def forward_headers(
    client_headers: Iterable[Header],
    *,
    api_key: str | None,
    request_id: str,
    idempotency_key: str,
) -> list[Header]:
    """The headers a provider receives: the client's own, minus what must not travel."""
    connection_named: set[bytes] = set()
    kept: list[Header] = []
    for name, value in client_headers:
        if name == b"connection":
            connection_named.update(t.strip().lower() for t in value.split(b","))
        if name in _NOT_FORWARDED or name.startswith(_CONTROL_PREFIX):
            continue
        kept.append((name, value))
    if connection_named:
        kept = [(name, value) for name, value in kept if name not in connection_named]
    kept.append((b"content-type", b"application/json"))
    kept.append((b"idempotency-key", idempotency_key.encode()))
    kept.append((b"x-request-id", request_id.encode()))
    # Relayed as it comes: a compressed body would have to be inflated first (and an
    # event stream before it could be relayed event by event).
    kept.append((b"accept-encoding", b"identity"))
    if api_key:
        kept.append((b"authorization", b"Bearer " + api_key.encode()))
    return kept


@contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """The one table from transport failures to ours."""
    try:
        yield
    except TransportError as exc:
        kind = exc.kind
        if kind is TransportKind.UNREACHABLE:
            raise UpstreamUnreachable(
                f"provider {provider!r} could not be reached: {exc.detail}", provider=provider
            ) from None
        if kind is TransportKind.TIMEOUT:
            raise UpstreamTimeout(
                f"provider {provider!r} stopped answering: {exc.detail}", provider=provider
            ) from None
        if kind is TransportKind.REFUSED_BY_LIBRARY:
            # Never the library's words: h11 quotes the offending header, which may be the key.
            raise UpstreamProtocolError(
                f"the request to provider {provider!r} could not be sent: the HTTP library "
                "refused a header or the body",
                provider=provider,
            ) from None
        raise UpstreamProtocolError(
            f"provider {provider!r} broke the connection: {exc.detail}", provider=provider
        ) from None


def error_for_status(
    provider: str, status: int, headers: Mapping[str, str], body: bytes
) -> ArbstrError:
    """What a provider's non-success status means for our client.

    Only a 4xx that is the client's own doing is passed back as it came. A 401 or
    403 means the provider refused *our* key: telling the client "unauthorized"
    would send it looking at its own credentials, so that is a 502 naming the key.
    """
    if status in (401, 403, 407):
        return UpstreamAuthFailed(
            f"provider {provider!r} refused its API key (HTTP {status}); check "
            f"{convention_variable(provider)} or the provider's api_key",
            provider=provider,
        )
    if status == 429:
        retry_after = headers.get("retry-after", "")
        extra = [(b"retry-after", retry_after.encode())] if _is_safe_header(retry_after) else []
        return RateLimited(f"provider {provider!r} is rate limiting requests", headers=extra)
    if 400 <= status < 500 and status != 408:
        return UpstreamRejected(status, _error_object(body), provider=provider)
    return UpstreamStatusError(
        f"provider {provider!r} failed with HTTP {status}",
        provider=provider,
        upstream_status=status,
    )


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body[:500].decode("utf-8", "replace").strip() or None}
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            return error
        if isinstance(error, str):
            return {"message": error}
        if isinstance(document.get("message"), str):
            return {"message": document["message"]}
    return {}


def _is_safe_header(value: str) -> bool:
    return 0 < len(value) <= 64 and value.isprintable() and value.isascii()


class ProviderResponse(Protocol):
    """What the engine needs of a provider's answer (a fake one, in engine tests)."""

    provider: str

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    async def read_error_body(self) -> bytes: ...

    async def next_chunk(self) -> bytes | None: ...

    async def aclose(self) -> None: ...


class ProviderClient(Protocol):
    """What the engine needs to reach providers: :class:`Upstream`, or a fake in tests."""

    async def post(
        self, provider: ProviderConfig, path: str, body: bytes, headers: list[Header]
    ) -> ProviderResponse: ...


class UpstreamResponse:
    """A provider's answer with its body still on the wire. Close it, always."""

    __slots__ = ("_response", "provider")

    def __init__(self, response: Response, provider: str) -> None:
        self._response = response
        self.provider = provider

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        """The whole body, refused past ``_BODY_LIMIT`` (no completion comes near it)."""
        declared = self._response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > _BODY_LIMIT:
            raise self._too_large()
        parts: list[bytes] = []
        size = 0
        with map_transport_errors(self.provider):
            while (part := await self._response.next_piece()) is not None:
                parts.append(part)
                size += len(part)
                if size > _BODY_LIMIT:
                    raise self._too_large()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _too_large(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"provider {self.provider!r} answered with a body over "
            f"{_BODY_LIMIT // (1024 * 1024)} MiB",
            provider=self.provider,
        )

    async def read_error_body(self) -> bytes:
        """At most 64 KiB of an error answer: enough for any error envelope."""
        parts: list[bytes] = []
        size = 0
        with map_transport_errors(self.provider):
            while size < _ERROR_BODY_LIMIT:
                part = await self._response.next_piece()
                if part is None:
                    break
                parts.append(part)
                size += len(part)
        return b"".join(parts)[:_ERROR_BODY_LIMIT]

    async def next_chunk(self) -> bytes | None:
        """The next piece of body as it arrives; ``None`` at the end."""
        with map_transport_errors(self.provider):
            return await self._response.next_piece()

    async def aclose(self) -> None:
        """Release the connection (closed, not pooled, if the body was not read to its end)."""
        await self._response.aclose()


class Upstream:
    """The process's one HTTP client to providers."""

    def __init__(self, config: UpstreamConfig, *, idle_timeout_s: float) -> None:
        context = ssl.create_default_context(cafile=certifi.where())
        if config.ca_bundle:
            context.load_verify_locations(cafile=config.ca_bundle)
        context.set_alpn_protocols(["http/1.1"])
        self._idle_timeout_s = idle_timeout_s
        self._pool = ConnectionPool(
            context,
            max_connections=config.max_connections,
            max_idle_connections=config.max_keepalive_connections,
            keepalive_expiry_s=config.keepalive_expiry_ms / 1000,
            connect_timeout_s=config.connect_timeout_ms / 1000,
        )

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def post(
        self, provider: ProviderConfig, path: str, body: bytes, headers: list[Header]
    ) -> UpstreamResponse:
        """Send a request and return as soon as the response headers are in."""
        origin, target = _address(provider.url + path)
        with map_transport_errors(provider.name):
            response = await self._pool.request(
                origin, b"POST", target, headers, body, timeout_s=self._idle_timeout_s
            )
        return UpstreamResponse(response, provider.name)

    async def get_json(self, provider: ProviderConfig, path: str) -> Any:
        """A small GET (such as ``/models``); raises an :class:`UpstreamError` on any failure."""
        headers: list[Header] = [
            (b"accept", b"application/json"),
            (b"accept-encoding", b"identity"),  # bodies are read as they come
        ]
        if provider.api_key is not None:
            headers.append((b"authorization", b"Bearer " + provider.api_key.reveal().encode()))
        origin, target = _address(provider.url + path)
        with map_transport_errors(provider.name):
            response = await self._pool.request(
                origin, b"GET", target, headers, b"", timeout_s=self._idle_timeout_s
            )
        answer = UpstreamResponse(response, provider.name)
        try:
            if answer.status != 200:
                raise UpstreamError(
                    f"provider {provider.name!r} answered GET {path} with HTTP {answer.status}",
                    provider=provider.name,
                )
            content = await answer.read()
        finally:
            await answer.aclose()
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"provider {provider.name!r} answered GET {path} with invalid JSON",
                provider=provider.name,
            ) from None


@functools.lru_cache(maxsize=1024)
def _address(url: str) -> tuple[Origin, bytes]:
    """Where a URL's requests go, and the request target to send there."""
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin.of(url), target.encode("ascii")
