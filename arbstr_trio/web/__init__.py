"""The HTTP face of the proxy: an ASGI app served by Hypercorn's trio worker."""

from arbstr_trio.web.app import App

__all__ = ["App"]
