"""What a read of the request log asks for, parsed from a URL's query parameters.

Pure: no I/O, and "now" is passed in. ``/v1/stats`` and ``/v1/requests`` share the
time window and the filters; each adds its own shaping (``group_by`` and ``bucket``;
``sort``, ``limit`` and ``cursor``). Every mistake is a :class:`ClientError` (400)
whose ``param`` names the parameter at fault, unknown parameters included: a typo
like ``?provder=alpha`` must not quietly answer for every provider.

Times are compared as instants. ``since`` and ``until`` take any ISO 8601 form that
:meth:`datetime.fromisoformat` reads (``2024-05-01``, ``2024-05-01T12:00Z``,
``20240501T120000+0200``, ``2024-W18-3``...); a time without an offset is UTC. They
become Unix seconds, which is what the log stores, so ``12:00+02:00`` and
``10:00Z`` are the same instant. The window is ``since <= started_at < until``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import orjson

from arbstr_trio.errors import ClientError

__all__ = [
    "BUCKETS",
    "GROUP_BY",
    "MAX_BUCKETS",
    "MAX_LIMIT",
    "PRESETS",
    "SORTABLE",
    "Cursor",
    "Filters",
    "ListQuery",
    "Sort",
    "StatsQuery",
    "Window",
    "parse_instant",
    "parse_list_query",
    "parse_stats_query",
]

PRESETS: Mapping[str, float] = {
    "last_1h": 3_600.0,
    "last_24h": 86_400.0,
    "last_7d": 7 * 86_400.0,
    "last_30d": 30 * 86_400.0,
}
DEFAULT_STATS_RANGE = "last_24h"
GROUP_BY = ("model", "provider", "policy", "tier")
BUCKETS: Mapping[str, int] = {"hour": 3_600, "day": 86_400}
MAX_BUCKETS = 10_000
"""More buckets than this is a mistake (hour buckets over years), not a chart."""
SORTABLE = ("started_at", "latency_ms", "cost_msat", "ttfb_ms")
DEFAULT_SORT = "-started_at"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_WINDOW_PARAMS = ("range", "since", "until")
_FILTER_PARAMS = ("model", "provider", "policy", "streaming", "success")
_STATS_PARAMS = (*_WINDOW_PARAMS, *_FILTER_PARAMS, "group_by", "bucket")
_LIST_PARAMS = (
    *_WINDOW_PARAMS,
    *_FILTER_PARAMS,
    "status",
    "error_type",
    "sort",
    "limit",
    "cursor",
)

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class Window:
    """``since <= started_at < until``, in Unix seconds; None is unbounded."""

    since: float | None = None
    until: float | None = None
    preset: str | None = None
    """The ``range`` it came from, if any."""


@attrs.frozen(kw_only=True)
class Filters:
    """Equality filters on the log's columns; None matches anything."""

    model: str | None = None
    provider: str | None = None
    policy: str | None = None
    streaming: bool | None = None
    success: bool | None = None
    status: int | None = None
    error_type: str | None = None

    def given(self) -> dict[str, str | int | bool]:
        """The filters in force, by column, for SQL and for echoing back."""
        return {name: value for name, value in attrs.asdict(self).items() if value is not None}


@attrs.frozen(kw_only=True)
class StatsQuery:
    window: Window
    filters: Filters = Filters()
    group_by: str | None = None
    """A column of :data:`GROUP_BY`."""
    bucket: str | None = None
    """A key of :data:`BUCKETS`."""


@attrs.frozen
class Sort:
    column: str
    descending: bool

    @property
    def spec(self) -> str:
        """As written in the URL: ``-latency_ms``."""
        return f"-{self.column}" if self.descending else self.column


@attrs.frozen
class Cursor:
    """Where the previous page ended: its last row's sort value and row id.

    Keyset pagination: the next page is the rows that sort after this one, so rows
    written between two pages neither repeat nor shift the pages that follow.
    """

    sort: Sort
    value: int | float | None
    row_id: int

    def encode(self) -> str:
        raw = orjson.dumps([self.sort.spec, self.value, self.row_id])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@attrs.frozen(kw_only=True)
class ListQuery:
    window: Window
    filters: Filters = Filters()
    sort: Sort = Sort("started_at", descending=True)
    limit: int = DEFAULT_LIMIT
    after: Cursor | None = None


def parse_stats_query(params: Iterable[tuple[str, str]], now: float) -> StatsQuery:
    """``/v1/stats``'s parameters. Without a window, the last 24 hours; with only
    ``since``, up to now; with only ``until``, the 24 hours before it."""
    values = _collect(params, _STATS_PARAMS)
    window = _window(values, now, default_span=PRESETS[DEFAULT_STATS_RANGE])
    if window.preset is None and not {"since", "until"} & values.keys():
        window = attrs.evolve(window, preset=DEFAULT_STATS_RANGE)
    group_by = _optional(values, "group_by", lambda text: _choice(text, GROUP_BY))
    bucket = _optional(values, "bucket", lambda text: _choice(text, tuple(BUCKETS)))
    if bucket is not None:
        # A stats window is always bounded (see _window's default_span).
        assert window.since is not None
        assert window.until is not None
        width = BUCKETS[bucket]
        count = math.ceil(window.until / width) - math.floor(window.since / width)
        if count > MAX_BUCKETS:
            raise _invalid(
                "bucket",
                f"{bucket} buckets over this window would be {count}, more than "
                f"{MAX_BUCKETS}; narrow the window or use a wider bucket",
            )
    return StatsQuery(window=window, filters=_filters(values), group_by=group_by, bucket=bucket)


