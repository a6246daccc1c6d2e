"""``/v1/admin/``: providers, chains and keys changed while the proxy serves.

Behind its own token (``[admin] token``), checked here and not by the client-key gate;
without a token configured the admin API does not exist (404). Each change is made to
the admin overlay (:mod:`arbstr_trio.reconfigure`), the whole configuration is built
again and checked by the same loader as the file (a problem is a 400 listing the
loader's ``$.path: message`` lines), the overlay is written to disk, and only then is
the new configuration applied, for the next request. Keys appear only masked.

    GET    /v1/admin/{section}          every entry
    POST   /v1/admin/{section}          add one (its "name" in the body); 409 if it exists
    GET    /v1/admin/{section}/{name}   one entry
    PUT    /v1/admin/{section}/{name}   replace (or add) it
    DELETE /v1/admin/{section}/{name}   remove it

``section`` is ``providers``, ``chains`` or ``keys``; a body is a JSON object shaped as
the section's TOML table. A secret sent back exactly as a response masked it keeps the
configured value, so an entry read, edited and put back does not lose its key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import tomllib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs
import orjson

from arbstr_trio.config.apikey import ApiKey
from arbstr_trio.config.load import ConfigError
from arbstr_trio.errors import (
    ClientError,
    InvalidApiKey,
    MethodNotAllowed,
    MissingApiKey,
    NotFound,
    RouteNotFound,
)
from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import rate_to_json
from arbstr_trio.reconfigure import SECTIONS, ConfigSource, merge, prepare, tell_other_workers
from arbstr_trio.runtime import Runtime
from arbstr_trio.web.asgi import Receive, ResponseSend, Scope, read_body, send_json

__all__ = ["ADMIN_PREFIX", "admin", "check_admin_token", "is_admin_path"]

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/v1/admin"
_SECRETS = {"providers": "api_key", "keys": "key"}
_MISSING = "the admin API needs 'Authorization: Bearer <admin token>'"
_INVALID = "the admin token sent is not this proxy's"


class Conflict(ClientError):
    status = 409
    default_code = "conflict"


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def check_admin_token(runtime: Runtime, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """404 without an admin token configured; 401 without a bearer token; 403 if wrong."""
    token = runtime.config.admin.token
    if token is None or runtime.source is None:
        raise RouteNotFound("no such endpoint: the admin API is not enabled")
    sent: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credential = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credential.strip():
                sent = credential.strip()
            break
    if sent is None:
        raise MissingApiKey(_MISSING)
    if not hmac.compare_digest(hashlib.sha256(sent).digest(), token.digest()):
        raise InvalidApiKey(_INVALID)


async def admin(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    check_admin_token(runtime, scope["headers"])
    source = runtime.source
    assert source is not None  # checked above
    parts = scope["path"].removeprefix(ADMIN_PREFIX).strip("/").split("/")
    section = parts[0]
    if section not in SECTIONS or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise RouteNotFound(f"no such endpoint: {scope['method']} {scope['path']}")
    method = scope["method"]
    if len(parts) == 1:
        if method == "GET":
            entries = [_render(entry) for entry in _entries(runtime, section)]
            await send_json(send, 200, (), {section: entries})
        elif method == "POST":
            body = await _read_object(runtime, scope, receive)
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise ClientError("the body needs a 'name' (a non-empty string)", param="name")
            if _find(runtime, section, name) is not None:
                raise Conflict(f"{section[:-1]} {name!r} exists; PUT {scope['path']}/{name}")
            await send_json(send, 201, (), _change(runtime, source, section, name, body))
        else:
            raise _not_allowed(scope["path"], method, "GET, POST")
        return
    name = parts[1]
    if method == "GET":
        await send_json(send, 200, (), _render(_existing(runtime, section, name)))
    elif method == "PUT":
        body = await _read_object(runtime, scope, receive)
        if body.get("name", name) != name:
            raise ClientError(f"the body's name must be {name!r}, as in the URL", param="name")
        body = _keep_masked_secret(runtime, source, section, name, body)
        await send_json(send, 200, (), _change(runtime, source, section, name, body))
    elif method == "DELETE":
        _existing(runtime, section, name)
        _change(runtime, source, section, name, None)
        await send_json(send, 200, (), {"deleted": name})
    else:
        raise _not_allowed(scope["path"], method, "DELETE, GET, PUT")


def _not_allowed(path: str, method: str, allowed: str) -> MethodNotAllowed:
    return MethodNotAllowed(
        f"{path} does not accept {method}; use {allowed}", headers=[(b"allow", allowed.encode())]
    )


async def _read_object(runtime: Runtime, scope: Scope, receive: Receive) -> dict[str, Any]:
    raw = await read_body(scope, receive, runtime.config.server.max_body_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ClientError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ClientError("the body must be a JSON object")
    return body


def _entries(runtime: Runtime, section: str) -> tuple[Any, ...]:
    entries: tuple[Any, ...] = getattr(runtime.config, section)
    return entries


def _find(runtime: Runtime, section: str, name: str) -> Any | None:
    return next((e for e in _entries(runtime, section) if e.name == name), None)


def _existing(runtime: Runtime, section: str, name: str) -> Any:
    entry = _find(runtime, section, name)
    if entry is None:
        raise NotFound(f"no {section[:-1]} named {name!r}")
    return entry


def _change(
    runtime: Runtime,
    source: ConfigSource,
    section: str,
    name: str,
    body: dict[str, Any] | None,
) -> Any:
    """Check, persist and apply one change; the entry as it now runs, as JSON (None if
    deleted)."""
    if body is not None:
        _refuse_expansion(section, body)
    # Under the overlay's lock and from the file as it is now: another worker of
    # serve --workers may have changed it since this one last read it.
    with source.locked_overlay() as overlay:
        entry = None if body is None else {k: v for k, v in body.items() if k != "name"}
        overlay[section][name] = entry
        try:
            loaded = source.check(overlay)
        except ConfigError as exc:
            error = ClientError(
                "invalid configuration: " + "; ".join(exc.problems), code="invalid_config"
            )
            error.details["problems"] = list(exc.problems)
            raise error from None
        # Rendered before anything is kept, so an answer that cannot be made refuses the
        # change rather than reporting an error for a change already in force.
        entries = getattr(loaded.config, section)
        shown = None if body is None else _render(next(e for e in entries if e.name == name))
        source.save_overlay(overlay)
    runtime.apply(prepare(runtime, source, loaded.config))
    tell_other_workers()
    log.info("admin: %s %r %s", section, name, "deleted" if body is None else "set")
    return shown


def _refuse_expansion(section: str, body: Mapping[str, Any]) -> None:
    """``${VAR}`` is for the operator's file: through the API it would let the token's
    holder read the proxy's environment (into a key, or out to a provider URL)."""
    field = _SECRETS.get(section)
    value = None if field is None else body.get(field)
    if isinstance(value, str) and "${" in value:
        raise ClientError(
            f"{field}: ${{VAR}} expansion is only for the config file; send the key itself",
            param=field,
        )


def _keep_masked_secret(
    runtime: Runtime, source: ConfigSource, section: str, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    """A secret sent back as it was shown (masked) keeps the value configured."""
    field = _SECRETS.get(section)
    current = _find(runtime, section, name)
    if field is None or current is None:
        return body
    shown = getattr(current, field)
    if not isinstance(shown, ApiKey) or body.get(field) != shown.masked():
        return body
    assert source.text is not None
    raw = merge(tomllib.loads(source.text), source.overlay).get(section, [])
    configured = next((t.get(field) for t in raw if t.get("name") == name), None)
    kept = dict(body)
    if configured is None:
        kept.pop(field)
    else:
        kept[field] = configured
    return kept


def _render(value: Any) -> Any:
    """A config value as JSON: keys masked, rates as numbers, enums by value."""
    if isinstance(value, ApiKey):
        return value.masked()
    if attrs.has(type(value)):
        return {f.name: _render(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Decimal):
        return rate_to_json(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _render(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_render(item) for item in value]
    return value
