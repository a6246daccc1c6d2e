"""``POST /v1/cost``: what a chat request would cost, and where it would go, unsent.

The body is read, checked and routed exactly as ``/v1/chat/completions`` does it (the
same size limit, deadline, 400s and 404, policy, chain and strategy), so the estimate is
the one routing would act on: the first candidate is the provider that would be tried
first. Nothing goes upstream and nothing is recorded: an estimate is not a request.
"""

from __future__ import annotations

from typing import Any

from arbstr_trio.exchange import Exchange
from arbstr_trio.pricing import msat_to_sats, rate_to_json
from arbstr_trio.route_plan import plan_route
from arbstr_trio.routing import Candidate
from arbstr_trio.runtime import Runtime
from arbstr_trio.web.asgi import Receive, ResponseSend, Scope, header_value, send_json
from arbstr_trio.web.chat import read_chat_request

__all__ = ["estimate_cost"]


async def estimate_cost(
    runtime: Runtime, scope: Scope, receive: Receive, send: ResponseSend, exchange: Exchange
) -> None:
    request = await read_chat_request(runtime, scope, receive, exchange)
    default_completion_tokens = runtime.config.routing.default_completion_tokens
    route = plan_route(
        runtime.config,
        request,
        runtime.routes,
        policy_header=header_value(scope, b"x-arbstr-policy"),
        advance=False,  # an estimate is not a request: round robin does not turn for it
    )
    candidates = route.candidates
    prompt, completion = request.expected_tokens(default_completion_tokens)
    document = {
        "object": "cost_estimate",
        "model": request.model,
        "tokens": {"prompt": prompt, "completion": completion},
        "provider": candidates[0].name,
        "policy": route.label,
        "candidates": [_describe(candidate) for candidate in candidates],
    }
    await send_json(send, 200, (), document)


def _describe(candidate: Candidate) -> dict[str, Any]:
    rates = candidate.rates
    return {
        "provider": candidate.name,
        "upstream_model": candidate.upstream_model,
        "estimated_cost_sats": msat_to_sats(candidate.estimated_cost_msat),
        "estimated_cost_msat": candidate.estimated_cost_msat,
        "rates": {
            "input_rate": rate_to_json(rates.input_rate),
            "output_rate": rate_to_json(rates.output_rate),
            "base_fee": rate_to_json(rates.base_fee),
        },
    }
