"""Logging never makes the event loop wait: a full queue loses lines, not time."""

from __future__ import annotations

import logging
import queue

from arbstr_trio.logs import _DroppingQueueHandler


def test_a_full_log_queue_drops_lines_instead_of_blocking() -> None:
    records: queue.Queue[logging.LogRecord] = queue.Queue(2)
    handler = _DroppingQueueHandler(records)
    for n in range(5):  # a blocking put would hang here for ever
        handler.handle(logging.LogRecord("t", logging.INFO, __file__, 1, f"line {n}", None, None))
    assert [records.get_nowait().getMessage() for _ in range(2)] == ["line 0", "line 1"]
