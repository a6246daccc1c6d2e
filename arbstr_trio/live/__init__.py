"""The live feed's core: the hub that fans events out, the events, and the health watch.

No sockets here: :mod:`arbstr_trio.web.live` serves the hub over a websocket, and
``arbstr-trio tail`` (:mod:`arbstr_trio.cli.tail`) reads it.
"""

from arbstr_trio.live.hub import DEFAULT_QUEUE_LIMIT, LiveHub, Subscription

__all__ = ["DEFAULT_QUEUE_LIMIT", "LiveHub", "Subscription"]
