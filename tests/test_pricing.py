"""The cost formula, to the millisatoshi."""

from __future__ import annotations

from decimal import Decimal

import pytest

from arbstr_trio.pricing import Rates, Usage, cost_msat, format_sats, msat_to_sats, usage_from_json


def test_formula_with_base_fee() -> None:
    # (1000 * 150 + 500 * 600) / 1e6 + 1 = 1.45 sats
    assert cost_msat(Rates(Decimal(150), Decimal(600), Decimal(1)), Usage(1000, 500)) == 1450


def test_rounds_half_up_to_the_millisat() -> None:
    # 1 * 500 / 1e6 sats = 0.0005 sats = 0.5 msat -> 1 msat; 0.4 msat -> 0
    assert cost_msat(Rates(Decimal(500), Decimal(0)), Usage(1, 0)) == 1
    assert cost_msat(Rates(Decimal(400), Decimal(0)), Usage(1, 0)) == 0


def test_fractional_rates_are_exact() -> None:
    rates = Rates(Decimal("0.1"), Decimal("0.2"), Decimal("0.001"))
    assert cost_msat(rates, Usage(3_000_000, 1_000_000)) == 501  # 0.3 + 0.2 + 0.001 sats


def test_free_provider() -> None:
    assert cost_msat(Rates(Decimal(0), Decimal(0)), Usage(10**9, 10**9)) == 0


@pytest.mark.parametrize(
    ("msat", "text"), [(0, "0.000"), (7, "0.007"), (1450, "1.450"), (123456789, "123456.789")]
)
def test_format_sats(msat: int, text: str) -> None:
    assert format_sats(msat) == text
    assert msat_to_sats(msat) == float(text)


def test_usage_from_json() -> None:
    assert usage_from_json({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(3, 4)
    assert usage_from_json({"prompt_tokens": 3, "total_tokens": 10}) == Usage(3, 7)
    assert usage_from_json(None) is None
    assert usage_from_json({"prompt_tokens": "3", "completion_tokens": 4}) is None
    assert usage_from_json({"prompt_tokens": True, "completion_tokens": 4}) is None
    assert usage_from_json({"prompt_tokens": 5, "total_tokens": 4}) is None
