"""Strategies: the order candidates are tried in, and the state behind it."""

from __future__ import annotations

import pytest

from arbstr_trio.chat_request import parse_chat_request
from arbstr_trio.config.models import Strategy
from arbstr_trio.routing import Candidate, eligible_candidates
from arbstr_trio.strategies import LatencyTracker, Rotation, RouteState, order_candidates
from tests.conftest import config_from

# Config order: dear, cheap, middle.
CONFIG = config_from(
    "".join(
        f'[[providers]]\nname = "{name}"\nurl = "http://x.invalid/v1"\nmodels = ["m"]\n'
        f"input_rate = {rate}\noutput_rate = {rate}\n"
        for name, rate in (("dear", 900), ("cheap", 100), ("middle", 500))
    )
)


def candidates() -> list[Candidate]:
    request = parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}')
    return eligible_candidates(CONFIG.providers, request, default_completion_tokens=100)


def order(strategy: Strategy, state: RouteState, key: object = "k") -> list[str]:
    return [c.name for c in order_candidates(strategy, candidates(), state, route_key=key)]


def test_cheapest_orders_by_estimated_cost() -> None:
    assert order(Strategy.CHEAPEST, RouteState()) == ["cheap", "middle", "dear"]
    assert Strategy("lowest_cost") is Strategy.CHEAPEST
    assert Strategy["LOWEST_COST"] is Strategy.CHEAPEST  # an alias, not a fifth strategy


def test_ordered_keeps_the_config_order() -> None:
    assert order(Strategy.ORDERED, RouteState()) == ["dear", "cheap", "middle"]


def test_round_robin_rotates_per_route_and_keeps_everyone_for_fallback() -> None:
    state = RouteState()
    seen = [order(Strategy.ROUND_ROBIN, state) for _ in range(4)]
    assert seen == [
        ["dear", "cheap", "middle"],
        ["cheap", "middle", "dear"],
        ["middle", "dear", "cheap"],
        ["dear", "cheap", "middle"],
    ]
    # Another route has its own turn; an estimate looks without turning.
    assert order(Strategy.ROUND_ROBIN, state, key="other")[0] == "dear"
    peek = order_candidates(Strategy.ROUND_ROBIN, candidates(), state, route_key="k", advance=False)
    assert peek[0].name == "cheap"
    assert order(Strategy.ROUND_ROBIN, state)[0] == "cheap"


def test_rotation_of_nothing_is_harmless() -> None:
    assert Rotation().offset("k", 0) == 0


def test_ewma_math() -> None:
    tracker = LatencyTracker(alpha=0.5)
    assert tracker.estimate("a", "m") is None
    tracker.observe("a", "m", 1.0)
    assert tracker.estimate("a", "m") == 1.0  # the first sample is the average
    tracker.observe("a", "m", 3.0)
    assert tracker.estimate("a", "m") == 2.0
    tracker.observe("a", "m", 0.0)
    assert tracker.estimate("a", "m") == 1.0
    assert tracker.estimate("a", "other-model") is None  # per provider *and* model
    with pytest.raises(ValueError, match="alpha"):
        LatencyTracker(alpha=0)


def test_lowest_latency_tries_unobserved_first_then_fastest() -> None:
    state = RouteState()
    # Nobody observed: by cost.
    assert order(Strategy.LOWEST_LATENCY, state) == ["cheap", "middle", "dear"]
    state.latency.observe("cheap", "m", 0.5)
    state.latency.observe("dear", "m", 0.1)
    # middle is still unmeasured, so it goes first; then the fastest.
    assert order(Strategy.LOWEST_LATENCY, state) == ["middle", "dear", "cheap"]
    state.latency.observe("middle", "m", 0.3)
    assert order(Strategy.LOWEST_LATENCY, state) == ["dear", "middle", "cheap"]
    # dear slows down; the average follows (0.1 -> 0.1 + 0.3 * (2.0 - 0.1) = 0.67).
    state.latency.observe("dear", "m", 2.0)
    assert state.latency.estimate("dear", "m") == pytest.approx(0.67)
    assert order(Strategy.LOWEST_LATENCY, state) == ["middle", "cheap", "dear"]
