"""Process-wide logging: one stderr handler, levels named as in arbstr's config."""

from __future__ import annotations

import logging
import sys

from arbstr_trio.config.models import LogLevel

__all__ = ["configure_logging"]

_LEVELS = {
    LogLevel.TRACE: logging.DEBUG,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


def configure_logging(level: LogLevel, *, server_banner: bool = False) -> None:
    """Send our logs (and Hypercorn's) to stderr at ``level``.

    Hypercorn announces its bind at INFO, which ``serve`` prints itself
    (``server_banner`` keeps it, for an external ``hypercorn`` run); otherwise it is
    held to warnings.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    if not server_banner:
        logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, _LEVELS[level]))
