"""Policies: which rule a request falls under, and what that rule leaves of its candidates.

A policy is chosen by the client's ``X-Arbstr-Policy`` header, by name; an unknown name
is a 400, because a typo silently falling through to the default would route a request
somewhere its sender ruled out. Without the header, the first rule (in config order)
with a keyword in the user's messages wins. Keywords match whole words in any case:
``code`` matches "Code this" and "code." but not "decode" or "codex"; a keyword of
several words matches them as a phrase. No match: no policy, the default strategy.

A chosen rule then constrains the candidates: the model must be one it allows, and
candidates dearer than its caps (output rate, estimated cost of this request) are left
out. When nothing is left the request is refused before anything is sent, with a
message that says which limit did it: spending above a stated cap is never the fallback.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from arbstr_trio.config.models import PoliciesConfig, PolicyRule
from arbstr_trio.errors import ClientError, PolicyRefusal
from arbstr_trio.pricing import format_sats
from arbstr_trio.routing import Candidate

__all__ = ["POLICY_HEADER", "apply_policy", "choose_policy", "user_text"]

POLICY_HEADER = "x-arbstr-policy"


def choose_policy(
    policies: PoliciesConfig, header: str | None, body: Mapping[str, Any]
) -> PolicyRule | None:
    """The rule named by ``header``, else the first whose keywords the user wrote."""
    if header is not None:
        name = header.strip()
        for rule in policies.rules:
            if rule.name == name:
                return rule
        known = ", ".join(repr(rule.name) for rule in policies.rules) or "none are configured"
        raise ClientError(
            f"unknown policy {name!r} in the {POLICY_HEADER} header; known policies: {known}",
            param=POLICY_HEADER,
            code="unknown_policy",
        )
    keyword_rules = [rule for rule in policies.rules if rule.keywords]
    if not keyword_rules:
        return None
    texts = list(user_text(body.get("messages")))
    for rule in keyword_rules:
        pattern = _keyword_pattern(rule.keywords)
        if any(pattern.search(text) for text in texts):
            return rule
    return None


def user_text(messages: object) -> Iterator[str]:
    """Every text part of every user message: plain ``content`` strings and the
    ``{"type": "text", "text": ...}`` parts of content arrays."""
    if not isinstance(messages, list):
        return
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if (
                    isinstance(part, dict)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    yield part["text"]


@functools.lru_cache(maxsize=256)
def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a rule's keywords; ``\\w`` lookarounds rather than ``\\b`` so a
    keyword that starts or ends with punctuation (``c++``) still matches as a word."""
    words = (r"\s+".join(map(re.escape, keyword.split())) for keyword in keywords)
    return re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE)


def apply_policy(rule: PolicyRule, model: str, candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates ``rule`` allows for ``model``, in the order given.

    Raises :class:`PolicyRefusal` when the model is not allowed or no candidate is
    within the rule's caps.
    """
    if rule.allowed_models and model not in rule.allowed_models:
        allowed = ", ".join(repr(name) for name in rule.allowed_models)
        raise PolicyRefusal(
            f"the model {model!r} is not allowed under policy {rule.name!r}; it allows {allowed}",
            param="model",
            code="model_not_allowed",
            policy=rule.name,
        )
    kept = list(candidates)
    cap = rule.max_sats_per_1m_output
    if cap is not None:
        kept = [c for c in kept if c.rates.output_rate <= cap]
        if not kept:
            cheapest = min(c.rates.output_rate for c in candidates)
            raise PolicyRefusal(
                f"no provider of {model!r} is within policy {rule.name!r}'s "
                f"max_sats_per_1m_output of {_number(cap)} (the lowest output rate is "
                f"{_number(cheapest)} sats per 1M tokens)",
                param="model",
                code="policy_price_cap",
                policy=rule.name,
            )
    max_cost = rule.max_cost_sats
    if max_cost is not None:
        limit_msat = int(max_cost * 1000)
        within = [c for c in kept if c.estimated_cost_msat <= limit_msat]
        if not within:
            lowest = min(c.estimated_cost_msat for c in kept)
            raise PolicyRefusal(
                f"no provider of {model!r} can serve this request within policy "
                f"{rule.name!r}'s max_cost_sats of {_number(max_cost)}: the lowest "
                f"estimate is {format_sats(lowest)} sats; ask for fewer tokens "
                "(max_tokens) or a cheaper model",
                param="max_tokens",
                code="policy_cost_cap",
                policy=rule.name,
            )
        kept = within
    return kept


def _number(value: Decimal) -> str:
    return format(value.normalize(), "f")
