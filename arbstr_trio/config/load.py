"""Reading a TOML file into a :class:`Config`, with errors that say where the mistake is.

Loading runs in three steps, each reporting every problem it finds rather than the
first: TOML syntax; structure and types (one private cattrs converter, strict about
types and unknown keys, its errors turned into ``$.path: message`` lines); and checks
that span fields (duplicate names). Secrets are resolved between the first two steps,
so a missing ``${VAR}`` is reported at the key that named it.
"""

from __future__ import annotations

import enum
import os
import re
import stat
import tomllib
import typing
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
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
    KeySource,
    ResolvedKey,
    convention_variable,
    expand_or_literal,
    is_header_safe,
    resolve_key,
)
from arbstr_trio.config.client_keys import check_client_keys, resolve_client_keys
from arbstr_trio.config.models import (
    Config,
    HttpUrl,
    ListenAddress,
    NonNegativeInt,
    Percent,
    PositiveInt,
    Rate,
)
from arbstr_trio.config.routes import check_routes

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "load_config",
    "parse_config",
    "parse_document",
    "parse_listen",
    "permission_warning",
]


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds one line per mistake."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def report(self) -> str:
        lines = [f"invalid configuration in {self.source}:"]
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)


@attrs.frozen
class LoadedConfig:
    config: Config
    warnings: tuple[str, ...]


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read and check the TOML file at ``path``."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["the file is not UTF-8 text"]) from None
    loaded = parse_config(text, source=source, environ=environ)
    warning = permission_warning(Path(path))
    if warning:
        return attrs.evolve(loaded, warnings=(warning, *loaded.warnings))
    return loaded


def parse_config(
    text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Check TOML text; the entry point for files, embedded defaults and tests alike."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax error: {exc}"]) from None
    return parse_document(document, source=source, environ=environ)


def parse_document(
    document: dict[str, Any],
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Check a parsed TOML document (changed in place: secrets are resolved into it);
    the admin API runs its edited documents through here, as the file is."""
    warnings: list[str] = []
    env = os.environ if environ is None else environ
    problems = _resolve_secrets(document, env, warnings)
    problems.extend(resolve_client_keys(document, env, warnings))
    problems.extend(_resolve_admin_token(document, env))
    try:
        config = _converter.structure(document, Config)
    except (ClassValidationError, IterableValidationError) as exc:
        problems.extend(_describe(exc, "$"))
    if problems:
        raise ConfigError(source, sorted(problems, key=_natural_order))
    problems.extend(_cross_checks(config))
    if problems:
        raise ConfigError(source, problems)
    return LoadedConfig(config, tuple(warnings))


# --- secrets ---------------------------------------------------------------------------


def _resolve_secrets(
    document: dict[str, Any], environ: Mapping[str, str], warnings: list[str]
) -> list[str]:
    """Replace each provider's ``api_key`` string by a resolved :class:`ApiKey`."""
    problems: list[str] = []
    providers = document.get("providers")
    if not isinstance(providers, list):
        return problems
    for index, provider in enumerate(providers):
        if not isinstance(provider, dict):
            continue
        if "key_source" in provider:
            problems.append(f"$.providers[{index}].key_source: unknown key")
            continue
        path = f"$.providers[{index}].api_key"
        name = provider.get("name")
        configured = provider.get("api_key")
        if configured is not None and not isinstance(configured, str):
            problems.append(f"{path}: must be a string")
            provider["api_key"] = None
            continue
        if not isinstance(name, str):
            provider.pop("api_key", None)  # never echoed back in a converter message
            continue  # reported by the converter as $.providers[i].name
        try:
            resolved = resolve_key(configured, name, environ)
        except ValueError as exc:  # MissingEnvironmentVariable, or an unclosed ${
            problems.append(f"{path}: {exc}")
            provider["api_key"] = None  # reported once, here, not again by the converter
            continue
        if resolved.key is not None and not is_header_safe(resolved.key.reveal()):
            # An HTTP library would refuse it later, quoting the value in its error.
            problems.append(
                f"{path}: must be printable characters with no spaces at either end "
                f"(from {resolved.source.value}; the value is not shown)"
            )
            provider["api_key"] = None
            continue
        if configured and "${" not in configured:
            warnings.append(_literal_key_warning(name, resolved))
        provider["api_key"] = resolved.key
        provider["key_source"] = resolved.source
    return problems


def _resolve_admin_token(document: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """``[admin] token``: ``${VAR}`` expanded, else the text as written; never echoed."""
    admin = document.get("admin")
    if not isinstance(admin, dict) or "token" not in admin:
        return []
    configured = admin["token"]
    admin["token"] = None
    path = "$.admin.token"
    if not isinstance(configured, str):
        return [f"{path}: must be a string"]
    try:
        resolved = expand_or_literal(configured, environ)
    except ValueError as exc:
        return [f"{path}: {exc}"]
    assert resolved.key is not None
    value = resolved.key.reveal()
    if not value or not is_header_safe(value):
        return [f"{path}: must be printable characters, not empty (the value is not shown)"]
    admin["token"] = resolved.key
    return []


def _literal_key_warning(name: str, resolved: ResolvedKey) -> str:
    variable = convention_variable(name)
    if resolved.source is KeySource.CONVENTION:
        return (
            f"provider {name!r}: the api_key written in the config file is ignored because "
            f"{variable} is set; remove it from the file"
        )
    return (
        f"provider {name!r}: api_key is written in the config file; keep secrets out of "
        f'files: export {variable}=... or write api_key = "${{{variable}}}"'
    )


def permission_warning(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"config file {path} can be read by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"it may hold keys: chmod 600 {path}"
        )
    return None


# --- the converter ---------------------------------------------------------------------


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


_converter = _build_converter()


def _describe(exc: BaseException, path: str) -> list[str]:
    """Flatten cattrs' nested exception groups into ``$.path: message`` lines."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        lines: list[str] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            if isinstance(note, IterableValidationNote):
                sub_path = f"{path}[{note.index!r}]"
            else:
                sub_path = f"{path}.{note.name}"
            lines.extend(_describe(sub, sub_path))
        for sub in without:
            lines.extend(_describe(sub, path))
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


def _natural_order(problem: str) -> list[object]:
    """Sort ``$.providers[10]`` after ``$.providers[2]``: document order, near enough."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", problem)]


