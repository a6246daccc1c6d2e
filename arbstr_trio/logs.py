"""Process-wide logging: to stderr from a thread of its own, levels named as in arbstr's config.

A request line per request is the default (``[logging] log_requests``), and a write to
stderr is a blocking system call: made on the event loop, it would stall every
request in flight for as long as the terminal or pipe takes. So the event loop only
puts records on a queue; a listener thread writes them, and is stopped, writing what
is left, when the process exits. The queue is bounded: if stderr stops taking lines
(a full pipe, a paused pager), lines are lost rather than memory or requests.
"""

from __future__ import annotations

import atexit
import contextlib
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


_QUEUE_LIMIT = 10_000

_EXIT_FLUSH_S = 5.0


class _Listener(logging.handlers.QueueListener):
    def stop_within(self, timeout_s: float) -> None:
        """:meth:`stop`, but not waiting for ever on a stderr that takes nothing: with
        the queue full there is no room to ask, and the thread dies with the process."""
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(self._sentinel)  # type: ignore[attr-defined]
            thread.join(timeout_s)
        self._thread = None


_listener: _Listener | None = None


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    def enqueue(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(queue.Full):  # stderr is not keeping up: see the module
            self.queue.put_nowait(record)


@atexit.register
def _flush_at_exit() -> None:
    if _listener is not None:
        _listener.stop_within(_EXIT_FLUSH_S)


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
        _listener.stop_within(_EXIT_FLUSH_S)
    records: queue.Queue[logging.LogRecord] = queue.Queue(_QUEUE_LIMIT)
    _listener = _Listener(records, writer)
    _listener.start()
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(_DroppingQueueHandler(records))
    root.setLevel(_LEVELS[level])
    if not server_banner:
        logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, _LEVELS[level]))
