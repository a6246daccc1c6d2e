"""Reading a TOML file into a :class:`Config`, with errors that say where the mistake is.

Loading runs in three steps, each reporting every problem it finds rather than the
first: TOML syntax; structure and types (one private cattrs converter, strict about
types and unknown keys, its errors turned into ``$.path: message`` lines); and checks
that span fields (duplicate names). Secrets are resolved between the first two steps,
so a missing ``${VAR}`` is reported at the key that named it.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from cattrs.errors import (
    ClassValidationError,
    IterableValidationError,
)

from arbstr_trio.config.apikey import (
    KeySource,
    ResolvedKey,
    convention_variable,
    expand_or_literal,
    is_header_safe,
    resolve_key,
)
from arbstr_trio.config.client_keys import check_client_keys, resolve_client_keys
from arbstr_trio.config.converter import converter, describe, natural_order, parse_listen
from arbstr_trio.config.models import (
    Config,
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
        config = converter.structure(document, Config)
    except (ClassValidationError, IterableValidationError) as exc:
        problems.extend(describe(exc, "$"))
    if problems:
        raise ConfigError(source, sorted(problems, key=natural_order))
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
