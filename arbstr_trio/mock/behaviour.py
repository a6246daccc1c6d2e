"""How a mock provider answers: its pace, its shape and the faults it injects.

One value type serves three places: a provider's ``[providers.mock]`` table in the
config, the ``arbstr-trio mock-upstream`` flags, and the per-request ``x-mock``
header (``x-mock: status=503; retry_after=2``) that overrides either for one request.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["LineEnding", "MockBehaviour", "parse_overrides"]


class LineEnding(enum.Enum):
    LF = "lf"
    CRLF = "crlf"


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, int | float) and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0")


@attrs.frozen(kw_only=True)
class MockBehaviour:
    """Everything a mock provider can be told to do. Defaults answer fast and well."""

    latency_ms: int = attrs.field(default=0, validator=_non_negative)
    """Wait this long before the response headers."""
    chunks: int = attrs.field(default=8, validator=_non_negative)
    """Content chunks in a streamed answer; also the completion token count."""
    chunk_delay_ms: int = attrs.field(default=0, validator=_non_negative)
    """Pause between streamed chunks."""
    status: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            [attrs.validators.ge(200), attrs.validators.le(599)]  # what HTTP/1.1 can answer
        ),
    )
    """Answer with this HTTP status and an OpenAI error body instead of a completion."""
    retry_after: str | None = None
    """``Retry-After`` value sent with a fault status (seconds or an HTTP-date)."""
    ratelimit: Mapping[str, str] = attrs.field(factory=dict)
    """Extra ``x-ratelimit-<name>`` headers, e.g. ``{"remaining-requests": "0"}``."""
    drop_after: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    """Close the connection after this many chunks (0: before any response byte)."""
    stall_ms: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    """Stall this long before answering; with ``stall_after``, after that many chunks."""
    stall_after: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    fault_rate: float = attrs.field(default=1.0, validator=_non_negative)
    """Share of requests the fault (status, drop, stall) applies to, from 0 to 1."""
    fault_count: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    """Inject the fault into at most this many requests, counted over the provider's
    life, then answer normally: ``status=503; fault_count=1`` fails once, then succeeds."""
    line_ending: LineEnding = LineEnding.LF
    data_space: bool = True
    """``data: {...}`` when true, ``data:{...}`` when false (both are valid SSE)."""
    omit_usage: bool = False
    """Behave like a provider that ignores ``stream_options.include_usage``."""

    @property
    def has_fault(self) -> bool:
        return self.status is not None or self.drop_after is not None or self.stall_ms is not None


def parse_overrides(base: MockBehaviour, header: str) -> MockBehaviour:
    """Apply ``key=value; key=value`` from an ``x-mock`` header on top of ``base``.

    Raises ValueError naming the offending key, which the mock answers as a 400: a
    typo in a test's fault header should fail loudly, not inject nothing.
    """
    changes: dict[str, Any] = {}
    ratelimit: dict[str, str] = dict(base.ratelimit)
    for item in header.replace(",", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not sep:
            raise ValueError(f"x-mock: {item!r} is not key=value")
        if key.startswith("ratelimit_"):
            ratelimit[key.removeprefix("ratelimit_").replace("_", "-")] = raw
            continue
        if key not in _FIELD_TYPES or key == "ratelimit":
            raise ValueError(f"x-mock: unknown key {key!r}")
        changes[key] = _parse_value(key, raw)
    if ratelimit != base.ratelimit:
        changes["ratelimit"] = ratelimit
    return attrs.evolve(base, **changes)


def _parse_value(key: str, raw: str) -> object:
    target = _FIELD_TYPES[key]
    if isinstance(target, types.UnionType):
        options = [t for t in typing.get_args(target) if t is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        target = options[0]
    try:
        if target is bool:
            if raw.lower() in ("1", "true", "yes"):
                return True
            if raw.lower() in ("0", "false", "no"):
                return False
            raise ValueError(raw)
        if target is LineEnding:
            return LineEnding(raw.lower())
        if target is int:
            return int(raw)
        if target is float:
            return float(raw)
        if target is str:
            return raw
    except ValueError:
        raise ValueError(
            f"x-mock: {key}={raw!r} is not a valid {getattr(target, '__name__', target)}"
        ) from None
    raise ValueError(f"x-mock: {key} cannot be set from a header")  # pragma: no cover


_FIELD_TYPES: dict[str, object] = typing.get_type_hints(MockBehaviour)
