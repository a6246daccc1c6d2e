"""``arbstr-trio mock-upstream``: one mock OpenAI-compatible provider, for trying things."""

from __future__ import annotations

import argparse
from functools import partial

import attrs
import trio

from arbstr_trio.cli.common import Subparsers, parse_listen_flag
from arbstr_trio.config.load import ConfigError
from arbstr_trio.config.models import LogLevel
from arbstr_trio.logs import configure_logging
from arbstr_trio.mock.behaviour import MockBehaviour, parse_overrides
from arbstr_trio.mock.provider import MockProvider
from arbstr_trio.mock.server import serve_mock

__all__ = ["add_parser"]


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "mock-upstream",
        help="run a mock OpenAI-compatible provider",
        description="Run one mock provider. Any request may override its behaviour with an "
        "'x-mock: key=value; ...' header, using the keys --set accepts.",
    )
    parser.add_argument(
        "-l",
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:9101",
        help="address to listen on; port 0 picks a free port (default: %(default)s)",
    )
    parser.add_argument(
        "--name",
        default="mock",
        help="provider name, for x-mock-NAME headers (default: %(default)s)",
    )
    parser.add_argument("--models", default="", help="comma-separated models for GET /v1/models")
    parser.add_argument("--latency-ms", type=int, help="pause before the response headers")
    parser.add_argument(
        "--chunks", type=int, help="content chunks (= completion tokens) per answer"
    )
    parser.add_argument("--chunk-delay-ms", type=int, help="pause between streamed chunks")
    parser.add_argument(
        "--set",
        metavar="SPEC",
        default="",
        help="more behaviour in x-mock syntax, e.g. 'status=503; retry_after=2; fault_rate=0.2'",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    listen = parse_listen_flag(args.listen)
    behaviour = MockBehaviour()
    flags = {
        "latency_ms": args.latency_ms,
        "chunks": args.chunks,
        "chunk_delay_ms": args.chunk_delay_ms,
    }
    try:
        behaviour = attrs.evolve(behaviour, **{k: v for k, v in flags.items() if v is not None})
        behaviour = parse_overrides(behaviour, args.set)
    except ValueError as exc:
        raise ConfigError("arbstr-trio mock-upstream", [str(exc)]) from None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    provider = MockProvider(args.name, behaviour, models=models)
    configure_logging(LogLevel.INFO)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_mock, provider, listen.host, listen.port))
            print(f"mock provider {args.name!r} listening on {url}", flush=True)

    trio.run(serve)
    return 0
