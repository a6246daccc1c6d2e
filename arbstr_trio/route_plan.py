"""A request's route: its candidates in the order to try them, and what chose them.

One function puts the pieces together, for ``/v1/chat/completions`` and ``/v1/cost``
alike, so an estimate shows the route a request would take:

1. the candidates: a chain's entries when the model names a chain, else every
   provider that serves the model (both in config order, priced for this request);
2. the policy (header or keywords) and its limits on those candidates;
3. the strategy: the chain's, else the policy's, else ``policies.default_strategy``.

Policies constrain and chains supply: a policy that matches a request for a chain
applies its limits to the chain's entries (its ``allowed_models`` then names chains).
"""

from __future__ import annotations

import attrs

from arbstr_trio.chat_request import ChatRequest
from arbstr_trio.config.models import Config
from arbstr_trio.policies import apply_policy, choose_policy
from arbstr_trio.routing import Candidate, chain_candidates, eligible_candidates
from arbstr_trio.strategies import RouteState, order_candidates

__all__ = ["Route", "plan_route"]


@attrs.frozen
class Route:
    candidates: list[Candidate]
    """In the order the engine tries them; never empty."""
    label: str | None
    """The policy's name, else the chain's: the request log's ``policy`` column."""
    hedge_after_ms: int | None
    """The policy's hedge delay, else the global one; None: no hedge."""


def plan_route(
    config: Config,
    request: ChatRequest,
    state: RouteState,
    *,
    policy_header: bytes | None,
    advance: bool = True,
) -> Route:
    """Raises a 400 for a policy problem, a 404 for a model nobody serves.

    ``policy_header`` is the raw ``X-Arbstr-Policy`` value, as the ASGI scope holds it.
    """
    tokens = config.routing.default_completion_tokens
    chain = config.chain(request.model)
    if chain is not None:
        candidates = chain_candidates(
            chain, config.providers, request, default_completion_tokens=tokens
        )
    else:
        candidates = eligible_candidates(
            config.providers, request, default_completion_tokens=tokens
        )
    header = None if policy_header is None else policy_header.decode("latin-1")
    rule = choose_policy(config.policies, header, request.body)
    if rule is not None:
        candidates = apply_policy(rule, request.model, candidates)
    if chain is not None:
        strategy = chain.strategy
    elif rule is not None and rule.strategy is not None:
        strategy = rule.strategy
    else:
        strategy = config.policies.default_strategy
    label = rule.name if rule is not None else chain.name if chain is not None else None
    ordered = order_candidates(
        strategy, candidates, state, route_key=(label, request.model), advance=advance
    )
    hedge = config.retry.hedge_after_ms
    if rule is not None and rule.hedge_after_ms is not None:
        hedge = rule.hedge_after_ms
    return Route(candidates=ordered, label=label, hedge_after_ms=hedge)
