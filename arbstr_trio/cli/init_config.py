"""``arbstr-trio init``: write a short, annotated starter config, never over an existing one."""

from __future__ import annotations

import argparse
import os
from importlib import resources

from arbstr_trio.cli.common import CliError, Subparsers

__all__ = ["DEFAULT_PATH", "add_parser", "write_starter"]

DEFAULT_PATH = "arbstr.toml"
# Owner only: the file may come to hold keys, and `check` warns about anything wider.
_MODE = 0o600


def add_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "init",
        help="write a commented starter config",
        description="Write a short, commented starter config (mode 0600) that passes "
        "`arbstr-trio check` once OPENAI_API_KEY is set. An existing file is never "
        "overwritten.",
    )
    parser.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        default=DEFAULT_PATH,
        help="where to write it (default: ./%(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: str = args.path
    write_starter(path)
    print(f"wrote {path} (mode 0600). Next:")
    print("  export OPENAI_API_KEY=sk-...")
    print(f"  arbstr-trio check -c {path}")
    print(f"  arbstr-trio serve -c {path}")
    return 0


def write_starter(path: str) -> None:
    """Create ``path`` with the starter text; :class:`CliError` if it exists or cannot be."""
    text = resources.files("arbstr_trio").joinpath("data/starter.toml").read_text("utf-8")
    try:
        # O_EXCL: the existence check and the creation are one step, so nothing that
        # appears in between is overwritten either.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _MODE)
    except FileExistsError:
        raise CliError(
            f"{path} already exists; not overwriting it (move it away or name another PATH)"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot create {path}: {(exc.strerror or str(exc)).lower()}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, _MODE)  # whatever the umask left
        file.write(text)
