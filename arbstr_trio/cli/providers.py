"""``arbstr-trio providers``: the configured providers as a table, keys masked."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from arbstr_trio.cli.common import Subparsers, add_config_flag, config_path
from arbstr_trio.cli.key_sources import describe_key_source, key_templates
from arbstr_trio.config.load import load_config
from arbstr_trio.config.models import ProviderConfig
from arbstr_trio.pricing import rate_to_json

__all__ = ["add_parser", "provider_table"]

_HEADER = ("NAME", "URL", "MODELS", "INPUT", "OUTPUT", "BASE FEE", "TIER", "KEY", "KEY SOURCE")
_NUMERIC = {3, 4, 5}


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "providers",
        help="list the configured providers, their rates and (masked) keys",
        description="Print the providers of a config file as a table: name, URL, models "
        "served ('any' when unrestricted), input and output rates (sats per 1M tokens), "
        "base fee (sats per request), tier, the key masked to its first 6 characters, and "
        "where the key comes from. Config warnings go to stderr.",
    )
    add_config_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    loaded = load_config(path)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(provider_table(loaded.config.providers, key_templates(path)))
    return 0


def provider_table(providers: Sequence[ProviderConfig], templates: dict[str, str]) -> str:
    """Aligned columns, numbers right-aligned, so rates compare at a glance."""
    rows = [_HEADER, *(_row(provider, templates) for provider in providers)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in _NUMERIC else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if not providers:
        lines.append("(no providers configured)")
    lines.append("rates: sats per 1M tokens; base fee: sats per request")
    return "\n".join(lines)


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
