"""The one private cattrs converter: TOML values into config models, strictly.

Strict about types (a boolean is not a number, a string not a list) and unknown keys,
with a hook per constrained type (rates, URLs, listen addresses...) raising a short
message; :func:`describe` flattens cattrs' nested exception groups into the
``$.path: message`` lines the loader reports.
"""

from __future__ import annotations

import enum
import re
import typing
import urllib.parse
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import cattrs
import cattrs.cols
import cattrs.gen
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from arbstr_trio.config.apikey import (
    ApiKey,
)
from arbstr_trio.config.models import (
    Config,
    HttpUrl,
    ListenAddress,
    NonNegativeInt,
    Percent,
    PositiveInt,
    Rate,
)

__all__ = ["converter", "describe", "natural_order", "parse_listen"]


class _Invalid(ValueError):
    """A value of the right shape but outside what the field allows; str() is the message."""


def _strict(kind: type | tuple[type, ...], label: str) -> Callable[[object, object], Any]:
    def check(value: object, _type: object) -> Any:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise _Invalid(f"must be {label}, not a boolean")
        if not isinstance(value, kind):
            raise _Invalid(f"must be {label}, not {_toml_type(value)}")
        return value

    return check


def _toml_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


_check_str = _strict(str, "a string")
_check_int = _strict(int, "an integer")
_check_number = _strict((int, float), "a number")


_MOST_SATS = 10**12
"""Beyond any real price or budget; larger numbers would overflow the request log's
integers once in millisatoshis, and JSON's."""


def _structure_rate(value: object, _type: object) -> Rate:
    number = _check_number(value, _type)
    rate = Decimal(str(number))
    if not rate.is_finite() or rate < 0:
        raise _Invalid("must be >= 0")
    if rate > _MOST_SATS:
        raise _Invalid(f"must be at most {_MOST_SATS:,} (sats)")
    return Rate(rate)


def _structure_positive_int(value: object, _type: object) -> PositiveInt:
    number = _check_int(value, _type)
    if number < 1:
        raise _Invalid("must be >= 1")
    return PositiveInt(number)


def _structure_non_negative_int(value: object, _type: object) -> NonNegativeInt:
    number = _check_int(value, _type)
    if number < 0:
        raise _Invalid("must be >= 0")
    return NonNegativeInt(number)


def _structure_percent(value: object, _type: object) -> Percent:
    number = float(_check_number(value, _type))
    if not 0 <= number <= 100:
        raise _Invalid("must be from 0 to 100")
    return Percent(number)


def _structure_url(value: object, _type: object) -> HttpUrl:
    text = _check_str(value, _type)
    parsed = urllib.parse.urlsplit(text)
    if "@" in parsed.netloc:  # checked first: the messages below quote the URL
        raise _Invalid("must not carry credentials; put the key in api_key")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise _Invalid(f"must be an http:// or https:// URL, got {text!r}")
    if parsed.query or parsed.fragment:
        raise _Invalid("must be a base URL without query or fragment")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError:
        raise _Invalid(f"has a bad port: {text!r}") from None
    return HttpUrl(text.rstrip("/"))


def _structure_listen(value: object, _type: object) -> ListenAddress:
    text = _check_str(value, _type)
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _Invalid(f"must be HOST:PORT (IPv6 hosts in brackets), got {text!r}")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise _Invalid(f"must be HOST:PORT with a port from 0 to 65535, got {text!r}")
    return ListenAddress(host, int(port_text))


