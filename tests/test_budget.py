"""The --max-cost decision, in micro-USD: claim one more item only while the projection fits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dealscout_cli.budget import Budget, usd_to_micros
from dealscout_cli.errors import UsageError


def test_fresh_budget_allows_items_up_to_the_limit() -> None:
    budget = Budget(1_000, spent_micro_usd_at_start=0, estimate_per_item_micro_usd=100)
    assert budget.allows_next_item(0)
    assert budget.allows_next_item(900)  # 900 + 100 = exactly the limit
    assert not budget.allows_next_item(901)


def test_spend_recorded_before_the_run_counts() -> None:
    budget = Budget(1_000, spent_micro_usd_at_start=950, estimate_per_item_micro_usd=100)
    assert not budget.allows_next_item(0)


def test_items_in_flight_are_counted_at_full_price() -> None:
    budget = Budget(1_000, spent_micro_usd_at_start=0, estimate_per_item_micro_usd=100)
    assert budget.allows_next_item(0, in_flight=9)
    assert not budget.allows_next_item(0, in_flight=10)


def test_observed_mean_replaces_a_low_estimate() -> None:
    budget = Budget(1_000, spent_micro_usd_at_start=0, estimate_per_item_micro_usd=100)
    # Two items cost 600: 300 each, so a third would reach 900 and a fourth 1,200.
    assert budget.per_item_micro_usd(600, items_finished=2) == 300
    assert budget.allows_next_item(600, items_finished=2)
    assert not budget.allows_next_item(600, in_flight=1, items_finished=2)


def test_observed_mean_never_lowers_the_estimate() -> None:
    budget = Budget(1_000, spent_micro_usd_at_start=0, estimate_per_item_micro_usd=100)
    assert budget.per_item_micro_usd(0, items_finished=5) == 100  # failed early, paid nothing


def test_zero_limit_allows_nothing_that_costs() -> None:
    budget = Budget(limit_micro_usd=0, spent_micro_usd_at_start=0, estimate_per_item_micro_usd=1)
    assert not budget.allows_next_item(0)


def test_message_names_the_limit_the_spend_and_the_way_out() -> None:
    budget = Budget(2_500_000, 1_000_000, estimate_per_item_micro_usd=10_000)
    assert budget.message(1_490_000, in_flight=1) == (
        "budget of $2.50 reached ($2.49 spent; one more item would bring it to about $2.51); "
        "raise --max-cost to go on"
    )


@pytest.mark.parametrize(
    ("usd", "micros"),
    [(2.5, 2_500_000), ("0.0001", 100), (Decimal("10"), 10_000_000), (0.1 + 0.2, 300_000)],
)
def test_usd_to_micros_is_exact(usd: object, micros: int) -> None:
    assert usd_to_micros(usd) == micros  # type: ignore[arg-type]


@pytest.mark.parametrize("usd", ["-1", "nan", "inf", "two dollars"])
def test_usd_to_micros_refuses_what_is_not_an_amount(usd: str) -> None:
    with pytest.raises(UsageError, match="--max-cost"):
        usd_to_micros(usd)


def test_refusal_is_none_while_an_item_fits_and_the_message_when_not():
    budget = Budget(
        limit_micro_usd=1_000, spent_micro_usd_at_start=0, estimate_per_item_micro_usd=100
    )
    assert budget.refusal(900, in_flight=0, items_finished=0) is None
    assert budget.refusal(901, in_flight=0, items_finished=0) == budget.message(901)