# --- checks across fields --------------------------------------------------------------


def _cross_checks(config: Config) -> list[str]:
    named: tuple[tuple[str, Sequence[str]], ...] = (
        ("providers", [p.name for p in config.providers]),
        ("chains", [c.name for c in config.chains]),
        ("keys", [k.name for k in config.keys]),
    )
    # Names go into URLs (the admin API), log lines and metric labels.
    problems: list[str] = [
        f"$.{section}[{index}].name: must be printable characters, without '/'"
        for section, names in named
        for index, name in enumerate(names)
        if not name.isprintable() or "/" in name
    ]
    first_seen: dict[str, int] = {}
    for index, provider in enumerate(config.providers):
        if not provider.name.strip():
            problems.append(f"$.providers[{index}].name: must not be empty")
        if provider.name in first_seen:
            problems.append(
                f"$.providers[{index}].name: duplicate provider name {provider.name!r} "
                f"(also $.providers[{first_seen[provider.name]}])"
            )
        else:
            first_seen[provider.name] = index
    for index, provider in enumerate(config.providers):
        problems.extend(
            f"$.providers[{index}].model_rates[{model!r}]: "
            f"provider {provider.name!r} does not serve this model"
            for model in provider.model_rates
            if not provider.serves_any_model
            and not (provider.serves(model) or model in provider.model_map.values())
        )
    ca_bundle = config.upstream.ca_bundle
    if ca_bundle and not (os.path.isfile(ca_bundle) and os.access(ca_bundle, os.R_OK)):
        problems.append(f"$.upstream.ca_bundle: {ca_bundle!r} is not a readable file")
    if config.retry.backoff_max_ms < config.retry.backoff_base_ms:
        problems.append("$.retry.backoff_max_ms: must be >= backoff_base_ms")
    rule_names: dict[str, int] = {}
    for index, rule in enumerate(config.policies.rules):
        if rule.name in rule_names:
            problems.append(
                f"$.policies.rules[{index}].name: duplicate policy name {rule.name!r} "
                f"(also $.policies.rules[{rule_names[rule.name]}])"
            )
        else:
            rule_names[rule.name] = index
    problems.extend(check_client_keys(config.keys))
    problems.extend(check_routes(config))
    return problems
