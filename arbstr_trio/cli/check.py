"""``arbstr-trio check``: is this config usable, and where would each key come from?"""

from __future__ import annotations

import argparse

from arbstr_trio.cli.common import Subparsers, add_config_flag, config_path
from arbstr_trio.cli.key_sources import (
    client_key_templates,
    describe_client_key_source,
    describe_key_source,
    key_templates,
)
from arbstr_trio.config.apikey import KeySource, convention_variable
from arbstr_trio.config.load import load_config

__all__ = ["add_parser"]


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "check",
        help="validate a config file and report where each provider's key comes from",
        description="Validate a config file: every problem is listed with its path, and the "
        "exit status is 1. A valid file prints its warnings (a literal key, a file others "
        "can read), then each provider's key source: env-expanded (${VAR} in the file), "
        "convention (ARBSTR_<NAME>_API_KEY), literal, or missing, and each client key's "
        "([[keys]]): env-expanded or literal. Keys are never shown.",
    )
    add_config_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    loaded = load_config(path)
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    providers = loaded.config.providers
    print(f"{path}: ok ({len(providers)} provider{'s' if len(providers) != 1 else ''})")
    templates = key_templates(path)
    width = max((len(provider.name) for provider in providers), default=0)
    for provider in providers:
        source = describe_key_source(provider, templates)
        if provider.key_source is KeySource.NONE:
            # Fine for a local server; for a paid one it is the first thing to fix.
            variable = convention_variable(provider.name)
            source += f": no key is sent (set {variable} if the provider needs one)"
        print(f"  {provider.name:<{width}}  key: {source}")
    clients = loaded.config.keys
    client_templates = client_key_templates(path)
    width = max((len(client.name) for client in clients), default=0)
    for client in clients:
        source = describe_client_key_source(client, client_templates)
        print(f"  client key {client.name + ':':<{width + 1}} {source}")
    return 0
