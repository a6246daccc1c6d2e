"""``[[keys]]``: the keys clients present to use the proxy, resolved and checked.

Client keys are secrets like provider keys and are handled the same way: ``${VAR}``
expanded before the converter runs (a missing variable is reported at the key that
named it), a literal warned about, the value kept in an :class:`ApiKey` and never put
into a message. Problems are reported by path and, where two entries clash, by the
entries' names, never by their keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from arbstr_trio.config.apikey import KeySource, expand_or_literal, is_header_safe
from arbstr_trio.config.models import ClientKey

__all__ = ["check_client_keys", "resolve_client_keys"]


def resolve_client_keys(
    document: dict[str, Any], environ: Mapping[str, str], warnings: list[str]
) -> list[str]:
    """Replace each ``[[keys]]`` entry's ``key`` string by a resolved :class:`ApiKey`.

    An entry whose key cannot be used gets ``None`` in its place, so the converter
    does not report it a second time; the problem returned here already says why.
    """
    problems: list[str] = []
    entries = document.get("keys")
    if not isinstance(entries, list):
        return problems  # the converter says what it should have been
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        if "key_source" in entry:
            del entry["key_source"]
            problems.append(f"$.keys[{index}].key_source: unknown key")
        configured = entry.get("key")
        if configured is None:
            continue  # the converter reports it as required
        path = f"$.keys[{index}].key"
        entry["key"] = None
        if not isinstance(configured, str):
            problems.append(f"{path}: must be a string")
            continue
        try:
            resolved = expand_or_literal(configured, environ)
        except ValueError as exc:  # MissingEnvironmentVariable, or an unclosed ${
            problems.append(f"{path}: {exc}")
            continue
        assert resolved.key is not None  # expand_or_literal always yields a key
        value = resolved.key.reveal()
        if not value:
            problems.append(f"{path}: must not be empty (from {resolved.source.value})")
            continue
        if not is_header_safe(value):
            problems.append(
                f"{path}: must be printable characters with no spaces at either end "
                f"(from {resolved.source.value}; the value is not shown)"
            )
            continue
        if resolved.source is KeySource.LITERAL:
            warnings.append(_literal_warning(entry.get("name"), index))
        entry["key"] = resolved.key
        entry["key_source"] = resolved.source
    return problems


def check_client_keys(keys: Sequence[ClientKey]) -> list[str]:
    """Names present and unique; no key shared by two names (the log could not tell
    their requests apart, and one of them was probably pasted by mistake)."""
    problems: list[str] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for index, client in enumerate(keys):
        if not client.name.strip():
            problems.append(f"$.keys[{index}].name: must not be empty")
        elif client.name in names:
            problems.append(
                f"$.keys[{index}].name: duplicate key name {client.name!r} "
                f"(also $.keys[{names[client.name]}])"
            )
        else:
            names[client.name] = index
        digest = client.key.digest()
        if digest in digests:
            first = digests[digest]
            problems.append(
                f"$.keys[{index}].key: {client.name!r} has the same key as "
                f"{keys[first].name!r} ($.keys[{first}]); give each client its own key"
            )
        else:
            digests[digest] = index
    return problems


def _literal_warning(name: object, index: int) -> str:
    label = repr(name) if isinstance(name, str) else f"$.keys[{index}]"
    stem = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() if isinstance(name, str) else ""
    variable = f"{stem}_KEY" if stem else "CLIENT_KEY"
    return (
        f"client key {label}: key is written in the config file; keep secrets out of "
        f'files: export {variable}=... and write key = "${{{variable}}}"'
    )