def parse_list_query(params: Iterable[tuple[str, str]], now: float) -> ListQuery:
    """``/v1/requests``'s parameters. Without a window, the whole log, newest first."""
    values = _collect(params, _LIST_PARAMS)
    sort = _optional(values, "sort", _sort) or _sort(DEFAULT_SORT)
    after = _optional(values, "cursor", _cursor)
    if after is not None and after.sort != sort:
        raise _invalid(
            "cursor",
            f"this cursor continues a listing sorted by {after.sort.spec}; "
            f"pass sort={after.sort.spec} with it, or start again without a cursor",
        )
    return ListQuery(
        window=_window(values, now, default_span=None),
        filters=_filters(values),
        sort=sort,
        limit=_optional(values, "limit", _limit) or DEFAULT_LIMIT,
        after=after,
    )


_YEAR_10000 = 253_402_300_800.0
"""Unix seconds at 10000-01-01Z: past it (or before 1970) no answer could say the date."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
"""What SQLite can bind: a cursor past it was not made by us."""


class _OutOfRange(ValueError):
    pass


def parse_instant(text: str) -> float:
    """An ISO 8601 date or date-time as Unix seconds; naive means UTC.

    Also read: a lower-case ``z``, and a space where the offset's ``+`` was, since
    an unencoded ``+`` in a query string arrives as a space.
    """
    candidate = text.strip()
    if candidate[-1:] == "z":
        candidate = candidate[:-1] + "Z"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        head, space, tail = candidate.rpartition(" ")
        if not space or not tail[:1].isdigit():
            raise
        moment = datetime.fromisoformat(f"{head}+{tail}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    if not 0 <= seconds < _YEAR_10000:
        raise _OutOfRange("must fall between 1970 and 9999 (UTC)")
    return seconds


def _collect(params: Iterable[tuple[str, str]], known: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in params:
        if name not in known:
            raise ClientError(
                f"unknown query parameter {name!r}; this endpoint takes {', '.join(known)}",
                param=name,
                code="unknown_parameter",
            )
        if name in values:
            raise _invalid(name, f"{name} is given more than once")
        if not value:
            raise _invalid(name, f"{name} is empty")
        values[name] = value
    return values


def _optional(values: Mapping[str, str], name: str, parse: Callable[[str], T]) -> T | None:
    text = values.get(name)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise _invalid(name, f"{name}={text!r}: {exc}") from None


def _window(values: Mapping[str, str], now: float, *, default_span: float | None) -> Window:
    preset = _optional(values, "range", lambda text: _choice(text, tuple(PRESETS)))
    if preset is not None:
        if "since" in values or "until" in values:
            raise _invalid(
                "range", "range cannot be combined with since or until; use one or the other"
            )
        return Window(since=now - PRESETS[preset], until=now, preset=preset)
    since = _optional(values, "since", _instant)
    until = _optional(values, "until", _instant)
    if default_span is not None:
        until = now if until is None else until
        since = until - default_span if since is None else since
    if since is not None and until is not None and since >= until:
        raise _invalid("since", "since must be earlier than until")
    return Window(since=since, until=until)


def _filters(values: Mapping[str, str]) -> Filters:
    # Only the parameters the endpoint accepts get this far (see _collect).
    return Filters(
        model=values.get("model"),
        provider=values.get("provider"),
        policy=values.get("policy"),
        streaming=_optional(values, "streaming", _boolean),
        success=_optional(values, "success", _boolean),
        status=_optional(values, "status", _status),
        error_type=values.get("error_type"),
    )


def _instant(text: str) -> float:
    try:
        return parse_instant(text)
    except _OutOfRange:
        raise
    except (ValueError, OverflowError):
        raise ValueError(
            "not an ISO 8601 date or time (e.g. 2024-05-01, 2024-05-01T12:00:00Z)"
        ) from None


def _choice(text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    return text


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError("must be true or false")


def _integer(text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError("must be a whole number")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"must be from {low} to {high}")
    return number


def _status(text: str) -> int:
    return _integer(text, 100, 599)


def _limit(text: str) -> int:
    return _integer(text, 1, MAX_LIMIT)


def _sort(text: str) -> Sort:
    column = text.removeprefix("-")
    if column not in SORTABLE:
        raise ValueError(f"must be one of {', '.join(SORTABLE)}, optionally prefixed with '-'")
    return Sort(column, descending=text.startswith("-"))


def _cursor(text: str) -> Cursor:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        decoded = None
    if not _is_cursor(decoded):
        raise ValueError("not a cursor this endpoint gave out")
    spec, value, row_id = decoded
    return Cursor(_sort(spec), value, row_id)


def _is_cursor(decoded: Any) -> bool:
    if not (isinstance(decoded, list) and len(decoded) == 3):
        return False
    spec, value, row_id = decoded
    return (
        isinstance(spec, str)
        and (value is None or (type(value) in (int, float) and math.isfinite(value)))
        and (type(value) is not int or _INT64_MIN <= value <= _INT64_MAX)
        and type(row_id) is int
        and _INT64_MIN <= row_id <= _INT64_MAX
    )


def _invalid(param: str, message: str) -> ClientError:
    return ClientError(message, param=param, code="invalid_parameter")
