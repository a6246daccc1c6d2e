"""The read-only endpoints: ``/v1/models``, ``/health`` and ``/providers``."""

from __future__ import annotations

import time
from typing import Any

from arbstr_trio import __version__
from arbstr_trio.config.models import ProviderConfig
from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import rate_to_json
from arbstr_trio.runtime import Runtime
from arbstr_trio.web.asgi import Receive, ResponseSend, Scope, send_json

__all__ = ["health", "list_models", "list_providers"]


async def list_models(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    """OpenAI's list shape, one entry per model however many providers serve it."""
    served = await runtime.catalog.models()
    chains = runtime.catalog.chains
    for chain in chains:  # a chain's name is routed to the chain, whoever else lists it
        served.pop(chain.name, None)
    created = int(runtime.started_at)
    data = [
        {
            "id": model,
            "object": "model",
            "created": created,
            "owned_by": "arbstr",
            "providers": owners,
        }
        for model, owners in sorted(served.items())
    ]
    data.extend(
        {
            "id": chain.name,
            "object": "model",
            "created": created,
            "owned_by": "arbstr-chain",
            "providers": [entry.provider for entry in chain.entries],
            "entries": [
                {"provider": entry.provider, "model": entry.model} for entry in chain.entries
            ],
        }
        for chain in chains
    )
    await send_json(send, 200, (), {"object": "list", "data": data})


async def health(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    """The state as of this moment, computed now, not as of the last request.

    ``ok``: every breaker closed and no cooldown; ``degraded``: something is open or
    cooling down but a provider can still be tried; ``unhealthy`` (HTTP 503, for load
    balancers): no provider can be tried.
    """
    providers = runtime.board.snapshot(runtime.config.providers)
    usable = [p for p in providers if p["breaker"] != "open"]
    if not usable:
        status = "unhealthy"
    elif len(usable) == len(providers) and not any(
        p["cooldowns"] or p["breaker"] != "closed" for p in providers
    ):
        status = "ok"
    else:
        status = "degraded"
    document = {
        "status": status,
        "version": __version__,
        "uptime_s": round(time.time() - runtime.started_at, 3),
        "in_flight": runtime.admission.in_flight,
        "providers": providers,
    }
    await send_json(send, 503 if status == "unhealthy" else 200, (), document)


async def list_providers(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    providers = [describe_provider(provider) for provider in runtime.config.providers]
    await send_json(send, 200, (), {"providers": providers})


def describe_provider(provider: ProviderConfig) -> dict[str, Any]:
    """A provider as users may see it: rates and all, the key only masked."""
    return {
        "name": provider.name,
        "url": provider.url,
        "models": list(provider.models),
        "model_map": dict(provider.model_map),
        "input_rate": rate_to_json(provider.input_rate),
        "output_rate": rate_to_json(provider.output_rate),
        "base_fee": rate_to_json(provider.base_fee),
        "tier": provider.tier.value,
        "api_key": None if provider.api_key is None else provider.api_key.masked(),
        "key_source": provider.key_source.value,
    }
