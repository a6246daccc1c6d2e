"""Provider API keys: a string that refuses to be printed, and where it came from.

A key is read in exactly one place (:meth:`ApiKey.reveal`, when the upstream request
is built), so ``grep reveal`` audits every use. Everything else that might show a
key (``repr``, ``str``, f-strings, logging, JSON output) sees ``[REDACTED]`` or the
masked form.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
from collections.abc import Mapping

import attrs

__all__ = [
    "ApiKey",
    "KeySource",
    "MissingEnvironmentVariable",
    "ResolvedKey",
    "convention_variable",
    "expand_or_literal",
    "is_header_safe",
    "resolve_key",
]

_REDACTED = "[REDACTED]"
_TEMPLATE = re.compile(r"\$\{([^}]*)\}")
_MASK_PREFIX = 6
# Below this length even six characters give away too much of the key.
_MIN_LENGTH_TO_SHOW_PREFIX = 12


class KeySource(enum.Enum):
    """How a provider's key was found; ``arbstr-trio check`` reports it."""

    ENV_EXPANDED = "env-expanded"
    CONVENTION = "convention"
    LITERAL = "literal"
    NONE = "none"


class ApiKey:
    """A secret string. Comparison is constant-time; printing never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that must send it."""
        return self._value

    def digest(self) -> bytes:
        """SHA-256 of the key: what client keys are matched by, so that checking one
        compares fixed-length digests (constant time) and never the key itself."""
        return hashlib.sha256(self._value.encode()).digest()

    def masked(self) -> str:
        """A recognisable prefix, safe to show: ``sk-abc...***``."""
        if len(self._value) < _MIN_LENGTH_TO_SHOW_PREFIX:
            return "...***"
        return f"{self._value[:_MASK_PREFIX]}...***"

    def __repr__(self) -> str:
        return f"ApiKey({_REDACTED!r})"

    def __str__(self) -> str:
        return _REDACTED

    def __format__(self, spec: str) -> str:
        return format(_REDACTED, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiKey):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((ApiKey, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("ApiKey cannot be pickled: it would write the key out")


class MissingEnvironmentVariable(ValueError):
    """``${VAR}`` named a variable that is not set."""

    def __init__(self, variable: str) -> None:
        super().__init__(f"environment variable {variable} is not set")
        self.variable = variable


@attrs.frozen
class ResolvedKey:
    key: ApiKey | None
    source: KeySource
    # The variables the key came from, for messages; never the value.
    variables: tuple[str, ...] = ()


def convention_variable(provider_name: str) -> str:
    """``ARBSTR_<NAME>_API_KEY``: upper-cased, ``-`` and spaces become ``_``."""
    return "ARBSTR_" + re.sub(r"[- ]", "_", provider_name.upper()) + "_API_KEY"


def resolve_key(
    configured: str | None, provider_name: str, environ: Mapping[str, str] | None = None
) -> ResolvedKey:
    """Find a provider's key: ``${VAR}`` in config, else the convention variable, else literal.

    Raises :class:`MissingEnvironmentVariable` when ``${VAR}`` names an unset
    variable: a silently empty key would only fail later, at the provider, with a
    less helpful message.
    """
    env = os.environ if environ is None else environ
    if configured is not None and "${" in configured:
        return _expand(configured, env)
    variable = convention_variable(provider_name)
    from_convention = env.get(variable)
    if from_convention:
        return ResolvedKey(ApiKey(from_convention), KeySource.CONVENTION, (variable,))
    if configured:
        return ResolvedKey(ApiKey(configured), KeySource.LITERAL)
    return ResolvedKey(None, KeySource.NONE)


def expand_or_literal(configured: str, environ: Mapping[str, str]) -> ResolvedKey:
    """A client key: ``${VAR}`` expanded (a missing VAR raises), else the text as written.

    Unlike :func:`resolve_key` there is no convention variable: a key that lets clients
    in should be one somebody wrote into the config, not one picked up by name.
    """
    if "${" in configured:
        return _expand(configured, environ)
    return ResolvedKey(ApiKey(configured), KeySource.LITERAL)


def is_header_safe(key: str) -> bool:
    """Whether ``key`` can travel as ``Authorization: Bearer <key>`` exactly as it is."""
    return bool(key) and key == key.strip() and all(" " <= c <= "~" for c in key)


def _expand(template: str, env: Mapping[str, str]) -> ResolvedKey:
    if "${" in _TEMPLATE.sub("", template):
        raise ValueError("'${' without a closing '}'")
    variables: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if not name or name not in env:
            raise MissingEnvironmentVariable(name or "(empty name)")
        variables.append(name)
        return env[name]

    value = _TEMPLATE.sub(substitute, template)
    return ResolvedKey(ApiKey(value), KeySource.ENV_EXPANDED, tuple(variables))
