"""The model price table and the cost of one call from its token usage.

Prices are USD per 1M tokens. Costs are kept as integer micro-dollars
(millionths of a USD) so sums in SQL are exact: at $p per 1M tokens, one token
costs exactly p micro-dollars.

Override or extend the table with a JSON file (`--prices` or DEALSCOUT_PRICES):
    {"gemini-3.6-flash": {"input": 1.5, "output": 7.5}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from dealscout_cli.errors import UsageError
from dealscout_cli.tokens import rule_for

if TYPE_CHECKING:
    from dealscout_cli.providers.base import ModelRequest

# List prices (standard tier, prompts <= 200k tokens), checked on PRICES_CHECKED against
# PRICES_SOURCE. Google changes them: past PRICES_STALE_AFTER, estimate and snap say so.
PRICES_CHECKED = date(2026, 11, 29)
PRICES_SOURCE = "https://ai.google.dev/gemini-api/docs/pricing"
PRICES_STALE_AFTER = timedelta(days=90)


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: Decimal
    output_per_million: Decimal


PRICE_TABLE: dict[str, ModelPrice] = {
    "gemini-3.6-flash": ModelPrice(Decimal("1.50"), Decimal("7.50")),
    "gemini-3.5-flash-lite": ModelPrice(Decimal("0.30"), Decimal("2.50")),
    "gemini-3.1-flash-lite": ModelPrice(Decimal("0.25"), Decimal("1.50")),
    "gemini-3-flash-preview": ModelPrice(Decimal("0.50"), Decimal("3.00")),
    "gemini-2.5-flash": ModelPrice(Decimal("0.30"), Decimal("2.50")),
    "gemini-2.5-flash-lite": ModelPrice(Decimal("0.10"), Decimal("0.40")),
}

BATCH_DISCOUNT = Decimal("0.5")  # Gemini Batch Mode bills half the standard price

# Grounding with Google Search (`--grounded-prices`) is billed on top of the tokens, after a
# free allowance we cannot see from here (so it is always charged: recorded costs err high).
# Gemini 3 bills each distinct non-empty search query the model ran ($14 / 1,000); Gemini 2.x
# bills each grounded prompt once ($35 / 1,000). Checked on GROUNDING_CHECKED against
# ai.google.dev/gemini-api/docs/pricing. Not discounted in Batch Mode.
GROUNDING_CHECKED = "2026-11-29"
GROUNDING_FEES: dict[str, tuple[Decimal, str]] = {  # family prefix: (USD per 1,000, unit)
    "gemini-3": (Decimal("14"), "query"),
    "gemini-2": (Decimal("35"), "prompt"),
}
DEFAULT_GROUNDING_FEE = (Decimal("35"), "prompt")  # an unknown family: the dearer rule


def price_rows(prices: dict[str, ModelPrice], *models: str) -> dict[str, list[str]]:
    """The prices of `models` as JSON (exact decimal text), for a Celery task's payload."""
    return {
        model: [str(price.input_per_million), str(price.output_per_million)]
        for model in models
        if (price := price_of(prices, model)) is not None
    }


def prices_from(rows: dict[str, list[str]]) -> dict[str, ModelPrice]:
    """`price_rows` read back on a worker."""
    return {model: ModelPrice(Decimal(i), Decimal(o)) for model, (i, o) in rows.items()}


def load_prices(override_file: Path | None = None) -> dict[str, ModelPrice]:
    """The built-in table, with a user's JSON file laid over it."""
    table = dict(PRICE_TABLE)
    if override_file is None:
        return table
    try:
        raw = json.loads(Path(override_file).read_text(encoding="utf-8"))
        for model, price in raw.items():
            table[model] = ModelPrice(
                _price(override_file, model, price, "input"),
                _price(override_file, model, price, "output"),
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"price file {override_file}: {exc}; expected "
            '{"model-name": {"input": USD_per_1M, "output": USD_per_1M}}'
        ) from None
    return table


