"""What a request costs, in millisatoshis, exactly.

Rates are sats per 1M tokens and ``base_fee`` is sats per request, so::

    cost_sats = (prompt_tokens * input_rate + completion_tokens * output_rate) / 1e6 + base_fee

Costs are carried as whole millisatoshis (``int``), computed in decimal arithmetic and
rounded half-up once, so the header, the in-stream metadata and the request log agree
to the last digit. Floats appear only at the JSON edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import attrs

__all__ = [
    "Rates",
    "Usage",
    "cost_msat",
    "format_sats",
    "msat_to_sats",
    "rate_to_json",
    "usage_from_json",
]

_MSAT_PER_SAT = 1000
_TOKENS_PER_RATE_UNIT = 1_000_000


@attrs.frozen
class Rates:
    input_rate: Decimal
    output_rate: Decimal
    base_fee: Decimal = Decimal(0)


@attrs.frozen
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def cost_msat(rates: Rates, usage: Usage) -> int:
    """The cost of ``usage`` at ``rates``, in millisatoshis (rounded half-up)."""
    token_part = (
        usage.prompt_tokens * rates.input_rate + usage.completion_tokens * rates.output_rate
    )
    sats = token_part / _TOKENS_PER_RATE_UNIT + rates.base_fee
    return int((sats * _MSAT_PER_SAT).to_integral_value(rounding=ROUND_HALF_UP))


def format_sats(msat: int) -> str:
    """``12345`` millisats as ``"12.345"``: the header form, exact, no float rounding."""
    sign = "-" if msat < 0 else ""
    whole, fraction = divmod(abs(msat), _MSAT_PER_SAT)
    return f"{sign}{whole}.{fraction:03d}"


def msat_to_sats(msat: int) -> float:
    """For JSON bodies: the nearest float to the exact decimal, so ``12.345`` prints as such."""
    return float(format_sats(msat))


def rate_to_json(value: Decimal) -> int | float:
    """A configured rate for JSON bodies: ``2500`` stays an integer, ``0.5`` a float."""
    return int(value) if value == value.to_integral_value() else float(value)


def usage_from_json(usage: object) -> Usage | None:
    """Read an OpenAI ``usage`` object; ``None`` when absent or not usable.

    A missing ``completion_tokens`` with a ``total_tokens`` (some providers) is
    derived rather than guessed.
    """
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    if prompt is None:
        return None
    if completion is None:
        total = _count(usage, "total_tokens")
        if total is None or total < prompt:
            return None
        completion = total - prompt
    return Usage(prompt, completion)


_MOST_TOKENS = 2**40
"""Far past any real answer; a larger count is a provider's bug, and would overflow the
request log's integers once priced."""


def _count(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MOST_TOKENS:
        return None
    return value
