"""The `--max-cost` decision: may the run claim one more item without passing the budget?

The budget counts what the database has already recorded (`spent_micro_usd_at_start`,
every run's calls) plus what this run has spent since, plus what the items in flight
and the next one will still cost. So a resumed run does not get a fresh budget: to
go on after a stop, raise `--max-cost`.

An item's cost is the estimate (`estimate.Estimate.cost_per_item_micro_usd`) until
items finish; then the mean this run actually paid per finished item, if higher
(retries, longer answers). Items in flight are counted at that full price, even
when part of them is paid already: a budget may stop a little early, never late.

Money is integer micro-USD, as in `costs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .costs import format_usd
from .errors import UsageError


@dataclass(frozen=True)
class Budget:
    """A spending limit for the database, checked before each item is claimed."""

    limit_micro_usd: int
    spent_micro_usd_at_start: int
    estimate_per_item_micro_usd: int

    def per_item_micro_usd(self, spent_so_far: int = 0, items_finished: int = 0) -> int:
        """What one more item is expected to cost: the estimate, or the mean paid if higher."""
        observed = -(-spent_so_far // items_finished) if items_finished > 0 else 0
        return max(self.estimate_per_item_micro_usd, observed)

    def projected_micro_usd(
        self, spent_so_far: int, *, in_flight: int = 0, items_finished: int = 0
    ) -> int:
        """Total spend if the items in flight and one more all finish."""
        per_item = self.per_item_micro_usd(spent_so_far, items_finished)
        return self.spent_micro_usd_at_start + spent_so_far + (in_flight + 1) * per_item

    def allows_next_item(
        self, spent_so_far: int, *, in_flight: int = 0, items_finished: int = 0
    ) -> bool:
        """True when claiming one more item keeps the projected total within the limit.

        `spent_so_far` is this run's recorded spend (micro-USD), `in_flight` the items
        claimed and not finished, `items_finished` those done or failed in this run.
        """
        projected = self.projected_micro_usd(
            spent_so_far, in_flight=in_flight, items_finished=items_finished
        )
        return projected <= self.limit_micro_usd

    def refusal(self, spent_so_far: int, *, in_flight: int, items_finished: int) -> str | None:
        """None while one more item fits; else why not (`message`). What every run checks
        before it claims: the local runner, the fleet's coordinator, a batch submission."""
        if self.allows_next_item(spent_so_far, in_flight=in_flight, items_finished=items_finished):
            return None
        return self.message(spent_so_far, in_flight=in_flight, items_finished=items_finished)

    def spent_micro_usd(self, spent_so_far: int = 0) -> int:
        return self.spent_micro_usd_at_start + spent_so_far

    def message(self, spent_so_far: int = 0, *, in_flight: int = 0, items_finished: int = 0) -> str:
        """Why the run stopped and the way out, in one line.

        Give the same counts as to `allows_next_item`: the projection is said too,
        since a run usually stops before the spend itself reaches the limit.
        """
        spent = self.spent_micro_usd(spent_so_far)
        projected = self.projected_micro_usd(
            spent_so_far, in_flight=in_flight, items_finished=items_finished
        )
        return (
            f"budget of {format_usd(self.limit_micro_usd)} reached ({format_usd(spent)} spent; "
            f"one more item would bring it to about {format_usd(projected)}); "
            "raise --max-cost to go on"
        )


def usd_to_micros(usd: float | str | Decimal) -> int:
    """A dollar amount from the command line as integer micro-USD (exact: via its decimal text)."""
    try:
        amount = Decimal(str(usd))
    except InvalidOperation:
        raise UsageError(f"--max-cost {usd!r} is not an amount in USD, e.g. 2.50") from None
    if not amount.is_finite() or amount < 0:
        raise UsageError(f"--max-cost must be a positive amount in USD, not {usd}")
    return int((amount * 1_000_000).to_integral_value())