def parse_listen(text: str) -> ListenAddress:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a :class:`ListenAddress`; ValueError if not."""
    return _structure_listen(text, ListenAddress)


def _structure_api_key(value: object, _type: object) -> ApiKey | None:
    # _resolve_secrets has already turned the configured string into an ApiKey.
    if value is None or isinstance(value, ApiKey):
        return value
    raise _Invalid("must be a string")  # pragma: no cover - caught by _resolve_secrets


def _structure_str_tuple(value: object, _type: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"must be an array of strings, not {_toml_type(value)}")
    for item in value:
        if not isinstance(item, str):
            raise _Invalid(f"must be an array of strings; found {_toml_type(item)}")
    return tuple(value)


def _structure_str_mapping(value: object, _type: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table of strings, not {_toml_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Invalid(f"[{key!r}] must be a string, not {_toml_type(item)}")
    return dict(value)


def _enum_hook(enum_type: type[enum.Enum]) -> Callable[[object, object], enum.Enum]:
    choices = ", ".join(repr(member.value) for member in enum_type)

    def structure(value: object, _type: object) -> enum.Enum:
        try:
            return enum_type(value)
        except ValueError:
            raise _Invalid(f"must be one of {choices}, got {value!r}") from None

    return structure


def _is_table_array(type_: object) -> bool:
    args = typing.get_args(type_)
    return (
        typing.get_origin(type_) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and args[0] is not str
    )


def _table_array_hook(type_: Any, converter: cattrs.Converter) -> Any:
    """``[[providers]]`` and its kind: an array first, then each table in it."""
    structure_items = cattrs.cols.homogenous_tuple_structure_factory(type_, converter)

    def structure(value: object, _type: object) -> object:
        if not isinstance(value, list):
            raise _Invalid(f"must be an array of tables, not {_toml_type(value)}")
        return structure_items(value, _type)

    return structure


def _table_hook(type_: Any, converter: cattrs.Converter) -> Any:
    """A TOML table for one of our attrs classes: a table first, then its keys."""
    structure_fields = cattrs.gen.make_dict_structure_fn(type_, converter)

    def structure(value: object, _type: object) -> object:
        if not isinstance(value, dict):
            raise _Invalid(f"must be a table, not {_toml_type(value)}")
        return structure_fields(value, _type)

    return structure


def _build_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _check_str)
    converter.register_structure_hook(int, _check_int)
    converter.register_structure_hook(float, lambda v, t: float(_check_number(v, t)))
    converter.register_structure_hook(bool, _strict(bool, "true or false"))
    converter.register_structure_hook(Rate, _structure_rate)
    converter.register_structure_hook(PositiveInt, _structure_positive_int)
    converter.register_structure_hook(NonNegativeInt, _structure_non_negative_int)
    converter.register_structure_hook(Percent, _structure_percent)
    converter.register_structure_hook(HttpUrl, _structure_url)
    converter.register_structure_hook(ListenAddress, _structure_listen)
    converter.register_structure_hook(ApiKey, _structure_api_key)
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)
    converter.register_structure_hook_func(
        lambda t: t == typing.Mapping[str, str], _structure_str_mapping
    )
    converter.register_structure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _enum_hook
    )
    converter.register_structure_hook_factory(_is_table_array, _table_array_hook)
    converter.register_structure_hook_factory(
        lambda t: attrs.has(t) and t.__module__ == Config.__module__, _table_hook
    )
    return converter


converter = _build_converter()


def describe(exc: BaseException, path: str) -> list[str]:
    """Flatten cattrs' nested exception groups into ``$.path: message`` lines."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        lines: list[str] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            if isinstance(note, IterableValidationNote):
                sub_path = f"{path}[{note.index!r}]"
            else:
                sub_path = f"{path}.{note.name}"
            lines.extend(describe(sub, sub_path))
        for sub in without:
            lines.extend(describe(sub, path))
        return lines
    if isinstance(exc, ForbiddenExtraKeysError):
        return [f"{path}.{key}: unknown key" for key in sorted(exc.extra_fields)]
    if isinstance(exc, KeyError):
        return [f"{path}: required key missing"]
    if isinstance(exc, _Invalid):
        return [f"{path}: {exc}"]
    if isinstance(exc, ValueError):  # an attrs validator's own message, as in MockBehaviour
        return [f"{path}: {exc}"]
    if isinstance(exc, TypeError | AttributeError):
        return [f"{path}: invalid value ({exc})"]
    return [f"{path}: {exc!r}"]


def natural_order(problem: str) -> list[object]:
    """Sort ``$.providers[10]`` after ``$.providers[2]``: document order, near enough."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", problem)]
