"""``arbstr-trio tail``: follow a running proxy's live feed (``/v1/live``) in a terminal.

One line per event, as it happens; ``--json`` prints the feed's own lines instead, for
``jq``. Filters are applied here, on the client: the feed sends everything once, and
each ``tail`` keeps what it was asked for. The key (``--key`` or ``$ARBSTR_API_KEY``)
goes in the handshake's ``Authorization`` header and is never printed; without one,
``tail`` sends a blank ``auth`` message so that a proxy needing a key says so at once
rather than after its 5 s wait.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from arbstr_trio.cli.common import CliError, Subparsers
from arbstr_trio.config.models import ServerConfig

__all__ = ["TailOptions", "add_parser", "describe", "feed_url", "follow", "keep", "run"]

_DEFAULT_LISTEN = ServerConfig().listen
DEFAULT_URL = f"http://{_DEFAULT_LISTEN.host}:{_DEFAULT_LISTEN.port}"
_CONNECT_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 2.0
_AUTH_CLOSE_CODES = {4401: "the proxy needs an API key", 4403: "the proxy refused the API key"}


@attrs.frozen(kw_only=True)
class TailOptions:
    url: str = DEFAULT_URL
    key: str | None = attrs.field(default=None, repr=False)
    provider: str | None = None
    errors: bool = False
    json: bool = False


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "tail",
        help="follow a running proxy's live feed, one line per event",
        description="Connect to a running proxy's /v1/live feed and print one line per "
        "event: finished requests, failed attempts, breaker changes, cooldowns. Ctrl-C "
        "stops (exit 0); a proxy that cannot be reached or refuses the key is exit 1.",
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the proxy's base URL (default: {DEFAULT_URL})"
    )
    parser.add_argument(
        "--key", help="client API key, when the proxy has [[keys]] (default: $ARBSTR_API_KEY)"
    )
    parser.add_argument("--provider", metavar="NAME", help="only events about this provider")
    parser.add_argument(
        "--errors",
        action="store_true",
        help="only failures: failed requests, failed attempts, breakers opening, cooldowns",
    )
    parser.add_argument("--json", action="store_true", help="print the feed's raw JSON lines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    options = TailOptions(
        url=args.url,
        key=args.key or os.environ.get("ARBSTR_API_KEY") or None,
        provider=args.provider,
        errors=args.errors,
        json=args.json,
    )
    try:
        trio.run(follow, options, _print_line, _print_status)
    except KeyboardInterrupt:
        return 0
    return 0


def _print_line(line: str) -> None:
    print(line, flush=True)


def _print_status(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def follow(
    options: TailOptions, emit: Callable[[str], None], status: Callable[[str], None]
) -> None:
    """Print the feed at ``options.url`` through ``emit`` until it ends.

    Raises :class:`CliError` (one readable sentence) when the proxy cannot be reached,
    refuses the key, or closes the feed; returns only if cancelled.
    """
    url = feed_url(options.url)
    headers = [] if options.key is None else [(b"authorization", f"Bearer {options.key}".encode())]
    try:
        async with open_websocket_url(
            url,
            extra_headers=headers,
            connect_timeout=_CONNECT_TIMEOUT_S,
            disconnect_timeout=_CLOSE_TIMEOUT_S,
        ) as feed:
            if options.key is None:
                # A proxy with keys would wait 5 s for one; a blank key is refused at
                # once (4401), and a proxy without keys ignores the message.
                await feed.send_message('{"type":"auth","key":""}')
            await _print_feed(feed, options, emit, status)
    except ConnectionRejected as exc:
        if exc.status_code in (401, 403):
            reason = "refused the API key" if options.key else "needs an API key (--key)"
            raise CliError(f"the proxy at {options.url} {reason}") from None
        raise CliError(
            f"{options.url} refused the live feed with HTTP {exc.status_code}: "
            "is it an arbstr-trio proxy?"
        ) from None
    except HandshakeError as exc:
        cause = exc.__cause__ or exc.__context__
        why = f": {cause}" if cause is not None else ""
        raise CliError(f"cannot connect to the proxy at {options.url}{why}") from None
    except ConnectionClosed as exc:
        code = None if exc.reason is None else exc.reason.code
        if code in _AUTH_CLOSE_CODES:
            raise CliError(f"{_AUTH_CLOSE_CODES[code]} (--key)") from None
        if code == 1001:
            raise CliError("the proxy is shutting down; the feed ended") from None
        raise CliError(f"the proxy closed the feed ({_close_text(exc)})") from None
    except OSError as exc:
        raise CliError(f"lost the connection to the proxy at {options.url}: {exc}") from None


async def _print_feed(
    feed: WebSocketConnection,
    options: TailOptions,
    emit: Callable[[str], None],
    status: Callable[[str], None],
) -> None:
    while True:
        message = await feed.get_message()
        event = _parse(message)
        if event is None:
            continue
        if event.get("type") == "hello":
            status(f"following {options.url} (arbstr-trio {event.get('version', '?')})")
        if not keep(event, provider=options.provider, errors=options.errors):
            continue
        if options.json:
            emit(message if isinstance(message, str) else message.decode())
        elif event.get("type") != "hello":
            emit(describe(event))


def feed_url(base: str) -> str:
    """``http://host:port`` (or ``ws://``...) as the feed's ``ws://host:port/v1/live``."""
    parts = urlsplit(base if "://" in base else f"http://{base}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise CliError(f"--url must be an http:// or https:// URL, got {base!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/live"):
        path += "/v1/live"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def keep(event: Mapping[str, Any], *, provider: str | None, errors: bool) -> bool:
    """Whether ``--provider`` and ``--errors`` let ``event`` through.

    ``dropped`` always passes (it says lines are missing); ``hello`` passes the provider
    filter but not ``--errors``.
    """
    kind = event.get("type")
    if kind == "dropped":
        return True
    if provider is not None and kind != "hello" and event.get("provider") != provider:
        return False
    if not errors:
        return True
    if kind == "request":
        return event.get("success") is False
    if kind == "breaker":
        return event.get("to") == "open"
    return kind in ("attempt_failed", "cooldown_started", "cooldown_ended")


def describe(event: Mapping[str, Any]) -> str:
    """One event as one readable line, led by its local time."""
    clock = time.strftime("%H:%M:%S", time.localtime(float(event.get("ts") or 0)))
    kind = event.get("type")
    text = _DESCRIBERS.get(str(kind), _describe_other)(event)
    return f"{clock} {text}"


def _describe_request(event: Mapping[str, Any]) -> str:
    parts = [
        f"{'✓' if event.get('success') else '✗'} {event.get('status')} {event.get('model') or '-'}"
    ]
    if event.get("provider"):
        parts[0] += f" via {event['provider']}"
    if not event.get("success") and event.get("error_type"):
        parts.append(str(event["error_type"]))
    parts.append(f"{event.get('latency_ms')} ms")
    prompt, completion = event.get("prompt_tokens"), event.get("completion_tokens")
    if prompt is not None and completion is not None:
        parts.append(f"{prompt}+{completion} tok")
    if event.get("cost_sats") is not None:
        parts.append(f"{event['cost_sats']} sats")
    elif event.get("success"):
        parts.append("no usage reported")
    retries = event.get("retries") or 0
    if retries:
        parts.append(f"({retries} {'retry' if retries == 1 else 'retries'})")
    return "  ".join(parts)


def _describe_attempt(event: Mapping[str, Any]) -> str:
    hedge = " (hedge)" if event.get("hedge") else ""
    request = str(event.get("request_id") or "")[:8]
    return (
        f"! {event.get('provider')} {event.get('model')} attempt failed{hedge}: "
        f"{event.get('outcome')}  request {request}"
    )


def _describe_breaker(event: Mapping[str, Any]) -> str:
    return f"⚡ {event.get('provider')} breaker {event.get('from')} → {event.get('to')}"


def _describe_cooldown(event: Mapping[str, Any]) -> str:
    seconds = max(0.0, float(event.get("until") or 0) - float(event.get("ts") or 0))
    return (
        f"⏸ {event.get('provider')} {event.get('model')} cooling down for {seconds:.1f} s "
        f"({event.get('reason')})"
    )


def _describe_cooldown_end(event: Mapping[str, Any]) -> str:
    return f"▶ {event.get('provider')} {event.get('model')} cooldown over"


def _describe_dropped(event: Mapping[str, Any]) -> str:
    return f"… {event.get('count')} events dropped: this client read too slowly"


def _describe_other(event: Mapping[str, Any]) -> str:
    return f"? {event.get('type')}"


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "request": _describe_request,
    "attempt_failed": _describe_attempt,
    "breaker": _describe_breaker,
    "cooldown_started": _describe_cooldown,
    "cooldown_ended": _describe_cooldown_end,
    "dropped": _describe_dropped,
}


def _parse(message: str | bytes) -> dict[str, Any] | None:
    try:
        event: Any = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _close_text(exc: ConnectionClosed) -> str:
    if exc.reason is None:
        return "no reason given"
    return f"code {exc.reason.code}" + (f": {exc.reason.reason}" if exc.reason.reason else "")
