"""What several commands share: their error type, finding the config, ``HOST:PORT``."""

from __future__ import annotations

import argparse
import os
from typing import TypeAlias

from arbstr_trio.config.load import ConfigError, parse_listen
from arbstr_trio.config.models import ListenAddress

__all__ = ["CliError", "Subparsers", "add_config_flag", "config_path", "parse_listen_flag"]

# argparse does not export the type of add_subparsers()'s result.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    """A command cannot do what it was asked; the message alone is shown, as ``error: ...``."""


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (default: $ARBSTR_CONFIG)",
    )


def config_path(flag: str | None) -> str:
    """``-c FILE``, else ``$ARBSTR_CONFIG``: the same rule ``serve`` follows."""
    path = flag or os.environ.get("ARBSTR_CONFIG")
    if not path:
        raise CliError("no configuration: pass -c FILE or set ARBSTR_CONFIG")
    return path


def parse_listen_flag(text: str, flag: str = "--listen") -> ListenAddress:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise ConfigError(flag, [str(exc)]) from None
