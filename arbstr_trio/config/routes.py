"""Checks on policies and chains that span the config: names, and what they point at.

Each check reports at the path of the value that is wrong (``$.chains[0].entries[1].
provider: unknown provider 'gamma'``), so a typo is found where it was made, not when a
request first takes that route.
"""

from __future__ import annotations

from arbstr_trio.config.models import Config

__all__ = ["check_routes", "served_model_names"]


def served_model_names(config: Config) -> set[str]:
    """The model names providers declare (their ``models`` and ``model_map`` keys)."""
    return {name for p in config.providers for name in (*p.models, *p.model_map)}


def check_routes(config: Config) -> list[str]:
    return [*_check_policies(config), *_check_chains(config)]


def _check_policies(config: Config) -> list[str]:
    problems: list[str] = []
    for index, rule in enumerate(config.policies.rules):
        path = f"$.policies.rules[{index}]"
        if not rule.name.strip():
            problems.append(f"{path}.name: must not be empty")
        problems.extend(
            f"{path}.keywords[{k}]: must not be empty"
            for k, keyword in enumerate(rule.keywords)
            if not keyword.strip()
        )
    return problems


def _check_chains(config: Config) -> list[str]:
    problems: list[str] = []
    providers = {provider.name: provider for provider in config.providers}
    models = served_model_names(config)
    first_seen: dict[str, int] = {}
    for index, chain in enumerate(config.chains):
        path = f"$.chains[{index}]"
        if not chain.name.strip():
            problems.append(f"{path}.name: must not be empty")
        if chain.name in first_seen:
            problems.append(
                f"{path}.name: duplicate chain name {chain.name!r} "
                f"(also $.chains[{first_seen[chain.name]}])"
            )
        else:
            first_seen[chain.name] = index
        if chain.name in models:
            # A client asking for it would get the chain and never the model: say so now.
            problems.append(
                f"{path}.name: {chain.name!r} is also a model a provider serves; "
                "a chain needs a name of its own"
            )
        if not chain.entries:
            problems.append(f"{path}.entries: must list at least one {{provider, model}}")
        seen_providers: dict[str, int] = {}
        for number, entry in enumerate(chain.entries):
            entry_path = f"{path}.entries[{number}]"
            provider = providers.get(entry.provider)
            if provider is None:
                problems.append(f"{entry_path}.provider: unknown provider {entry.provider!r}")
                continue
            if entry.provider in seen_providers:
                # The engine counts attempts, cooldowns and in-flight work per provider.
                problems.append(
                    f"{entry_path}.provider: provider {entry.provider!r} is already in this "
                    f"chain (entries[{seen_providers[entry.provider]}]); a chain lists each "
                    "provider once"
                )
            else:
                seen_providers[entry.provider] = number
            if not (provider.serves(entry.model) or entry.model in provider.model_map.values()):
                problems.append(
                    f"{entry_path}.model: provider {entry.provider!r} does not serve "
                    f"{entry.model!r}; add it to the provider's models"
                )
    return problems
