"""``arbstr-trio providers``: the configured providers as a table, keys masked."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from arbstr_trio.cli.common import Subparsers, add_config_flag, config_path
from arbstr_trio.cli.key_sources import (
    client_key_templates,
    describe_client_key_source,
    describe_key_source,
    key_templates,
)
from arbstr_trio.config.load import load_config
from arbstr_trio.config.models import ChainConfig, ClientKey, ProviderConfig
from arbstr_trio.pricing import rate_to_json

__all__ = ["add_parser", "chain_table", "client_key_table", "provider_table"]

_HEADER = ("NAME", "URL", "MODELS", "INPUT", "OUTPUT", "BASE FEE", "TIER", "KEY", "KEY SOURCE")
_NUMERIC = frozenset({3, 4, 5})
_CHAIN_HEADER = ("CHAIN", "STRATEGY", "ENTRIES")
_CLIENT_KEY_HEADER = ("CLIENT KEY", "KEY", "KEY SOURCE")


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "providers",
        help="list the configured providers, their rates and (masked) keys",
        description="Print the providers of a config file as a table: name, URL, models "
        "served ('any' when unrestricted), input and output rates (sats per 1M tokens), "
        "base fee (sats per request), tier, the key masked to its first 6 characters, and "
        "where the key comes from. Then, if any are configured, the chains (name, strategy, "
        "provider/model entries in order) and the client keys (name, key masked the same "
        "way, where it comes from). Config warnings go to stderr.",
    )
    add_config_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    loaded = load_config(path)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = loaded.config
    print(provider_table(config.providers, key_templates(path)))
    if config.chains:
        print()
        print(chain_table(config.chains))
    if config.keys:
        print()
        print(client_key_table(config.keys, client_key_templates(path)))
    return 0


def provider_table(providers: Sequence[ProviderConfig], templates: dict[str, str]) -> str:
    """Aligned columns, numbers right-aligned, so rates compare at a glance."""
    lines = _aligned([_HEADER, *(_row(provider, templates) for provider in providers)], _NUMERIC)
    if not providers:
        lines.append("(no providers configured)")
    lines.append("rates: sats per 1M tokens; base fee: sats per request")
    return "\n".join(lines)


def chain_table(chains: Sequence[ChainConfig]) -> str:
    """One line per chain: its entries as ``provider/model`` in the order they are tried."""
    rows = [
        (
            chain.name,
            chain.strategy.value,
            ", ".join(f"{entry.provider}/{entry.model}" for entry in chain.entries),
        )
        for chain in chains
    ]
    return "\n".join(_aligned([_CHAIN_HEADER, *rows]))


def client_key_table(keys: Sequence[ClientKey], templates: dict[str, str]) -> str:
    """One line per ``[[keys]]`` entry: name, masked key, where the key comes from."""
    rows = [
        (client.name, client.key.masked(), describe_client_key_source(client, templates))
        for client in keys
    ]
    return "\n".join(_aligned([_CLIENT_KEY_HEADER, *rows]))


def _aligned(rows: Sequence[tuple[str, ...]], numeric: frozenset[int] = frozenset()) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _row(provider: ProviderConfig, templates: dict[str, str]) -> tuple[str, ...]:
    return (
        provider.name,
        provider.url,
        _models(provider),
        str(rate_to_json(provider.input_rate)),
        str(rate_to_json(provider.output_rate)),
        str(rate_to_json(provider.base_fee)),
        provider.tier.value,
        "-" if provider.api_key is None else provider.api_key.masked(),
        describe_key_source(provider, templates),
    )


def _models(provider: ProviderConfig) -> str:
    if provider.serves_any_model:
        return "any"
    served = list(provider.models)
    served.extend(model for model in provider.model_map if model not in served)
    return ",".join(served)
