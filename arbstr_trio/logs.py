"""Process-wide logging: to stderr from a thread of its own, levels named as in arbstr's config.

A request line per request is the default (``[logging] log_requests``), and a write to
stderr is a blocking system call: made on the event loop, it would stall every
request in flight for as long as the terminal or pipe takes. So the event loop only
puts records on a queue; a listener thread formats and writes them, and is stopped,
writing what is left, when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
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


_listener: logging.handlers.QueueListener | None = None


@atexit.register
def _flush_at_exit() -> None:
    if _listener is not None:
        _listener.stop()  # writes what is queued, then joins the thread


def configure_logging(level: LogLevel, *, server_banner: bool = False) -> None:
    """Send our logs (and Hypercorn's) to stderr at ``level``.

    Hypercorn announces its bind at INFO, which ``serve`` prints itself
    (``server_banner`` keeps it, for an external ``hypercorn`` run); otherwise it is
    held to warnings.
    """
    global _listener
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    if _listener is not None:
        _listener.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(_LEVELS[level])
    if not server_banner:
        logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, _LEVELS[level]))
