"""``arbstr-trio``: serve the proxy, look at a config, write one, or run a mock provider.

One module per command, each adding its own subparser, so a command's flags, help and
behaviour are read in one place. Exit codes: 0 success, 1 a configuration or runtime
error (printed as one readable message, never a traceback), 2 a usage error (from
argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from arbstr_trio import __version__
from arbstr_trio.cli.check import add_parser as add_check
from arbstr_trio.cli.common import CliError
from arbstr_trio.cli.init_config import add_parser as add_init
from arbstr_trio.cli.mock_upstream import add_parser as add_mock_upstream
from arbstr_trio.cli.providers import add_parser as add_providers
from arbstr_trio.cli.serve import add_parser as add_serve
from arbstr_trio.cli.tail import add_parser as add_tail
from arbstr_trio.config.load import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arbstr-trio",
        description="An OpenAI-compatible LLM routing proxy: the cheapest provider first, "
        "every request's cost recorded.",
    )
    parser.add_argument("--version", action="version", version=f"arbstr-trio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in (add_serve, add_check, add_providers, add_init, add_mock_upstream, add_tail):
        add_command(commands)
    return parser
