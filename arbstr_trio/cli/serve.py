"""``arbstr-trio serve``: run the proxy until a signal, with its bound URL on stdout."""

from __future__ import annotations

import argparse

from arbstr_trio.cli.common import Subparsers

__all__ = ["add_parser"]


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy until SIGINT or SIGTERM (a second signal stops at once).",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (default: $ARBSTR_CONFIG; with --mock, the embedded mock config)",
    )
    parser.add_argument(
        "-l",
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on, overriding [server] listen; port 0 picks a free port",
    )
    parser.add_argument(
        "--mock",
        action="store_true",
        help="serve every provider from an in-process mock: no network, no keys needed",
    )
    parser.add_argument(
        "-w",
        "--workers",
        metavar="N",
        type=_worker_count,
        default=1,
        help="worker processes sharing the listening socket (default: 1); see the README "
        "for what each worker keeps to itself",
    )
    # A worker of --workers: serve the inherited listening socket, announce nothing.
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    from arbstr_trio.cli.serving import run  # the server: only for this command (see there)

    return run(args)
