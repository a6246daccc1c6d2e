"""Which providers may serve a request, cheapest first.

arbstr ranked providers by a blend of their per-token rates and per-request fee, a
number that is not what any request costs. Here each candidate is priced for *this*
request: its estimated prompt tokens and its expected completion tokens through the
full cost formula, ``base_fee`` included, so a provider with a high fee loses short
requests and wins long ones, as it should. Ties go to the provider name, so the order
is stable and predictable.

:func:`eligible_candidates` and :func:`chain_candidates` give the candidates in config
order, priced; a strategy (:mod:`arbstr_trio.strategies`) then orders them.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from arbstr_trio.chat_request import ChatRequest
from arbstr_trio.config.models import ChainConfig, ProviderConfig
from arbstr_trio.errors import ModelNotFound
from arbstr_trio.pricing import Rates, Usage, cost_msat

__all__ = [
    "Candidate",
    "by_cost",
    "chain_candidates",
    "eligible_candidates",
    "rank_candidates",
    "rates_for",
]


@attrs.frozen
class Candidate:
    provider: ProviderConfig
    upstream_model: str
    rates: Rates
    """What this provider charges for this model: what the answer will be priced at."""
    estimated_cost_msat: int

    @property
    def name(self) -> str:
        return self.provider.name


def rates_for(provider: ProviderConfig, model: str) -> Rates:
    """``provider``'s prices for ``model`` (as the client names it, or as the provider
    does): its ``model_rates`` entry where it has one, its own rates for the rest."""
    own = provider.model_rates.get(model) or provider.model_rates.get(
        provider.upstream_model(model)
    )
    if own is None:
        return Rates(provider.input_rate, provider.output_rate, provider.base_fee)
    return Rates(
        provider.input_rate if own.input_rate is None else own.input_rate,
        provider.output_rate if own.output_rate is None else own.output_rate,
        provider.base_fee if own.base_fee is None else own.base_fee,
    )


def rank_candidates(
    providers: Sequence[ProviderConfig], request: ChatRequest, *, default_completion_tokens: int
) -> list[Candidate]:
    """Every provider that serves ``request.model``, by estimated cost then name.

    Raises :class:`ModelNotFound` when none does.
    """
    return by_cost(
        eligible_candidates(providers, request, default_completion_tokens=default_completion_tokens)
    )


def by_cost(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Cheapest first; ties by provider name, so the order never depends on luck."""
    return sorted(candidates, key=lambda candidate: (candidate.estimated_cost_msat, candidate.name))


def eligible_candidates(
    providers: Sequence[ProviderConfig], request: ChatRequest, *, default_completion_tokens: int
) -> list[Candidate]:
    """Every provider that serves ``request.model``, priced, in config order.

    Raises :class:`ModelNotFound` when none does.
    """
    eligible = [provider for provider in providers if provider.serves(request.model)]
    if not eligible:
        raise ModelNotFound(
            f"no configured provider serves the model {request.model!r}; "
            "GET /v1/models lists the models this proxy can route",
            param="model",
        )
    expected = Usage(*request.expected_tokens(default_completion_tokens))
    return [
        _priced(provider, request.model, provider.upstream_model(request.model), expected)
        for provider in eligible
    ]


def chain_candidates(
    chain: ChainConfig,
    providers: Sequence[ProviderConfig],
    request: ChatRequest,
    *,
    default_completion_tokens: int,
) -> list[Candidate]:
    """The chain's entries, priced, in the chain's order: each entry its own model."""
    by_name = {provider.name: provider for provider in providers}
    expected = Usage(*request.expected_tokens(default_completion_tokens))
    candidates = []
    for entry in chain.entries:
        provider = by_name[entry.provider]  # checked when the config was loaded
        upstream = (
            provider.upstream_model(entry.model) if provider.serves(entry.model) else entry.model
        )
        candidates.append(_priced(provider, entry.model, upstream, expected))
    return candidates


def _priced(
    provider: ProviderConfig, model: str, upstream_model: str, expected: Usage
) -> Candidate:
    rates = rates_for(provider, model)
    return Candidate(
        provider=provider,
        upstream_model=upstream_model,
        rates=rates,
        estimated_cost_msat=cost_msat(rates, expected),
    )
