"""Config checks for policies and chains: every mistake named at its path."""

from __future__ import annotations

from decimal import Decimal

import pytest

from arbstr_trio.config import ConfigError, parse_config
from arbstr_trio.config.models import ChainEntry, Strategy

PROVIDERS = """
[[providers]]
name = "alpha"
url = "http://a.invalid/v1"
models = ["gpt-4o-mini", "gpt-4o"]

[[providers]]
name = "beta"
url = "http://b.invalid/v1"
model_map = { "mini" = "vendor/mini-2024" }
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(PROVIDERS + text, environ={})
    return caught.value.problems


def test_policies_and_chains_load() -> None:
    loaded = parse_config(
        PROVIDERS
        + """
[policies]
default_strategy = "lowest_cost"

[[policies.rules]]
name = "coding"
keywords = ["code"]
strategy = "round_robin"
max_cost_sats = 2.5
hedge_after_ms = 150

[[policies.rules]]
name = "plain"

[[chains]]
name = "fast"
entries = [{provider = "alpha", model = "gpt-4o-mini"}, {provider = "beta", model = "mini"}]

[[chains]]
name = "spread"
strategy = "round_robin"
entries = [{provider = "beta", model = "vendor/mini-2024"}]
""",
        environ={},
    )
    config = loaded.config
    assert config.policies.default_strategy is Strategy.CHEAPEST
    coding, plain = config.policies.rules
    assert coding.strategy is Strategy.ROUND_ROBIN
    assert coding.max_cost_sats == Decimal("2.5")
    assert coding.hedge_after_ms == 150
    assert plain.strategy is None  # the default strategy applies
    fast = config.chain("fast")
    assert fast is not None
    assert fast.strategy is Strategy.ORDERED
    assert fast.entries[1] == ChainEntry(provider="beta", model="mini")
    assert config.chain("gpt-4o") is None
    assert not any("policies" in warning for warning in loaded.warnings)


def test_chain_mistakes_are_named_by_path() -> None:
    found = problems(
        """
[[chains]]
name = "fast"
entries = [{provider = "gamma", model = "x"}, {provider = "alpha", model = "llama"}]

[[chains]]
name = "fast"
entries = [{provider = "alpha", model = "gpt-4o"}, {provider = "alpha", model = "gpt-4o-mini"}]

[[chains]]
name = "gpt-4o"
entries = []

[[chains]]
name = "mini"
strategy = "fastest"
entries = [{provider = "beta"}]
"""
    )
    assert found[0] == "$.chains[3].entries[0].model: required key missing"
    assert found[1].startswith("$.chains[3].strategy: must be one of 'cheapest'")
    assert "got 'fastest'" in found[1]
    assert len(found) == 2  # checks across fields wait for a file that structures
    found = problems(
        """
[[chains]]
name = "fast"
entries = [{provider = "gamma", model = "x"}, {provider = "alpha", model = "llama"}]

[[chains]]
name = "fast"
entries = [{provider = "alpha", model = "gpt-4o"}, {provider = "alpha", model = "gpt-4o-mini"}]

[[chains]]
name = "mini"
entries = []
"""
    )
    assert found == [
        "$.chains[0].entries[0].provider: unknown provider 'gamma'",
        "$.chains[0].entries[1].model: provider 'alpha' does not serve 'llama'; "
        "add it to the provider's models",
        "$.chains[1].name: duplicate chain name 'fast' (also $.chains[0])",
        "$.chains[1].entries[1].provider: provider 'alpha' is already in this chain "
        "(entries[0]); a chain lists each provider once",
        "$.chains[2].name: 'mini' is also a model a provider serves; "
        "a chain needs a name of its own",
        "$.chains[2].entries: must list at least one {provider, model}",
    ]


def test_policy_mistakes_are_named_by_path() -> None:
    found = problems(
        """
[[policies.rules]]
name = ""
keywords = ["ok", " "]
max_cost_sats = -1
hedge_after_ms = 0
unknown = 1
"""
    )
    assert found == [
        "$.policies.rules[0].hedge_after_ms: must be >= 1",
        "$.policies.rules[0].max_cost_sats: must be >= 0",
        "$.policies.rules[0].unknown: unknown key",
    ]
    assert problems('[[policies.rules]]\nname = " "\nkeywords = ["", "x"]\n') == [
        "$.policies.rules[0].name: must not be empty",
        "$.policies.rules[0].keywords[0]: must not be empty",
    ]