def _price(source: Path, model: str, price: dict[str, object], which: str) -> Decimal:
    """One price from a user's file: a finite amount of USD, not below zero."""
    value = price[which]
    try:
        amount = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise UsageError(
            f"price file {source}: {model} {which} is {json.dumps(value)}, not a price; "
            "give USD per 1M tokens as a number, e.g. 1.5"
        )
    return amount


# A pinned version of a model ("gemini-3.6-flash-001") is billed as the model itself.
_VERSION_SUFFIX = re.compile(r"-\d{3}$")


def _base_model(model: str) -> str:
    """The price-table name of `model`: `models/` and a numbered version suffix dropped.
    An alias such as `gemini-flash-latest` is left as it is: it moves to whatever model Google
    names next, so it has no price until the price file gives it one."""
    name = model.strip().removeprefix("models/")
    return _VERSION_SUFFIX.sub("", name)


def price_of(prices: dict[str, ModelPrice], model: str) -> ModelPrice | None:
    """`model`'s price: by its exact name (a price file may price a version), else as its
    family (`_base_model`); None when neither is known, never a silent zero."""
    exact = prices.get(model.strip().removeprefix("models/"))
    return exact if exact is not None else prices.get(_base_model(model))


def unpriced(prices: dict[str, ModelPrice], *models: str) -> list[str]:
    """Those of `models` with no price, in order, once each."""
    return [m for m in dict.fromkeys(models) if price_of(prices, m) is None]


def stale_prices_note(today: date | None = None, checked: date | None = None) -> str | None:
    """A one-line warning when the built-in price table was checked over 90 days before
    `today`; None while it is fresh."""
    today = today or date.today()
    checked = checked or PRICES_CHECKED
    if today - checked <= PRICES_STALE_AFTER:
        return None
    return (
        f"the built-in prices were checked on {checked.isoformat()} ({(today - checked).days} "
        f"days ago); check {PRICES_SOURCE} and pass --prices FILE if they changed"
    )


def call_cost_micros(
    prices: dict[str, ModelPrice],
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    *,
    batch: bool = False,
) -> int | None:
    """Cost of one call in micro-USD, or None when the model is not in the table."""
    price = price_of(prices, model)
    if price is None:
        return None
    cost = (
        Decimal(input_tokens or 0) * price.input_per_million
        + Decimal(output_tokens or 0) * price.output_per_million
    )
    if batch:
        cost *= BATCH_DISCOUNT
    return int(cost.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def grounding_fee_micros(model: str, search_queries: int) -> int:
    """The Google Search grounding fee of one grounded request, in micro-USD."""
    name = _base_model(model)
    per_thousand, unit = next(
        (fee for prefix, fee in GROUNDING_FEES.items() if name.startswith(prefix)),
        DEFAULT_GROUNDING_FEE,
    )
    count = search_queries if unit == "query" else 1
    return int((per_thousand * 1000 * count).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_usd(micros: int | None) -> str:
    """Human money: $0.0123 for small sums, $12.35 for large ones."""
    if micros is None:
        return "unknown"
    usd = Decimal(micros) / Decimal(1_000_000)
    if usd < 1:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


# ---------------------------------------------------------------- token estimates


def estimate_request_tokens(request: ModelRequest) -> int:
    """Input tokens a ModelRequest will cost, before sending it (corrected later from usage).

    Counted by the model family's rule in `tokens` at the request's media resolution; an
    image of unknown size counts as one full tile (Gemini 2.x) or its budget (Gemini 3).
    """
    rule = rule_for(request.model)
    resolution = request.media_resolution
    images = sum(
        rule.image_tokens(i.width, i.height, resolution)
        if i.width and i.height
        else rule.unsized_image_tokens(resolution)
        for i in request.images
    )
    return images + rule.text_tokens(request.system) + rule.text_tokens(request.prompt)
