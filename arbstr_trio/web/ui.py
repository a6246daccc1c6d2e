"""The dashboard's static files, served under ``/ui/`` from the package itself.

The dashboard is plain HTML, CSS and JavaScript modules in ``arbstr_trio/ui/``: no
build step and no CDN, so it works offline and ships in the wheel. The files (a dozen,
under 100 kB together) are read once, on the first request, in the event loop since it
takes well under a millisecond, and kept in memory with their content type and an ETag;
a path is answered only if it is exactly the name of one of those files, so ``..``,
encoded slashes or absolute paths cannot reach anything else: they are simply not in
the table, and get the same 404 as any unknown endpoint.

The page itself holds no data, so the client-key gate lets ``/ui`` through
(:func:`is_ui_path`); everything the page fetches goes to ``/v1/*`` and friends with
the key the user types in.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

import attrs

from arbstr_trio.errors import RouteNotFound
from arbstr_trio.exchange import Exchange
from arbstr_trio.runtime import Runtime
from arbstr_trio.web.asgi import Header, Receive, ResponseSend, Scope, header_value, send_bytes

__all__ = ["UI_PREFIX", "is_ui_path", "ui_file", "ui_redirect"]

UI_PREFIX = "/ui/"
_INDEX = "index.html"
_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".ico": b"image/x-icon",
}
_SECURITY_HEADERS: tuple[Header, ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # Only our own files; fetches and the websocket only to this origin. No inline
    # script, so an injected string in the request log can never run as code.
    (
        b"content-security-policy",
        b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        b"style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
)
# Revalidate every time: a proxy upgraded in place must not leave an old dashboard
# running against its new API; the ETag makes the revalidation a cheap 304.
_CACHE_CONTROL = b"no-cache"


@attrs.frozen
class StaticFile:
    body: bytes
    content_type: bytes
    etag: bytes


def is_ui_path(path: str) -> bool:
    """Whether ``path`` is the dashboard's: public, since the page itself holds no data."""
    return path == "/ui" or path.startswith(UI_PREFIX)


@functools.cache
def shipped_files() -> dict[str, StaticFile]:
    """Every file of the package's ``ui`` directory by its name, read once.

    The directory is flat on purpose: the router hands ``/ui/`` exactly one path
    segment, so a name with a slash in it could never be asked for anyway.
    """
    files: dict[str, StaticFile] = {}
    for entry in resources.files("arbstr_trio").joinpath("ui").iterdir():
        content_type = _CONTENT_TYPES.get("." + entry.name.rpartition(".")[2])
        if not entry.is_file() or content_type is None:
            continue  # not a dashboard asset (a stray editor backup, a folder...)
        body = entry.read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        files[entry.name] = StaticFile(body, content_type, etag)
    return files


async def ui_redirect(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    """``/ui`` to ``/ui/``, so the page's relative module URLs resolve under it."""
    await send_bytes(send, 308, [(b"location", UI_PREFIX.encode())], b"")


async def ui_file(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    """One shipped file (``/ui/`` is ``index.html``), or 404 like any unknown path."""
    name = scope["path"].removeprefix(UI_PREFIX) or _INDEX
    found = shipped_files().get(name)
    if found is None:
        raise RouteNotFound(f"no such dashboard file: {scope['path']}")
    headers: list[Header] = [
        (b"content-type", found.content_type),
        (b"etag", found.etag),
        (b"cache-control", _CACHE_CONTROL),
        *_SECURITY_HEADERS,
    ]
    if header_value(scope, b"if-none-match") == found.etag:
        # No body and no Content-Length: a 304's would have to be the 200's.
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send_bytes(send, 200, headers, found.body)
