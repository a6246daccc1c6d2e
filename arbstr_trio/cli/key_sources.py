"""Where each provider's key comes from, in words, without ever showing the key.

The loaded :class:`ProviderConfig` knows *how* its key was found but not which
``${VAR}`` named it, so the ``api_key`` templates are read again from the file: a
template is a variable name, never a secret, and a literal is never read back here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from arbstr_trio.config.apikey import KeySource, convention_variable
from arbstr_trio.config.models import ProviderConfig

__all__ = ["describe_key_source", "key_templates"]

_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def key_templates(path: str) -> dict[str, str]:
    """Provider name -> its ``api_key`` where that is a ``${VAR}`` template."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}  # the loader has read it already; a file changed under us loses detail only
    found: dict[str, str] = {}
    for provider in document.get("providers") or []:
        if not isinstance(provider, dict):
            continue
        name, configured = provider.get("name"), provider.get("api_key")
        if isinstance(name, str) and isinstance(configured, str) and "${" in configured:
            found[name] = configured
    return found


def describe_key_source(provider: ProviderConfig, templates: dict[str, str]) -> str:
    """``env-expanded (${OPENAI_API_KEY})``, ``convention (ARBSTR_X_API_KEY)``, ..."""
    source = provider.key_source
    if source is KeySource.ENV_EXPANDED:
        variables = _VARIABLE.findall(templates.get(provider.name, ""))
        named = ", ".join(f"${{{variable}}}" for variable in variables)
        return f"env-expanded ({named})" if named else "env-expanded"
    if source is KeySource.CONVENTION:
        return f"convention ({convention_variable(provider.name)})"
    if source is KeySource.LITERAL:
        return "literal (in the file)"
    return "missing"
