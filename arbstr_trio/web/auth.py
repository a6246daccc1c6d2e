"""The client-key gate: who may use the proxy, decided before any route runs.

With no ``[[keys]]`` configured the gate is open, as a proxy on 127.0.0.1 has always
been. With keys, every endpoint needs one (``Authorization: Bearer <key>`` or
``X-API-Key: <key>``) except ``/health`` and ``/metrics`` while ``[auth]`` leaves them
public, and the dashboard's static files under ``/ui/`` (they hold no data): deny by
default, so an endpoint added later is not open by accident.

Keys are matched by their SHA-256 digests with :func:`hmac.compare_digest` against
*every* configured key, without stopping at a match, so the time taken says nothing
about how much of a key was right or which key it was. The key presented is never
put in a message or a log line; only the matched key's *name* travels on, into the
exchange and the request log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import attrs

from arbstr_trio.config.models import Config
from arbstr_trio.errors import InvalidApiKey, MissingApiKey
from arbstr_trio.web.ui import is_ui_path

__all__ = ["Gate"]

Header = tuple[bytes, bytes]

_MISSING = (
    "this proxy needs an API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
)
_INVALID = "the API key sent is not one this proxy accepts"


@attrs.frozen
class Gate:
    keys: tuple[tuple[bytes, str], ...]
    """(SHA-256 of the key, the key's name) for each configured client key."""
    public_paths: frozenset[str]
    config: Config = attrs.field(eq=False, repr=False)
    """The configuration this gate was built from, to notice when it is replaced."""

    @classmethod
    def from_config(cls, config: Config) -> Gate:
        public = {"/health"} if config.auth.public_health else set()
        if config.auth.public_metrics:
            public.add("/metrics")
        keys = tuple((client.key.digest(), client.name) for client in config.keys)
        return cls(keys, frozenset(public), config)

    def admit(self, path: str, headers: Sequence[Header]) -> str | None:
        """The name of the key the request carries, or None where no key is needed.

        Raises :class:`MissingApiKey` (401) without credentials and
        :class:`InvalidApiKey` (403) when none of those sent is a configured key.
        """
        if not self.keys or path in self.public_paths or is_ui_path(path):
            # The dashboard's files hold no data; what they fetch needs a key.
            return None
        credentials = _credentials(headers)
        if not credentials:
            raise MissingApiKey(_MISSING)
        matched: str | None = None
        for credential in credentials:
            digest = hashlib.sha256(credential).digest()
            for known, name in self.keys:
                if hmac.compare_digest(digest, known):
                    matched = name
        if matched is None:
            raise InvalidApiKey(_INVALID)
        return matched


def _credentials(headers: Sequence[Header]) -> list[bytes]:
    """The first ``Authorization: Bearer`` token and the first ``X-API-Key``, if sent.

    Both are tried: an OpenAI SDK always sends ``Authorization``, so a client that puts
    its key in ``X-API-Key`` may well send a placeholder bearer token beside it. Only the
    first of each is taken, so a request cannot make the gate hash without bound.
    """
    bearer: bytes | None = None
    api_key: bytes | None = None
    for name, value in headers:
        if name == b"authorization" and bearer is None:
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key" and api_key is None and value.strip():
            api_key = value.strip()
    return [credential for credential in (bearer, api_key) if credential is not None]
