"""The models this proxy can route, for ``GET /v1/models``.

A provider that lists its models in the config is taken at its word. One that lists
none serves any model; for it, the catalog asks the provider's own ``/models`` (as the
config contract promises), at most once a minute and within a few seconds, so a slow
or failing provider never slows or fails the listing: it just contributes nothing.

Chains are listed too: to a client, a chain is a model it may ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import trio

from arbstr_trio.config.models import ChainConfig, ProviderConfig
from arbstr_trio.errors import UpstreamError
from arbstr_trio.upstream import Upstream

__all__ = ["ModelCatalog"]

log = logging.getLogger(__name__)

_DISCOVERY_TIMEOUT_S = 5.0
_DISCOVERY_TTL_S = 60.0


class ModelCatalog:
    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        upstream: Upstream,
        *,
        chains: Sequence[ChainConfig] = (),
    ) -> None:
        self._providers = providers
        self.chains = chains
        self._upstream = upstream
        self._discovered: dict[str, tuple[float, tuple[str, ...]]] = {}

    def reconfigure(
        self, providers: Sequence[ProviderConfig], chains: Sequence[ChainConfig]
    ) -> None:
        """Serve from a new configuration; what discovery learned is kept."""
        self._providers = providers
        self.chains = chains

    async def models(self) -> dict[str, list[str]]:
        """Model id -> names of the providers that serve it, in config order."""
        open_ended = [p for p in self._providers if p.serves_any_model]
        if open_ended:
            async with trio.open_nursery() as nursery:
                for provider in open_ended:
                    nursery.start_soon(self._refresh, provider)
        served: dict[str, list[str]] = {}
        for provider in self._providers:
            names = (*provider.models, *provider.model_map)
            if not names:
                names = self._discovered.get(provider.name, (0.0, ()))[1]
            for model in names:
                owners = served.setdefault(model, [])
                if provider.name not in owners:
                    owners.append(provider.name)
        return served

    async def _refresh(self, provider: ProviderConfig) -> None:
        fetched_at, _ = self._discovered.get(provider.name, (None, ()))
        now = trio.current_time()
        if fetched_at is not None and now - fetched_at < _DISCOVERY_TTL_S:
            return
        models: tuple[str, ...] = ()
        with trio.move_on_after(_DISCOVERY_TIMEOUT_S):
            try:
                models = _model_ids(await self._upstream.get_json(provider, "/models"))
            except UpstreamError as exc:
                log.warning(
                    "model discovery for provider %r failed: %s", provider.name, exc.message
                )
            except Exception:  # a bug here must not take /v1/models down with it
                log.exception("model discovery for provider %r failed", provider.name)
        self._discovered[provider.name] = (now, models)


def _model_ids(document: Any) -> tuple[str, ...]:
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        return ()
    return tuple(
        entry["id"]
        for entry in data
        if isinstance(entry, dict) and isinstance(entry.get("id"), str)
    )
