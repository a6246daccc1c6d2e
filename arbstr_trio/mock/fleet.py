"""``--mock``: one in-process mock per configured provider, each on its own port."""

from __future__ import annotations

import attrs
import trio

from arbstr_trio.config.models import Config, HttpUrl
from arbstr_trio.mock.provider import MockProvider
from arbstr_trio.mock.server import serve_mock

__all__ = ["start_mock_fleet"]


async def start_mock_fleet(
    nursery: trio.Nursery, config: Config, host: str = "127.0.0.1"
) -> tuple[Config, dict[str, MockProvider]]:
    """Start a mock for every provider in ``nursery``; return the config pointed at them.

    Each mock answers as its provider's ``[providers.mock]`` table says, for the
    models the provider would be asked for (its upstream names), so routing,
    pricing and faults behave as they would against the real providers.
    """
    mocks: dict[str, MockProvider] = {}
    providers = []
    for provider in config.providers:
        models = sorted(
            {provider.upstream_model(m) for m in (*provider.models, *provider.model_map)}
        )
        mock = MockProvider(provider.name, provider.mock, models=models or ["mock-model"])
        url = await nursery.start(serve_mock, mock, host)
        mocks[provider.name] = mock
        providers.append(attrs.evolve(provider, url=HttpUrl(url)))
    return attrs.evolve(config, providers=tuple(providers)), mocks
