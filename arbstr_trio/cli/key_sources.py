"""Where each key comes from, in words, without ever showing the key.

The loaded :class:`ProviderConfig` and :class:`ClientKey` know *how* their key was
found but not which ``${VAR}`` named it, so the ``api_key`` and ``key`` templates are
read again from the file: a template is a variable name, never a secret, and a literal
is never read back here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from arbstr_trio.config.apikey import KeySource, convention_variable
from arbstr_trio.config.models import ClientKey, ProviderConfig

__all__ = [
    "client_key_templates",
    "describe_client_key_source",
    "describe_key_source",
    "key_templates",
]

_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def key_templates(path: str) -> dict[str, str]:
    """Provider name -> its ``api_key`` where that is a ``${VAR}`` template."""
    return _templates(_read(path), "providers", "api_key")


def client_key_templates(path: str) -> dict[str, str]:
    """Client key name (``[[keys]] name``) -> its ``key`` where that is a ``${VAR}`` template."""
    return _templates(_read(path), "keys", "key")


def describe_key_source(provider: ProviderConfig, templates: dict[str, str]) -> str:
    """``env-expanded (${OPENAI_API_KEY})``, ``convention (ARBSTR_X_API_KEY)``, ..."""
    if provider.key_source is KeySource.CONVENTION:
        return f"convention ({convention_variable(provider.name)})"
    return _describe(provider.key_source, templates.get(provider.name, ""))


def describe_client_key_source(client: ClientKey, templates: dict[str, str]) -> str:
    """``env-expanded (${TEAM_A_KEY})`` or ``literal (in the file)``."""
    return _describe(client.key_source, templates.get(client.name, ""))


def _describe(source: KeySource, template: str) -> str:
    if source is KeySource.ENV_EXPANDED:
        named = ", ".join(f"${{{variable}}}" for variable in _VARIABLE.findall(template))
        return f"env-expanded ({named})" if named else "env-expanded"
    if source is KeySource.LITERAL:
        return "literal (in the file)"
    if source is KeySource.CONVENTION:
        return "convention"
    return "missing"


def _read(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}  # the loader has read it already; a file changed under us loses detail only


def _templates(document: dict[str, Any], table: str, field: str) -> dict[str, str]:
    found: dict[str, str] = {}
    entries = document.get(table)
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        name, configured = entry.get("name"), entry.get(field)
        if isinstance(name, str) and isinstance(configured, str) and "${" in configured:
            found[name] = configured
    return found
